"""A procedural arithmetic family a tiny CPU model can learn, and where a Python tool genuinely helps.

Problems are multi-digit products, sums/differences and modular reductions, e.g.
``Compute 4821 * 73.`` or ``Compute (5821 * 907) mod 97.``: exact answers a small model cannot
multiply in its head but can get by writing ``print(4821 * 73)``.

Held-out split: a problem belongs to ``test`` when a stable hash of its canonical expression falls in
the ``test_fraction`` bucket, else to ``train``; each split rejection-samples its own, so the two are
disjoint by construction and a seed gives the same problem every time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import Task

OPS = ("add", "sub", "mul", "mod")
SPLITS = ("train", "test")


def in_test_split(expression: str, test_fraction: float) -> bool:
    """Stable across processes and Python versions (no ``hash()``, which is salted)."""
    digest = hashlib.blake2b(expression.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < test_fraction


@dataclass
class ArithmeticTasks:
    """Seeded generator of arithmetic tasks.

    Difficulty knobs: ``digits`` (operand length, int or (low, high) inclusive), ``ops`` (subset of
    ``OPS``), ``modulus_digits`` (size of the modulus in ``mod`` problems).
    """

    split: str = "train"
    digits: int | tuple[int, int] = (2, 4)
    ops: Sequence[str] = OPS
    modulus_digits: int = 2
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ValueError(f"ops must be a non-empty subset of {OPS}, got {list(self.ops)!r}")
        low, high = (self.digits, self.digits) if isinstance(self.digits, int) else tuple(self.digits)
        if not 1 <= low <= high <= 30:
            raise ValueError(f"digits must be in [1, 30] with low <= high, got {self.digits!r}")
        self._digit_range = (int(low), int(high))
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        self.ops = tuple(self.ops)

    def _number(self, rng: np.random.Generator, digits: int) -> int:
        # Digit by digit so 30-digit operands stay exact (no int64 overflow).
        first = int(rng.integers(1, 10))
        rest = rng.integers(0, 10, size=digits - 1)
        return int(str(first) + "".join(str(int(d)) for d in rest))

    def _draw(self, rng: np.random.Generator) -> tuple[str, str, int, dict]:
        op = self.ops[int(rng.integers(len(self.ops)))]
        low, high = self._digit_range
        a = self._number(rng, int(rng.integers(low, high + 1)))
        b = self._number(rng, int(rng.integers(low, high + 1)))
        if op == "add":
            expr, text, value = f"{a} + {b}", f"Compute {a} + {b}.", a + b
        elif op == "sub":
            expr, text, value = f"{a} - {b}", f"Compute {a} - {b}.", a - b
        elif op == "mul":
            expr, text, value = f"{a} * {b}", f"Compute {a} * {b}.", a * b
        else:
            m = self._number(rng, self.modulus_digits) + 1
            expr, text, value = f"({a} * {b}) % {m}", f"Compute ({a} * {b}) mod {m}.", (a * b) % m
        return expr, text, value, {"op": op, "operands": [a, b]}

    def sample(self, rng: np.random.Generator) -> Task:
        want_test = self.split == "test"
        for _ in range(10_000):
            expr, text, value, meta = self._draw(rng)
            if in_test_split(expr, self.test_fraction) == want_test:
                meta.update(expression=expr, split=self.split)
                task_id = "arith-" + hashlib.blake2b(expr.encode(), digest_size=6).hexdigest()
                return Task(question=text, answer=str(value), id=task_id, metadata=meta)
        raise RuntimeError("could not draw a task for this split; widen digits or ops")  # pragma: no cover
