"""The inference backend contract (DESIGN.md, Inference backend).

    completions = await backend.generate(prompt_token_ids, SamplingParams(...))   # list of n Completion
    token_ids, logprobs, finish_reason, version = completions[0]
    backend.update_weights(state_dict_or_checkpoint_path)                          # version += 1

Logprob convention (the same everywhere in agentrl): the logprob of each sampled token under the
distribution the engine actually sampled from — logits divided by the temperature, then top-k and top-p
truncation with renormalisation (``alp.logprobs.sampling_distribution``). The learner recomputes its
logprobs the same way, so truncation never biases the importance ratio. ``temperature == 0`` means greedy
decoding (for evaluation); its logprobs are those of the untruncated temperature-1 distribution, and the
learner refuses to train on greedy rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    """Softmax temperature; 0 = greedy (evaluation only)."""
    top_p: float = 1.0
    """Nucleus truncation: keep the smallest set of tokens whose probability reaches top_p (1 = off)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = off)."""
    max_new_tokens: int = 256
    """Tokens to sample at most in this call."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra ids that end the completion (the tokenizer's eos always does); the stop id is kept."""
    stop: tuple[str, ...] = ()
    """Strings that end the completion once the decoded completion contains one; the tokens are kept."""
    n: int = 1
    """Independent samples of the same prompt."""
    seed: int | None = None
    """Seed of this request's sampling stream (None: drawn from the backend's generator)."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 = off)")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.n < 1:
            raise ValueError(f"n={self.n} must be >= 1")

    def with_(self, **changes: Any) -> SamplingParams:
        return replace(self, **changes)


class Completion(NamedTuple):
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    version: int
    """Policy version of the weights that sampled every token of this completion."""


@runtime_checkable
class Backend(Protocol):
    @property
    def version(self) -> int: ...

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> list[Completion]: ...

    def update_weights(self, weights: dict[str, Any] | str | Path) -> int: ...

    async def aclose(self) -> None: ...


@dataclass
class BackendStats:
    """Counters every backend keeps; read them for the perf/ metrics."""

    requests: int = 0
    batches: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    busy_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)
