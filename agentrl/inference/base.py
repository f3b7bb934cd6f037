"""The inference backend contract (DESIGN.md, Inference backend).

    completions = await backend.generate(prompt_token_ids, SamplingParams(...))   # list of n Completion
    c = completions[0]          # c.token_ids, c.logprobs, c.finish_reason, c.versions (one per token)
    backend.update_weights(state_dict_or_checkpoint_path)                          # version += 1

Versions: every sampled token records the policy version of the weights that sampled it. A backend that
applies a weight update between decoding steps of a request in flight (the HF backend with
``allow_partial=True``: partial rollouts) reports one version per token (``Completion.token_versions``);
otherwise an update waits for the requests in flight and a completion has one ``version``. A version bump
never aborts a request.

Logprob convention (the same everywhere in agentrl): the logprob of each sampled token under the
distribution the engine actually sampled from — logits divided by the temperature, then top-k and top-p
truncation with renormalisation (``alp.logprobs.sampling_distribution``). The learner recomputes its
logprobs the same way, so truncation never biases the importance ratio. ``temperature == 0`` means greedy
decoding (for evaluation); its logprobs are those of the untruncated temperature-1 distribution, and the
learner refuses to train on greedy rollouts.
"""

from __future__ import annotations

import asyncio
import threading
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
    """Policy version of the weights that sampled the first token (every token, unless token_versions)."""
    token_versions: tuple[int, ...] | None = None
    """One version per token when a weight update landed while this request was decoding (partial rollouts)."""

    @property
    def versions(self) -> list[int]:
        """The policy version of every sampled token."""
        if self.token_versions is not None:
            return list(self.token_versions)
        return [self.version] * len(self.token_ids)


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


DEFAULT_GATE_POLL_S = 0.005
"""How often a request waiting for a weight update or a sleep to end looks again, seconds."""


class RequestGate:
    """Requests against a hold (a weight update, a sleep): new requests wait while a hold is on, and a hold
    waits for the requests in flight, so no request ever sees half an update.

    ``async with gate.request():`` around each request (it yields the version at its start);
    ``with gate.hold("update"):`` around the update, from a thread that is not running those requests'
    event loop (``asyncio.to_thread``), or the requests in flight could never finish.
    """

    def __init__(self, version: int = 0) -> None:
        self.version = version
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._held: str | None = None

    @property
    def held(self) -> str | None:
        """Why requests wait now ("update", "sleep", ...), or None."""
        return self._held

    def request(self) -> _Request:
        return _Request(self)

    def hold(self, why: str) -> _Hold:
        return _Hold(self, why)

    def take(self, why: str) -> None:
        """Start a hold that outlives one block (a sleep); :meth:`release` ends it."""
        self.hold(why).__enter__()

    def release(self) -> None:
        with self._lock:
            self._held = None


class _Request:
    def __init__(self, gate: RequestGate) -> None:
        self.gate = gate

    async def __aenter__(self) -> int:
        g = self.gate
        while True:
            with g._lock:
                if g._held is None:
                    g._in_flight += 1
                    return g.version
            await asyncio.sleep(DEFAULT_GATE_POLL_S)

    async def __aexit__(self, *exc: object) -> None:
        g = self.gate
        with g._lock:
            g._in_flight -= 1
            if g._in_flight == 0:
                g._idle.notify_all()


class _Hold:
    def __init__(self, gate: RequestGate, why: str) -> None:
        self.gate, self.why = gate, why

    def __enter__(self) -> None:
        g = self.gate
        with g._lock:
            if g._held is not None:
                raise RuntimeError(f"the backend is busy ({g._held}); one update or sleep at a time")
            if g._in_flight and _on_loop_thread():
                raise RuntimeError(f"{self.why} called on an event loop with requests in flight: they could never "
                                   "finish; use the backend's async method (e.g. `await backend.aupdate_weights(...)`) "
                                   "or call it between rollouts")
            g._held = self.why
            while g._in_flight:
                g._idle.wait()

    def __exit__(self, *exc: object) -> None:
        self.gate.release()


def _on_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
