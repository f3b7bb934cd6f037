"""Gymnasium spaces for text environments: any unicode string, and a tuple of chat messages.

Gymnasium's own ``spaces.Text`` checks every character against a finite charset, which cannot admit
arbitrary unicode model output; these two spaces accept any ``str`` (up to a length bound) while
still sampling reproducibly from ``np_random`` so ``check_env`` can drive them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

DEFAULT_MAX_TEXT_LENGTH = 1_000_000
"""Characters; far above any sane turn, it only guards against runaway inputs."""

ROLES = ("system", "developer", "user", "assistant", "tool", "ipython", "function")

# What ``sample`` draws from: ASCII, accented Latin, CJK, an emoji and some math. No backticks or
# braces, so a random action is always a "void turn" (neither a tool call nor an answer).
_SAMPLE_ALPHABET = tuple("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?+-*/=()\n") + (
    "é", "ß", "λ", "π", "√", "∑", "中", "文", "🙂",
)


class UnicodeText(spaces.Space[str]):
    """Any Python ``str`` of at most ``max_length`` characters."""

    def __init__(
        self,
        max_length: int = DEFAULT_MAX_TEXT_LENGTH,
        *,
        min_length: int = 0,
        seed: int | np.random.Generator | None = None,
    ):
        if not 0 <= min_length <= max_length:
            raise ValueError(f"need 0 <= min_length <= max_length, got {min_length}, {max_length}")
        self.max_length = int(max_length)
        self.min_length = int(min_length)
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any | None = None, probability: Any | None = None) -> str:
        high = min(self.max_length, max(self.min_length, 48))
        length = int(self.np_random.integers(self.min_length, high + 1))
        idx = self.np_random.integers(0, len(_SAMPLE_ALPHABET), size=length)
        return "".join(_SAMPLE_ALPHABET[i] for i in idx)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, UnicodeText)
            and other.max_length == self.max_length
            and other.min_length == self.min_length
        )


class Messages(spaces.Space[tuple]):
    """A tuple of chat messages: dicts with a ``role`` (one of ``ROLES``) and a ``str`` ``content``.

    Extra keys (``name``, ``tool_call_id``...) are allowed so envs may attach them for chat templates.
    """

    def __init__(self, max_messages: int = 64, seed: int | np.random.Generator | None = None):
        self.max_messages = int(max_messages)
        self._text = UnicodeText()
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def seed(self, seed: int | None = None) -> int | list[int] | dict[str, int]:
        seeds = super().seed(seed)
        self._text.seed(int(self.np_random.integers(2**31)))
        return seeds

    def sample(self, mask: Any | None = None, probability: Any | None = None) -> tuple:
        n = int(self.np_random.integers(0, 3))
        return tuple(
            {"role": ROLES[int(self.np_random.integers(len(ROLES)))], "content": self._text.sample()}
            for _ in range(n)
        )

    def contains(self, x: Any) -> bool:
        return (
            isinstance(x, tuple)
            and len(x) <= self.max_messages
            and all(
                isinstance(m, dict)
                and m.get("role") in ROLES
                and isinstance(m.get("content"), str)
                for m in x
            )
        )

    def __repr__(self) -> str:
        return f"Messages(max_messages={self.max_messages})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Messages) and other.max_messages == self.max_messages
