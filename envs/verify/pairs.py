"""A deterministic test set for answer checkers, built from the bundled GSM8K and MATH-500 answers.

Each reference answer yields rewrites a grader should accept (the same value written another common
way: thousands separators, ``\\dfrac``, ``a/b``, decimals, units and currency, degrees, ``x =``,
spacing, ``\\left(``, reordered solution lists, matrix brackets, full sentences with a box...) and
wrong answers it must reject (a changed number, a flipped sign, a swapped interval bracket, a missing
list element, another multiple-choice letter...). Rewrites are chosen by rules, not randomness, so the
set is identical on every machine; ``benchmarks/verify.py`` prints the figures, tests assert them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class Pair:
    reference: str
    response: str
    equivalent: bool
    rule: str
    source: str


_INT = re.compile(r"^-?\d+$")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")
_UNITS = ("dollars", "apples", "minutes", "\\text{ dollars}", "\\text{ km}", "people", "\\mbox{ dollars}", "\\text{ square feet}")


def _thousands(n: int) -> str:
    return f"{n:,}"


def _terminating(fr: Fraction) -> str | None:
    d = fr.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return None
    text = f"{float(fr):.10f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == fr else None


def _wrap(i: int, answer: str) -> str:
    """Put a bare answer in a response; cycle through common shapes."""
    shapes = (
        "{a}",
        "\\boxed{{{a}}}",
        "So the final answer is $\\boxed{{{a}}}$.",
        "We compute step by step and get \\boxed{{{a}}}",
    )
    return shapes[i % len(shapes)].format(a=answer)


def gsm8k_pairs(rows: list[dict]) -> list[Pair]:
    pairs = []
    for i, row in enumerate(rows):
        ref = row["answer"]
        n = int(ref)
        eq = [
            ("thousands" if abs(n) >= 1000 else "plain", _thousands(n)),
            ("decimal_zero", f"{n}.0" if i % 2 else f"{n}.00"),
            ("currency", f"\\${n}" if i % 2 else f"${n}"),
            ("units", f"{n} {_UNITS[i % len(_UNITS)]}"),
            ("text", f"\\text{{{n}}}"),
            ("sentence", f"The answer is {n}."),
        ]
        if i % 3 == 0:
            eq = eq[:3]
        elif i % 3 == 1:
            eq = eq[3:]
        for k, (rule, text) in enumerate(eq):
            wrapped = text if rule == "sentence" else _wrap(i + k, text)
            pairs.append(Pair(ref, wrapped, True, rule, "gsm8k"))
        wrong = [("plus_one", str(n + 1)), ("times_ten", _thousands(n * 10)), ("half", f"{n}.5")]
        if n != 0:
            wrong.append(("negated", str(-n)))
        for k, (rule, text) in enumerate(wrong[i % 2 :: 2]):
            pairs.append(Pair(ref, _wrap(i + k, text), False, rule, "gsm8k"))
    return pairs


def _math_equivalents(i: int, ref: str, problem: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = [("boxed_sentence", ref)]
    if _INT.match(ref):
        n = int(ref)
        if abs(n) >= 1000:
            out.append(("thousands", _thousands(n)))
        out.append(("decimal_zero", f"{n}.0"))
        if "degree" in problem or "^\\circ" in problem:
            out.append(("degrees", f"{n}^\\circ"))
        if re.search(r"\$x\$", problem) and "x" not in ref:
            out.append(("x_equals", f"x = {n}"))
    m = _FRAC.match(ref)
    if m:
        sign, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        out.append(("slash", f"{sign}{a}/{b}"))
        out.append(("dfrac", f"{sign}\\dfrac{{{a}}}{{{b}}}" if "dfrac" not in ref else f"{sign}\\frac{{{a}}}{{{b}}}"))
        dec = _terminating(Fraction(a, b))
        if dec is not None:
            out.append(("decimal", f"{sign}{dec}"))
    elif "\\frac" in ref:
        out.append(("dfrac", ref.replace("\\frac", "\\dfrac")))
    elif "\\dfrac" in ref:
        out.append(("tfrac", ref.replace("\\dfrac", "\\frac")))
    if "^\\circ" in ref:
        out.append(("no_degrees", ref.replace("^\\circ", "").strip()))
    if ref.startswith("\\text{") and ref.endswith("}") and ref.count("{") == 1:
        out.append(("untext", ref[6:-1]))
    if "pmatrix" in ref:
        out.append(("bmatrix", ref.replace("pmatrix", "bmatrix")))
        out += _matrix_forms(ref)
    out += _unit_forms(ref)
    if re.fullmatch(r"-?\d+\^\\circ", ref):
        n = ref[: -len("^\\circ")]
        out.append(("degrees_text", f"{n} \\text{{ degrees}}"))
        out.append(("degrees_mbox", f"{n}\\mbox{{ degrees}}"))
    m = re.fullmatch(r"([a-z])\s*\\in\s*(.+)", ref)
    if m:
        out.append(("interval_membership", m.group(2).replace(",", ", ")))
    elif ref[:1] in "([" and ref[-1:] in ")]" and "," in ref and ("\\infty" in ref or "\\cup" in ref):
        out.append(("interval_membership", f"x \\in {ref}"))
    if ref.startswith("\\left(") or ref.startswith("\\left["):
        out.append(("no_left_right", ref.replace("\\left", "").replace("\\right", "")))
    elif ref.startswith("(") and ref.endswith(")") and "\\" not in ref and ref.count("(") == 1:
        out.append(("left_right", "\\left" + ref[:-1] + "\\right)"))
    if re.fullmatch(r"-?\d+(,\s*-?\d+)+", ref) and not re.fullmatch(r"-?\d{1,3}(,\d{3})+", ref):
        items = [s.strip() for s in ref.split(",")]
        out.append(("reordered", ", ".join(reversed(items))))
    if " " in ref and "\\" not in ref and "text" not in ref:
        out.append(("no_spaces", ref.replace(" ", "")))
    if re.search(r"\d\\sqrt", ref) is None and re.fullmatch(r"\\sqrt\{(\d+)\}", ref):
        out.append(("sqrt_nobrace", "\\sqrt" + ref[6:-1] if len(ref[6:-1]) == 1 else ref.replace("\\sqrt", "\\sqrt ")))
    m = re.fullmatch(r"(\d+)\\sqrt\{(\d+)\}", ref)
    if m:
        out.append(("sqrt_merge", f"\\sqrt{{{int(m.group(1)) ** 2 * int(m.group(2))}}}"))
    m = re.fullmatch(r"(-?[^+\-{}()\\]+)\s*([+-])\s*([^+\-{}()\\]+)", ref)
    if m and "=" not in ref and "," not in ref:
        a, op, b = m.group(1).strip(), m.group(2), m.group(3).strip()
        first, second = a, ("-" if op == "-" else "") + b
        tail = f" - {first[1:]}" if first.startswith("-") else f" + {first}"
        out.append(("commuted", second + tail))
    return out


def _matrix_forms(ref: str) -> list[tuple[str, str]]:
    """Matrix entries as ``\\frac{a}{b}`` instead of ``a/b`` (and back), and other spacing."""
    out = []
    fracs = re.sub(r"(-?)(\d+)/(\d+)", r"\1\\frac{\2}{\3}", ref)
    if fracs != ref:
        out.append(("matrix_frac", fracs))
    out.append(("matrix_compact", re.sub(r"\s+", "", ref)))
    out.append(("matrix_spaced", ref.replace("&", " & ").replace("\\\\", " \\\\[2pt] ").replace("  ", " ")))
    return out


_UNIT_SPELLINGS = {
    "inches": ("\\text{ square inches}", "\\text{ in}^2", "\\mbox{inches}^{2}"),
    "cm": ("\\text{ square centimeters}", "\\text{ cm}^2", "\\ \\mathrm{cm}^2"),
    "cents": ("\\mbox{ cents}", "\\text{cents}"),
    "degrees": ("^\\circ", "\\mbox{ degrees}"),
}


def _unit_forms(ref: str) -> list[tuple[str, str]]:
    """Unit text in its other LaTeX spellings (``\\mbox``, ``\\text{ square ...}``, squared units), or none."""
    m = re.fullmatch(r"(.+?)\s*\\(?:mbox|text)\{\s*(\w+)\}(\^2)?", ref)
    if not m or m.group(2) not in _UNIT_SPELLINGS:
        return []
    value = m.group(1).strip()
    out = [("unit_dropped", value)]
    out += [("unit_spelling", f"{value}{spelling}") for spelling in _UNIT_SPELLINGS[m.group(2)]]
    return out


def _bump_number(ref: str, by: int = 1) -> str | None:
    """Add ``by`` to the last integer in the answer (carry-free so 19 -> 20 still differs)."""
    matches = list(re.finditer(r"\d+", ref))
    if not matches:
        return None
    m = matches[-1]
    return ref[: m.start()] + str(int(m.group(0)) + by) + ref[m.end() :]


def _math_wrong(ref: str) -> list[tuple[str, str]]:
    out = []
    bumped = _bump_number(ref)
    if bumped is not None:
        out.append(("bump_number", bumped))
    if ref and (ref[0] in "([") and ref[-1] in ")]" and "," in ref:
        # Flip a bracket next to a finite endpoint ("[-\infty" is only sloppy notation, not a new set).
        m = re.search(r"[(\[](?=-?\d)|(?<=\d)[)\]]", ref)
        if m:
            flip = {"(": "[", "[": "(", ")": "]", "]": ")"}[m.group(0)]
            out.append(("swap_bracket", ref[: m.start()] + flip + ref[m.end() :]))
    if re.fullmatch(r"-?\d+(,\s*-?\d+)+", ref):
        out.append(("drop_item", ",".join(ref.split(",")[:-1])))
    m = re.fullmatch(r"\\text\{\(([A-E])\)\}|\(([A-E])\)|([A-E])", ref)
    if m:
        letter = next(g for g in m.groups() if g)
        other = "B" if letter == "A" else "A"
        out.append(("other_choice", ref.replace(letter, other)))
    if _INT.match(ref) and int(ref) != 0:
        out.append(("negated", str(-int(ref))))
    if "pmatrix" in ref:
        entry = re.search(r"(-?)(\d+)/(\d+)", ref)
        if entry:
            flipped = "" if entry.group(1) else "-"
            out.append(("matrix_frac_sign", ref[: entry.start()] + f"{flipped}\\frac{{{entry.group(2)}}}{{{entry.group(3)}}}" + ref[entry.end() :]))
    m = re.fullmatch(r"([a-z])\s*\\in\s*(.+)", ref)
    if m:
        out.append(("interval_membership_bracket", m.group(2).replace("[", "(", 1)))
    if re.fullmatch(r"(.+?)\s*\\(?:mbox|text)\{\s*(\w+)\}(\^2)?", ref) and _unit_forms(ref):
        bumped = _bump_number(_unit_forms(ref)[1][1])
        if bumped:
            out.append(("unit_number", bumped))
    if not out:
        out.append(("other_text", ref + "x"))
    return out


def math_pairs(rows: list[dict]) -> list[Pair]:
    pairs = []
    for i, row in enumerate(rows):
        ref = row["answer"]
        for k, (rule, text) in enumerate(_math_equivalents(i, ref, row["problem"])):
            pairs.append(Pair(ref, _wrap(i + k + 1, text), True, rule, "math500"))
        for k, (rule, text) in enumerate(_math_wrong(ref)):
            pairs.append(Pair(ref, _wrap(i + k, text), False, rule, "math500"))
    return pairs


def _read(name: str) -> list[dict]:
    with (DATA_DIR / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_pairs(*, gsm8k: bool = True, math: bool = True, every: int = 1) -> list[Pair]:
    """The full set (``every=k`` keeps every k-th source problem, for a quicker subset)."""
    pairs: list[Pair] = []
    if gsm8k:
        pairs += gsm8k_pairs(_read("gsm8k_test.jsonl")[::every])
    if math:
        pairs += math_pairs(_read("math500.jsonl")[::every])
    return pairs
