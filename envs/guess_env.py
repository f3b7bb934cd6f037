"""``agentrl/GuessNumber-v0``: find a hidden integer from "higher" / "lower" hints over several turns.

Each turn the model guesses with ``\\boxed{n}``; a wrong guess gets a hint as the next user message
("Too low. 5 guesses left."), until the number is found or ``max_turns`` guesses are used. Halving the
range each turn (binary search) always finds a number in 1..100 within 7 guesses, the default budget,
so the best policy must read and use every hint; a policy that ignores them wins about 7% of the time.
Reward 1 for finding the number, else 0. A guess that is not a whole number in range is told so and
costs its turn.

``info["metrics"]``: ``guesses`` (1 on each guessing turn) and ``invalid_guesses``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .base import TextEnv
from .tasks import Task

_INTEGER = re.compile(r"^[+-]?\d+$")


class GuessTasks:
    """A hidden integer, uniform in ``[low, high]``."""

    def __init__(self, low: int = 1, high: int = 100):
        if low >= high:
            raise ValueError(f"need low < high, got {low}, {high}")
        self.low, self.high = int(low), int(high)

    def sample(self, rng: np.random.Generator) -> Task:
        secret = int(rng.integers(self.low, self.high + 1))
        question = (
            f"I am thinking of a whole number between {self.low} and {self.high}. Guess it: write one guess "
            "per turn as \\boxed{n}. After each wrong guess I tell you whether the number is higher or lower."
        )
        return Task(question, str(secret), metadata={"low": self.low, "high": self.high})


class GuessNumberEnv(TextEnv):
    """Interactive guessing (see the module docstring); ``max_turns`` defaults to the binary-search bound."""

    metric_keys = ("guesses", "invalid_guesses")

    def __init__(self, *, low: int = 1, high: int = 100, max_turns: int | None = None, **kwargs: Any):
        if max_turns is None:
            max_turns = math.ceil(math.log2(high - low + 1))
        kwargs.setdefault("void_turn", "continue")
        super().__init__(GuessTasks(low, high), max_turns=max_turns, **kwargs)

    def _guess(self, answer: str) -> int | None:
        assert self.task is not None
        text = answer.strip().replace(",", "")
        if not _INTEGER.match(text):
            return None
        guess = int(text)
        return guess if self.task.metadata["low"] <= guess <= self.task.metadata["high"] else None

    async def feedback(self, answer: str, action: str) -> str | None:
        assert self.task is not None
        guess, secret = self._guess(answer), int(self.task.answer)
        if guess == secret:
            return None  # found: the episode ends with reward 1
        left = self.max_turns - self.turn
        tail = f" {left} guess{'es' if left != 1 else ''} left."
        if guess is None:
            low, high = self.task.metadata["low"], self.task.metadata["high"]
            return f"{answer.strip()!r} is not a whole number between {low} and {high}.{tail}"
        return ("Too low: the number is higher." if guess < secret else "Too high: the number is lower.") + tail

    async def astep(self, action: str):  # type: ignore[override]
        result = await super().astep(action)
        if result.info["is_answer"]:
            result.info["metrics"]["guesses"] = 1.0
            answer = self.extract_answer(action) or ""
            result.info["metrics"]["invalid_guesses"] = float(self._guess(answer) is None)
        return result

    def score(self, task: Task, answer: str | None, action: str) -> tuple[float, dict[str, float], dict[str, Any]]:
        found = answer is not None and self._guess(answer) == int(task.answer)
        reward = self.correct_reward if found else self.wrong_reward
        verdict = "found" if found else ("no guess" if answer is None else f"wrong guess {answer!r}")
        return reward, {"correct": float(found)}, {"correct": found, "verdict": verdict}
