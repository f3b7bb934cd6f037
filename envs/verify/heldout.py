"""A held-out test set for the answer checker: answer forms the checker was not tuned on.

``pairs.py`` is the tuning set: the checker's rules were written while looking at its misses. This set
was written before the checker's last round of changes, from other rewrite rules (scientific notation,
``\\cdot`` products, unreduced and improper fractions, ``{,}`` separators, ``\\pm`` expanded, reordered
polynomial terms, braced exponents, ...) and other wrong answers (reciprocals, swapped coordinates,
rounded decimals, a dropped ``\\pi``, a changed exponent...), over the same bundled GSM8K and MATH-500
references. Its misses are reported, never used to change the checker: ``benchmarks/verify.py`` prints
both sets separately.
"""

from __future__ import annotations

import re
from fractions import Fraction

from .pairs import Pair, _bump_number, _read

_INT = re.compile(r"^-?\d+$")
_PLAIN_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")
_GENERAL_FRAC = re.compile(r"^(-?)\\[dt]?frac\{([^{}]+|[^{}]*\{[^{}]*\}[^{}]*)\}\{([^{}]+)\}$")
_COEF_SYMBOL = re.compile(r"(?<![\w.^_{\\])(\d+)\s*(\\sqrt|\\pi|[a-z](?![a-z]))")
_MIXED = re.compile(r"^(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}$")
_POINT = re.compile(r"^\(([^(),]+),([^(),]+)\)$")


def _shape(i: int, answer: str) -> str:
    """A response around the answer, in shapes other than the tuning set's."""
    shapes = (
        "Therefore, the answer is $\\boxed{{{a}}}$.",
        "**Final answer:** $\\boxed{{{a}}}$",
        "Putting it together:\n\\[\n\\boxed{{{a}}}\n\\]",
        "The result is \\boxed{{ {a} }}.",
        "$\\boxed{{{a}}}$",
    )
    return shapes[i % len(shapes)].format(a=answer)


def _sci(n: int) -> str | None:
    """``32348`` -> ``3.2348 \\times 10^{4}`` (exact, trailing zeros dropped)."""
    digits = str(abs(n))
    if abs(n) < 10_000:
        return None
    mantissa = (digits[0] + "." + digits[1:]).rstrip("0").rstrip(".")
    return f"{'-' if n < 0 else ''}{mantissa} \\times 10^{{{len(digits) - 1}}}"


def gsm8k_heldout(rows: list[dict]) -> list[Pair]:
    pairs = []
    for i, row in enumerate(rows):
        ref = row["answer"]
        n = int(ref)
        eq: list[tuple[str, str]] = [
            ("braced_comma", f"{n:,}".replace(",", "{,}")),
            ("mathbf", f"\\mathbf{{{n}}}"),
            ("cents", f"\\${n}.00"),
            ("text_units_inside", f"\\text{{{n} items}}"),
            ("computation_equals", f"{n - 1} + 1 = {n}"),
        ]
        sci = _sci(n)
        if sci is not None:
            eq.append(("scientific", sci))
        for k, (rule, text) in enumerate(eq[i % 2 :: 2] if len(eq) > 4 else eq):
            pairs.append(Pair(ref, _shape(i + k, text), True, rule, "gsm8k-heldout"))
        wrong: list[tuple[str, str]] = [("double", str(2 * n) if n else "1"), ("minus_one", f"{n - 1:,}".replace(",", "{,}"))]
        last_two = str(abs(n))[-2:]
        if len(last_two) == 2 and last_two[0] != last_two[1]:
            wrong.append(("digit_swap", str(n)[:-2] + last_two[::-1]))
        if sci is not None:
            wrong.append(("scientific_wrong", _sci(n * 10) or ""))
        wrong.append(("units_wrong", f"{n + 10} dollars"))
        for k, (rule, text) in enumerate(wrong[i % 2 :: 2]):
            pairs.append(Pair(ref, _shape(i + k + 1, text), False, rule, "gsm8k-heldout"))
    return pairs


