"""Answer checking: ``check(response, reference) -> Verdict(correct, extracted, reason)``.

Model text is never evaluated in the calling process: cheap string and exact-number comparisons run
here, anything needing sympy / math-verify runs in a resource-limited worker process with a hard
timeout (pool.py).
"""

from .check import DEFAULT_TIMEOUT, HAVE_MATH_VERIFY, MAX_ANSWER_CHARS, Verdict, acheck, check
from .extract import all_boxed, extract_answer, last_boxed
from .normalize import normalize
from .pool import VerifierPool, VerifierTimeout, default_pool, set_default_pool

__all__ = [
    "DEFAULT_TIMEOUT",
    "HAVE_MATH_VERIFY",
    "MAX_ANSWER_CHARS",
    "Verdict",
    "VerifierPool",
    "VerifierTimeout",
    "acheck",
    "all_boxed",
    "check",
    "default_pool",
    "extract_answer",
    "last_boxed",
    "normalize",
    "set_default_pool",
]
