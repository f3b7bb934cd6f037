"""A scripted policy as a backend: replies chosen by a function, no model.

For tests of environments and of the rollout machinery, and for measuring the manager's own overhead
(``benchmarks/rollout.py``): it answers instantly (or after ``latency_s``) with the token ids of the text
``policy(prompt_token_ids, turn_index)`` returns, plus the eos token, each with logprob ``logprob``.
It is a real implementation of the backend contract, not a model stand-in for learning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentrl.inference.base import BackendStats, Completion, SamplingParams

ScriptFn = Callable[[list[int]], str]


class ScriptedBackend:
    def __init__(self, tokenizer: Any, policy: ScriptFn | str, *, logprob: float = -1.0,
                 latency_s: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.policy: ScriptFn = (lambda _ids: policy) if isinstance(policy, str) else policy
        self.logprob = logprob
        self.latency_s = latency_s
        self.stats = BackendStats()
        self._version = 0
        self._encode = lru_cache(maxsize=4096)(self._encode_uncached)

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return (*self.tokenizer.encode(text, add_special_tokens=False), self.tokenizer.eos_token_id)

    @property
    def version(self) -> int:
        return self._version

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> list[Completion]:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        ids = list(self._encode(self.policy(prompt_token_ids)))
        finish = "stop"
        if len(ids) > sampling.max_new_tokens:
            ids, finish = ids[: sampling.max_new_tokens], "length"
        self.stats.requests += sampling.n
        self.stats.generated_tokens += len(ids) * sampling.n
        return [Completion(list(ids), [self.logprob] * len(ids), finish, self._version) for _ in range(sampling.n)]

    def update_weights(self, weights: dict[str, Any] | str | Path) -> int:
        self._version += 1
        return self._version

    async def aclose(self) -> None:
        return None