def _equivalents(ref: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    m = _PLAIN_FRAC.match(ref)
    if m:
        sign, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        out.append(("unreduced", f"{sign}\\frac{{{2 * a}}}{{{2 * b}}}"))
        if sign:
            out.append(("frac_neg_inside", f"\\frac{{-{a}}}{{{b}}}"))
        if a > b:
            whole, rest = divmod(a, b)
            if rest:
                out.append(("mixed_number", f"{sign}{whole}\\frac{{{rest}}}{{{b}}}"))
    else:
        g = _GENERAL_FRAC.match(ref)
        if g and not (g.group(2).isdigit() and g.group(3).isdigit()):
            out.append(("slash_general", f"{g.group(1)}({g.group(2)})/({g.group(3)})"))
    m = _MIXED.match(ref)
    if m:
        whole, a, b = int(m.group(1)), int(m.group(2)), int(m.group(3))
        value = whole + Fraction(a, b)
        out.append(("improper", f"\\frac{{{value.numerator}}}{{{value.denominator}}}"))
    if ref.startswith(".") and re.fullmatch(r"\.\d+", ref):
        out.append(("leading_zero", "0" + ref))
    if _INT.match(ref) and _sci(int(ref)) is not None:
        out.append(("scientific", _sci(int(ref)) or ""))
    if _COEF_SYMBOL.search(ref) and "=" not in ref and "_" not in ref and "\\frac" not in ref:
        out.append(("cdot", _COEF_SYMBOL.sub(r"\1 \\cdot \2", ref)))
    m = re.fullmatch(r"(\d+)\s*\\(sqrt\{\d+\}|pi)", ref)
    if m:
        out.append(("product_commuted", f"\\{m.group(2)} \\cdot {m.group(1)}"))
    if re.search(r"\^\d", ref) and "\\circ" not in ref:
        out.append(("braced_exponent", re.sub(r"\^(\d)", r"^{\1}", ref)))
    if ref.endswith("^\\circ"):
        out.append(("degrees_braced", ref[: -len("^\\circ")] + "^{\\circ}"))
    if re.fullmatch(r"\\text\{[A-Za-z]{3,}\}", ref):
        word = ref[6:-1]
        out.append(("text_style", f"\\textbf{{{word.capitalize()}}}"))
    m = re.fullmatch(r"\\text\{\(([A-E])\)\}", ref)
    if m:
        out.append(("choice_bare", m.group(1)))
        out.append(("choice_bold", f"\\textbf{{({m.group(1)})}}"))
    if re.fullmatch(r"-?\d+(,\s*-?\d+)+", ref) and not re.fullmatch(r"\d{1,3}(,\d{3})+", ref):
        out.append(("set_braces", "\\{" + ", ".join(s.strip() for s in ref.split(",")) + "\\}"))
    m = re.fullmatch(r"(.+?)\s*\\pm\s*(.+)", ref)
    if m and "," not in ref and "{" not in m.group(1):
        a, b = m.group(1).strip(), m.group(2).strip()
        out.append(("pm_expanded", f"{a} + {b}, {a} - {b}"))
    if ref.endswith("\\infty)") and "-\\infty" not in ref and "\\cup" not in ref:
        out.append(("plus_infinity", ref.replace("\\infty)", "+\\infty)")))
    m = _POINT.match(ref)
    if m:
        out.append(("tuple_spaced", f"( {m.group(1).strip()} , {m.group(2).strip()} )"))
    m = re.fullmatch(r"([a-z])\s*=\s*(.+)", ref)
    if m and "=" not in m.group(2):
        out.append(("equation_sides", f"{m.group(2)} = {m.group(1)}"))
    terms = re.findall(r"[+-]?\s*[^+\-\s][^+-]*", ref)
    if (
        re.fullmatch(r"[\dx^+\-\s]+", ref)
        and "x" in ref
        and len(terms) >= 3
        and not ref.startswith("-")
    ):
        signed = [t.replace(" ", "") for t in terms]
        signed = [t if t[0] in "+-" else "+" + t for t in signed]
        joined = "".join(reversed(signed))
        out.append(("poly_reordered", joined[1:] if joined.startswith("+") else joined))
    return out


def _wrongs(ref: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    m = _PLAIN_FRAC.match(ref)
    if m and m.group(2) != m.group(3):
        sign, a, b = m.group(1), m.group(2), m.group(3)
        out.append(("reciprocal", f"{sign}\\frac{{{b}}}{{{a}}}"))
        value = Fraction(int(a), int(b))
        if value.denominator % 3 == 0:
            out.append(("rounded_decimal", f"{sign}{float(value):.2f}"))
    m = _POINT.match(ref)
    if m and m.group(1).strip() != m.group(2).strip():
        out.append(("swapped_coordinates", f"({m.group(2).strip()}, {m.group(1).strip()})"))
    if "\\pi" in ref and re.search(r"\d", ref) and "\\frac" not in ref and "(" not in ref:
        out.append(("dropped_pi", ref.replace("\\pi", "").strip()))
    m = re.search(r"\^(\{?)(\d)", ref)
    if m and "\\circ" not in ref and "box" not in ref and "text" not in ref:  # units: stripped by design
        out.append(("exponent_changed", ref[: m.start(2)] + str(int(m.group(2)) + 1) + ref[m.end(2) :]))
    m = re.search(r"\\sqrt\{(\d+)\}", ref)
    if m:
        out.append(("sqrt_argument", ref[: m.start(1)] + str(int(m.group(1)) + 1) + ref[m.end(1) :]))
    if "pmatrix" in ref:
        nums = list(re.finditer(r"\d+", ref))
        first = nums[0]
        out.append(("matrix_entry", ref[: first.start()] + str(int(first.group(0)) + 3) + ref[first.end() :]))
    m = re.fullmatch(r"(.+?)\s*\\pm\s*(.+)", ref)
    if m and "," not in ref:
        out.append(("half_of_pm", f"{m.group(1).strip()} + {m.group(2).strip()}"))
    if re.fullmatch(r"\\text\{[A-Za-z]{3,}\}", ref):
        word = ref[6:-1]
        out.append(("other_word", "\\text{north}" if word.lower() != "north" else "\\text{south}"))
    m = re.search(r"(?<=[\w}])\s*([+-])\s*(?=[\w\\])", ref)
    if m and "\\pm" not in ref and "," not in ref and "=" not in ref and "\\infty" not in ref:
        flip = "-" if m.group(1) == "+" else "+"
        out.append(("flipped_operation", ref[: m.start(1)] + flip + ref[m.end(1) :]))
    if _INT.match(ref) and _sci(int(ref) + 1) is not None:
        out.append(("scientific_wrong", _sci(int(ref) + 1) or ""))
    if not out:
        bumped = _bump_number(ref, by=2)
        if bumped is not None:
            out.append(("bump_by_two", bumped))
    return out


def math_heldout(rows: list[dict]) -> list[Pair]:
    pairs = []
    for i, row in enumerate(rows):
        ref = row["answer"]
        for k, (rule, text) in enumerate(_equivalents(ref)):
            pairs.append(Pair(ref, _shape(i + k, text), True, rule, "math500-heldout"))
        for k, (rule, text) in enumerate(_wrongs(ref)):
            pairs.append(Pair(ref, _shape(i + k + 2, text), False, rule, "math500-heldout"))
    return pairs


def build_heldout(*, gsm8k: bool = True, math: bool = True, every: int = 1) -> list[Pair]:
    """The held-out set (``every=k`` keeps every k-th source problem)."""
    pairs: list[Pair] = []
    if gsm8k:
        pairs += gsm8k_heldout(_read("gsm8k_test.jsonl")[::every])
    if math:
        pairs += math_heldout(_read("math500.jsonl")[::every])
    return pairs
