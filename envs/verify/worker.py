"""What runs inside verifier worker processes (see pool.py). Never import this in the trainer's process
for checking: these functions hand model text to sympy, whose string parsing calls ``eval``."""

from __future__ import annotations

from typing import Any


def warm_up() -> None:
    import logging

    # math-verify warns on every call that its (signal based) timeouts are off: the pool enforces them.
    logging.disable(logging.WARNING)
    import sympy  # noqa: F401

    try:
        import math_verify  # noqa: F401
    except ImportError:
        pass


def _mv_parse_latex(text: str) -> list[Any]:
    from math_verify import LatexExtractionConfig, parse

    # Latex extraction only: math-verify's ExprExtractionConfig runs sympy.parse_expr (eval) on the text.
    return parse(f"${text}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)


def math_verify_equal(reference: str, answer: str) -> bool | None:
    """Both normalised answers through math-verify; None when either side does not parse."""
    try:
        from math_verify import verify
    except ImportError:
        return None
    gold, pred = _mv_parse_latex(reference), _mv_parse_latex(answer)
    if not gold or not pred:
        return None
    return bool(verify(gold, pred, timeout_seconds=None))


def math_verify_plain(reference: str, response: str) -> bool:
    """math-verify used the ordinary way (the baseline in benchmarks/verify.py): default extraction on
    the whole response, reference as ``$...$``."""
    from math_verify import parse, verify

    gold = parse(f"${reference}$", parsing_timeout=None)
    pred = parse(response, parsing_timeout=None)
    return bool(verify(gold, pred, timeout_seconds=None))


def sympy_equal(reference: str, answer: str) -> bool | None:
    """Fallback without math-verify: the safe-grammar parser, then sympy comparison."""
    from .safe_parse import ParseError, parse_math

    try:
        a, b = parse_math(reference), parse_math(answer)
    except ParseError:
        return None
    import sympy

    try:
        if isinstance(a, tuple) or isinstance(b, tuple):
            if not (isinstance(a, tuple) and isinstance(b, tuple)) or len(a) != len(b):
                return False
            return all(sympy.simplify(x - y) == 0 for x, y in zip(a, b, strict=True))
        return bool(sympy.simplify(a - b) == 0)
    except (TypeError, ValueError, AttributeError):
        return False


FUNCTIONS = {
    "math_verify_equal": math_verify_equal,
    "math_verify_plain": math_verify_plain,
    "sympy_equal": sympy_equal,
}
