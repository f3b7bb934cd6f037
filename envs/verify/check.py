"""``check(response, reference)``: is the model's final answer equivalent to the reference?

Ladder (cheap and decisive first; only the last step parses model text, and only in a worker):

1. extract the answer (last ``\\boxed{}``, "the answer is ...", or a bare answer);
2. normalise both sides (``normalize.py``: pure string work) and compare spellings;
3. matrices compare entry by entry (same shape; each entry through steps 4-6);
4. plain numbers (int, decimal, a/b, \\frac{a}{b}, percent) compare exactly as fractions, here;
5. multiple-choice letters and word answers compare case-insensitively, here;
6. anything else goes to a worker process with a hard timeout: math-verify when installed (LaTeX
   extraction only), else the safe-grammar sympy fallback.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from dataclasses import dataclass

from .extract import extract_answer, last_boxed
from .normalize import as_base_n, as_matrix, as_rational, as_text, normalize, unit_power
from .pool import VerifierPool, VerifierTimeout, WorkerCrashed, default_pool

DEFAULT_TIMEOUT = 5.0
"""Seconds for one check in the worker (math-verify's own default)."""
MAX_ANSWER_CHARS = 1000
"""Longer extracted answers are rejected without parsing (no real answer is this long)."""

# Only whether it is installed: importing it here would pull sympy into every process that imports envs.
HAVE_MATH_VERIFY = importlib.util.find_spec("math_verify") is not None


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted: str | None
    reason: str

    def __bool__(self) -> bool:
        return self.correct


_COMMAND = re.compile(r"\\(?:text|mathrm|operatorname)\{[^{}]*\}|\\[a-zA-Z]+|_\{?\w+\}?")


def _letters(s: str) -> set[str]:
    """Variable letters of a normalised answer (LaTeX commands, text and subscripts removed)."""
    return set(re.findall(r"[a-zA-Z]", _COMMAND.sub("", s)))


def _reference_answer(reference: str) -> str:
    boxed = last_boxed(reference)
    return boxed if boxed is not None else reference.strip()


def check(
    response: str,
    reference: str,
    *,
    timeout: float | None = None,
    pool: VerifierPool | None = None,
    backend: str = "auto",
) -> Verdict:
    """Compare ``response`` (a full model response or a bare answer) with ``reference``.

    ``backend``: "auto" (math-verify when installed, else sympy), "math_verify", "sympy", or "none"
    (steps 1-4 only: no worker process at all).
    """
    if not isinstance(response, str) or not isinstance(reference, str):
        raise TypeError("check(response, reference) takes two strings")
    answer, how = extract_answer(response)
    if answer is None or not answer.strip():
        return Verdict(False, answer, "no answer found")
    if len(answer) > MAX_ANSWER_CHARS:
        return Verdict(False, answer[:100], f"answer longer than {MAX_ANSWER_CHARS} characters")
    ref = _reference_answer(reference)
    n_pred, pct_pred = normalize(answer)
    n_ref, pct_ref = normalize(ref)
    if not n_pred:
        return Verdict(False, answer, "empty answer")
    p_pred, p_ref = unit_power(answer), unit_power(ref)
    if p_pred is not None and p_ref is not None and p_pred != p_ref:
        return Verdict(False, answer, "units of different powers")
    if n_pred == n_ref:
        return Verdict(True, answer, "same normal form")
    m_pred, m_ref = as_matrix(n_pred), as_matrix(n_ref)
    if m_pred is not None and m_ref is not None:
        if [len(row) for row in m_pred] != [len(row) for row in m_ref]:
            return Verdict(False, answer, "matrix shapes differ")
        for row_pred, row_ref in zip(m_pred, m_ref, strict=True):
            for e_pred, e_ref in zip(row_pred, row_ref, strict=True):
                same, reason = _compare(normalize(e_pred), normalize(e_ref), timeout, pool, backend)
                if not same:
                    return Verdict(False, answer, f"matrix entries differ ({reason})")
        return Verdict(True, answer, "matrix entries equal")
    same, reason = _compare((n_pred, pct_pred), (n_ref, pct_ref), timeout, pool, backend)
    return Verdict(same, answer, reason)


def _compare(
    pred: tuple[str, bool], ref: tuple[str, bool], timeout: float | None, pool: VerifierPool | None, backend: str
) -> tuple[bool, str]:
    """Steps 4-6 on two normalised answers (normal form, had a percent sign): (equal, reason)."""
    (n_pred, pct_pred), (n_ref, pct_ref) = pred, ref
    if n_pred == n_ref:
        return True, "same normal form"
    v_pred, v_ref = as_rational(n_pred), as_rational(n_ref)
    if v_pred is not None and v_ref is not None:
        same = v_pred == v_ref or (pct_pred and not pct_ref and v_pred / 100 == v_ref) or (
            pct_ref and not pct_pred and v_ref / 100 == v_pred
        )
        return bool(same), "numbers equal" if same else "numbers differ"
    b_ref = as_base_n(n_ref)
    if b_ref is not None:
        same = as_base_n(n_pred) == b_ref or (b_ref[1] == 10 and n_pred == b_ref[0])
        return same, "same base-n numeral" if same else "base-n numerals differ"
    t_pred, t_ref = as_text(n_pred), as_text(n_ref)
    if t_ref is not None:
        return t_pred == t_ref, "text equal" if t_pred == t_ref else "text differs"
    if backend == "none":
        return False, "not equal as strings or numbers"
    name = "math_verify_equal" if backend == "math_verify" or (backend == "auto" and HAVE_MATH_VERIFY) else "sympy_equal"
    pool = pool or default_pool()
    try:
        result = pool.call(name, (n_ref, n_pred), DEFAULT_TIMEOUT if timeout is None else timeout)
        if result is None and name == "math_verify_equal":
            result = pool.call("sympy_equal", (n_ref, n_pred), DEFAULT_TIMEOUT if timeout is None else timeout)
    except VerifierTimeout:
        return False, "timed out"
    except WorkerCrashed as e:
        return False, f"checker failed: {e}"
    if result is None:
        return False, "could not parse"
    if result and _letters(n_pred) != _letters(n_ref):
        # math-verify reads trailing letters as units ("5ab" == "5"); a variable that only one side
        # has cannot be equal.
        return False, f"{name}: different variables"
    return bool(result), f"{name}: {'equal' if result else 'different'}"


async def acheck(response: str, reference: str, **kwargs) -> Verdict:
    """``check`` without blocking the event loop."""
    return await asyncio.to_thread(check, response, reference, **kwargs)
