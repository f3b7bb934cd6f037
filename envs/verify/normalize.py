"""String normalisation of answers before comparison. Pure string work: no parsing, no eval.

It maps the common ways of writing one value to one spelling, and fixes forms math-verify misreads
(found with ``envs.verify.pairs``): thousands separators (``1,234`` reads as a tuple), currency and unit
words (``18 dollars``), ``\\text{...}`` wrappers, ``x = 5`` for a bare value, degree signs, ``\\left``/
``\\right``, ``\\dfrac``, spacing commands, a trailing period.
"""

from __future__ import annotations

import re
from fractions import Fraction

_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Spacing commands, but not the line break "\\\\" followed by a space (matrix rows); a row break's
# optional spacing argument ("\\\\[2pt]") goes too.
_SPACING = re.compile(r"(?<!\\)\\[!,;:> ]|\\quad|\\qquad|\\displaystyle|~")
_ROW_SPACING = re.compile(r"\\\\\s*\[[^\]]*\]")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°|\\degree")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)$")
_UNIT_TAIL = re.compile(
    r"^([-+]?(?:\d+\.?\d*|\.\d+|\d{1,3}(?:,\d{3})+(?:\.\d+)?))\s*([a-zA-Z][a-zA-Z .²³/]*)" + r"(?:\^\s*\{?\s*[23]\s*\}?)?$"
)
# A unit in a text command after a value, in any of its LaTeX spellings: "864 \mbox{ inches}^2",
# "15\text{ square centimeters}", "\frac{270}7\text{ degrees}", "5.4 \text{cents}".
_UNIT_TEXT_TAIL = re.compile(
    r"^(.*?[\d}.)])\s*\\(?:text|mbox|mathrm|textrm|textnormal|textup)\s*\{([^{}]*)\}"
    r"\s*(?:\^\s*\{?\s*[23]\s*\}?|[²³])?\s*$"
)
# "x = 5" for a bare value, "x \in [a, b]" for a bare set.
_LHS = re.compile(r"^\\?[a-zA-Z](?:_\{?\w+\}?)?\s*(?:=|\\in(?![a-zA-Z]))\s*(?!.*=)")
_SPACE = re.compile(r"(?<![a-zA-Z])\s+|\s+(?![a-zA-Z])")
# "\frac34", "\frac{270}7", "\frac3{4}": one-digit arguments without braces.
_FRAC_SHORT = re.compile(r"\\frac\s*(\d|\{[^{}]*\})\s*(\d|\{[^{}]*\})")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])(?![\w{])")


_SHORT_UNITS = {"m", "cm", "mm", "km", "g", "kg", "mg", "l", "ml", "s", "h", "ft", "in", "yd", "mi", "lb", "oz"}


def _is_unit_words(tail: str) -> bool:
    """Unit or currency words after a number ("dollars", "km", "square feet"), not a product like
    ``5 x`` or ``5 ab``: known short units, or words of three or more letters."""
    words = tail.replace(".", " ").split()
    return bool(words) and all(w.lower() in _SHORT_UNITS or len(w) >= 3 for w in words)


def _strip_wrappers(s: str) -> str:
    changed = True
    while changed:
        changed = False
        s = s.strip()
        for left, right in _WRAPPERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)]
                changed = True
    return s


def unit_power(answer: str) -> int | None:
    """The power of a unit written in text after the value (1, 2 for square, 3 for cubic), or None
    without one. Units are stripped for comparison; this keeps "in^3" from equalling "in^2"."""
    s = _SPACING.sub(" ", _strip_wrappers(answer))
    m = _UNIT_TEXT_TAIL.match(s)
    if not m or not _is_unit_words(m.group(2)):
        return None
    words, tail = m.group(2).lower().split(), s[m.end(2) :]
    if "cubic" in words or re.search(r"[3³]", tail):
        return 3
    if "square" in words or re.search(r"[2²]", tail):
        return 2
    return 1


def normalize(answer: str) -> tuple[str, bool]:
    """(normal form, had a percent sign)."""
    s = _strip_wrappers(answer)
    s = s.replace("bmatrix", "pmatrix")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\{", "{").replace("\\}", "}") if s.startswith("\\{") else s
    s = _SPACING.sub(" ", s)
    s = _ROW_SPACING.sub(r"\\\\", s)
    unit = _UNIT_TEXT_TAIL.match(s)
    if unit and _is_unit_words(unit.group(2)):
        s = unit.group(1)
    s = _DEGREES.sub("", s)
    percent = "%" in s
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "")
    # \text{...} / \mathrm{...}: unwrap; pure unit words after a number go below.
    s = _TEXT_CMD.sub(lambda m: m.group(1), s).strip()
    s = s.rstrip(".").strip() if not _NUMBER.match(s) else s
    m = _UNIT_TAIL.match(s)
    if m and _is_unit_words(m.group(2)):
        # "18 dollars", "5.4 cents", "12 km": the number is the answer (a single letter is a variable).
        s = m.group(1)
    if _LHS.match(s):
        s = _LHS.sub("", s, count=1)
    s = _FRAC_SHORT.sub(lambda m: f"\\frac{{{m.group(1).strip('{}')}}}{{{m.group(2).strip('{}')}}}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _SPACE.sub("", s)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if s.startswith("+") and _NUMBER.match(s):
        s = s[1:]
    return s, percent


_FRAC_NUM = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH_NUM = re.compile(r"^(-?\d+)/(\d+)$")


def as_rational(s: str) -> Fraction | None:
    """The exact value of a plain number (int, decimal, a/b, \\frac{a}{b}), else None. No eval."""
    if len(s) > 200:
        return None
    try:
        if _NUMBER.match(s):
            return Fraction(s)
        m = _SLASH_NUM.match(s)
        if m:
            return Fraction(int(m.group(1)), int(m.group(2))) if int(m.group(2)) else None
        m = _FRAC_NUM.match(s)
        if m and int(m.group(3)):
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


_MATRIX = re.compile(r"^\\begin\{pmatrix\}(.*)\\end\{pmatrix\}$", re.S)


def as_matrix(s: str) -> list[list[str]] | None:
    """Entries of a normalised ``pmatrix`` (rows split at ``\\\\``, entries at ``&``), else None."""
    m = _MATRIX.match(s)
    if not m or "\\begin" in m.group(1):
        return None
    rows = m.group(1).split("\\\\")
    if rows and not rows[-1].strip():
        rows = rows[:-1]  # a trailing row break
    matrix = [row.split("&") for row in rows]
    if not matrix or any(not entry.strip() for row in matrix for entry in row):
        return None
    return matrix


_BASE_N = re.compile(r"^(\w+)_\{?(\d+)\}?$")


def as_base_n(s: str) -> tuple[str, int] | None:
    """``52_8`` / ``4210_{5}``: digits in a base (math-verify drops the subscript, so 52_8 == 52_9)."""
    m = _BASE_N.match(s)
    return (m.group(1).upper(), int(m.group(2))) if m else None


_CHOICE = re.compile(r"^\(?([A-Ea-e])\)?$")


def as_text(s: str) -> str | None:
    """A multiple-choice letter or a plain word answer (``Monday``, ``even``), lower-cased; else None."""
    m = _CHOICE.match(s)
    if m:
        return m.group(1).upper()
    if re.fullmatch(r"[A-Za-z][A-Za-z ]{2,}", s) and not re.search(r"\\", s):
        return s.lower().strip()
    return None
