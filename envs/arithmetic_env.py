"""``agentrl/Arithmetic-v0``: procedural arithmetic with a Python tool, the CPU demo's default.

A tiny model cannot multiply 4-digit numbers in its head but learns quickly to write
``print(4821 * 73)`` and box the result, so tool use visibly pays. Seeded, with difficulty knobs and a
held-out split (``split="test"``); see ``envs.tasks.ArithmeticTasks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import ToolEnv
from .tasks import OPS_DEFAULT, ArithmeticTasks

ARITHMETIC_SYSTEM_PROMPT = (
    "You can run Python: write code in a ```python block and its output comes back as "
    '"Code execution result: ...". Give the final answer within \\boxed{}.'
)


class ArithmeticEnv(ToolEnv):
    def __init__(
        self,
        *,
        split: str = "train",
        digits: int | tuple[int, int] = (2, 4),
        ops: Sequence[str] = OPS_DEFAULT,
        modulus_digits: int = 2,
        test_fraction: float = 0.2,
        max_turns: int = 3,
        system_prompt: str | None = ARITHMETIC_SYSTEM_PROMPT,
        **kwargs: Any,
    ):
        tasks = ArithmeticTasks(
            split=split, digits=digits, ops=tuple(ops), modulus_digits=modulus_digits, test_fraction=test_fraction
        )
        super().__init__(tasks, max_turns=max_turns, system_prompt=system_prompt, **kwargs)
        self.split = split
