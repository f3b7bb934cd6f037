"""Controlled training-inference mismatch: rollout engines that differ from the trained policy on purpose.

    spec = MismatchSpec.parse("stale4+bf16")          # rollouts from weights 4 updates old, run in bf16
    backend = make_rollout_backend(spec, model, tokenizer, seed=0)
    ...rollouts...; backend.update_weights(new_state)  # the engine loads the weights of 4 updates ago

The trainer always scores in float32 with the current weights; the rollout engine (mu) differs by:

| part         | what the engine does                                                                  |
|--------------|---------------------------------------------------------------------------------------|
| `stale<k>`   | samples with the weights of k learner updates ago (k = 0: the current ones)            |
| `bf16`       | runs the whole rollout model in bfloat16 (kernels, activations and KV cache in bf16)   |
| `bf16-logits`| rounds every rollout logit to bfloat16's 8 significant bits                            |
| `fp8-logits` | rounds every rollout logit to an fp8 (E4M3)-like format: 4 significant bits, |x| <= 448 |
| `noise<s>`   | adds "kernel noise" of std s to every rollout logit (see :func:`kernel_noise`)         |
| `vllm`       | samples with the vLLM engine (needs vllm; `vllm+bf16` for its bf16 kernels)            |
| `none`       | no injected mismatch (what is left is the HF backend's incremental-decode rounding)     |

Parts combine with ``+`` (``stale4+bf16``, ``bf16+noise0.02``). Every transform acts on the logits the
engine samples from, before temperature / top-k / top-p, so the behaviour logprob each token carries is its
logprob under the distribution it was actually drawn from (the kit's logprob convention): the mismatch is
between mu and the trainer's pi, never a bookkeeping error.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agentrl.inference.base import Completion, SamplingParams

__all__ = [
    "LOGITS_FORMATS",
    "MismatchSpec",
    "StaleWeightsBackend",
    "install_logits_transform",
    "kernel_noise",
    "make_rollout_backend",
    "round_significand",
]

# significant bits (the implicit leading 1 included) and the largest finite value of each rounded format
LOGITS_FORMATS: dict[str, tuple[int, float]] = {
    "bf16": (8, 3.3895313892515355e38),
    "fp8": (4, 448.0),  # E4M3 (OCP fp8 "e4m3fn"): 3 mantissa bits, max 448
}
_PART = re.compile(r"^(stale(?P<k>\d+)|noise(?P<s>\d*\.?\d+(?:e-?\d+)?)|bf16|bf16-logits|fp8-logits|fp8|vllm|none)$")


@dataclass(frozen=True)
class MismatchSpec:
    """One controlled mismatch between the rollout policy mu and the trained policy pi."""

    staleness: int = 0
    """Rollouts use the weights of `staleness` learner updates ago (0: the current ones)."""
    rollout_dtype: str = "float32"
    """float32 | bfloat16: the rollout model's dtype (the trainer stays float32)."""
    logits_format: str = "none"
    """none | bf16 | fp8: round every rollout logit to this format before sampling."""
    logit_noise: float = 0.0
    """Std of the deterministic, input-dependent noise added to every rollout logit (0: none)."""
    engine: str = "hf"
    """hf (the in-process HF backend) | vllm (the vLLM engine; its own kernels are the mismatch)."""

    def __post_init__(self) -> None:
        if self.staleness < 0:
            raise ValueError(f"staleness={self.staleness} must be >= 0 (updates between sampler and trainer)")
        if self.rollout_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"rollout_dtype={self.rollout_dtype!r}: choose float32 or bfloat16")
        if self.logits_format != "none" and self.logits_format not in LOGITS_FORMATS:
            raise ValueError(f"logits_format={self.logits_format!r}: choose none, {', '.join(LOGITS_FORMATS)}")
        if not self.logit_noise >= 0:
            raise ValueError(f"logit_noise={self.logit_noise} must be >= 0")
        if self.engine not in ("hf", "vllm"):
            raise ValueError(f"engine={self.engine!r}: choose hf or vllm")
        if self.engine == "vllm" and (self.logits_format != "none" or self.logit_noise > 0):
            raise ValueError("the vllm engine takes no injected logits transform: its own kernels are the mismatch "
                             "(use vllm or vllm+bf16, optionally +stale<k>)")

    @classmethod
    def parse(cls, text: str) -> MismatchSpec:
        """``stale4+bf16``, ``fp8-logits``, ``noise0.02``, ``vllm+bf16``, ``none`` (see the module table)."""
        kw: dict[str, Any] = {}
        parts = [p.strip().lower() for p in str(text).split("+")]
        for part in parts:
            m = _PART.match(part)
            if m is None:
                raise ValueError(
                    f"mismatch {text!r}: cannot read {part!r}. Parts (joined by '+'): stale<k> (e.g. stale4), bf16, "
                    "bf16-logits, fp8-logits, noise<std> (e.g. noise0.02), vllm, none"
                )
            if part == "none":
                if len(parts) > 1:
                    raise ValueError(f"mismatch {text!r}: 'none' cannot be combined with other parts")
                continue
            if m.group("k") is not None:
                key, value = "staleness", int(m.group("k"))
            elif m.group("s") is not None:
                key, value = "logit_noise", float(m.group("s"))
            elif part == "bf16":
                key, value = "rollout_dtype", "bfloat16"
            elif part in ("fp8", "fp8-logits"):
                key, value = "logits_format", "fp8"
            elif part == "bf16-logits":
                key, value = "logits_format", "bf16"
            else:
                key, value = "engine", "vllm"
            if key in kw:
                raise ValueError(f"mismatch {text!r}: {key} is given twice")
            kw[key] = value
        return cls(**kw)

    @property
    def name(self) -> str:
        """Canonical text form (``parse(spec.name) == spec``), used for folder names and tables."""
        parts = [f"stale{self.staleness}"] if self.staleness else []
        if self.engine == "vllm":
            parts.append("vllm")
        if self.rollout_dtype == "bfloat16":
            parts.append("bf16")
        if self.logits_format != "none":
            parts.append(f"{self.logits_format}-logits")
        if self.logit_noise > 0:
            parts.append(f"noise{self.logit_noise:g}")
        return "+".join(parts) or "none"

    def describe(self) -> str:
        """One line for reports."""
        what = []
        if self.staleness:
            what.append(f"rollout weights {self.staleness} updates old")
        if self.engine == "vllm":
            what.append(f"vLLM engine ({self.rollout_dtype})")
        elif self.rollout_dtype == "bfloat16":
            what.append("rollout model in bf16")
        if self.logits_format != "none":
            what.append(f"rollout logits rounded to {self.logits_format}")
        if self.logit_noise:
            what.append(f"kernel noise std {self.logit_noise:g} on rollout logits")
        return ", ".join(what) or "no injected mismatch (HF incremental decode vs teacher-forced trainer, fp32)"


# ---------------------------------------------------------------------------------------------------
# Logit transforms (pure functions)
# ---------------------------------------------------------------------------------------------------
def round_significand(x: torch.Tensor, bits: int, max_value: float = float("inf")) -> torch.Tensor:
    """``x`` rounded to ``bits`` significant bits (round half to even), saturated at +-max_value.

    A float format with m mantissa bits keeps m + 1 significant bits; exponent range and subnormals are
    ignored (logits sit far from both ends), hence "fp8-like". Computed in float32; returns float32.
    """
    if bits < 1:
        raise ValueError(f"bits={bits} must be >= 1")
    x = x.float()
    mantissa, exponent = torch.frexp(x)  # x = mantissa * 2**exponent, |mantissa| in [0.5, 1)
    scale = float(2**bits)
    rounded = torch.ldexp(torch.round(mantissa * scale) / scale, exponent)
    return rounded.clamp(-max_value, max_value) if max_value != float("inf") else rounded


def kernel_noise(logits: torch.Tensor, std: float) -> torch.Tensor:
    """``logits`` plus deterministic, input-dependent pseudo-noise of standard deviation ``std``.

    Real kernel differences are not random draws: the same inputs give the same error, a change of
    inputs gives an unrelated one. So the noise here is a hash of each logit's value and vocabulary index
    (the sin-fract hash), uniform on [-sqrt(3) std, sqrt(3) std]: a fixed function of what the engine
    computed, independent of batch composition, seeds and call order. Returns float32.
    """
    if std < 0:
        raise ValueError(f"std={std} must be >= 0")
    x = logits.float()
    if std == 0:
        return x
    index = torch.arange(x.shape[-1], dtype=torch.float64, device=x.device)  # [V]
    h = torch.sin(x.double() * 12.9898 + index * 78.233) * 43758.5453  # [..., V]
    u = (h - torch.floor(h)) * 2.0 - 1.0  # uniform in [-1, 1)
    return x + (u * (std * 3.0**0.5)).float()


def logits_transform(spec: MismatchSpec):
    """The callable applied to the rollout engine's logits for ``spec`` (None when nothing is applied)."""
    fmt, noise = spec.logits_format, spec.logit_noise
    if fmt == "none" and noise == 0:
        return None

    def transform(logits: torch.Tensor) -> torch.Tensor:
        out = logits.float()
        if noise > 0:  # kernel noise first, then the output format rounds what the kernels produced
            out = kernel_noise(out, noise)
        if fmt != "none":
            bits, max_value = LOGITS_FORMATS[fmt]
            out = round_significand(out, bits, max_value)
        return out

    return transform


def install_logits_transform(model: torch.nn.Module, transform) -> Any:
    """Apply ``transform`` to the output of ``model``'s LM head (every logit it produces); returns the hook
    handle (``.remove()`` undoes it). Weight loads keep the hook."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head) to transform")
    return head.register_forward_hook(lambda module, args, output: transform(output))


# ---------------------------------------------------------------------------------------------------
# Staleness
# ---------------------------------------------------------------------------------------------------
class StaleWeightsBackend:
    """Wraps a backend so that it samples with the weights of ``staleness`` learner updates ago.

    ``update_weights(w)`` records learner version v + 1 and loads version v + 1 - k into the inner engine
    (nothing before version k: the engine keeps the starting weights). ``version`` is the learner's version
    (the rollout manager seeds sampling with it, so runs with different k share sampling streams); every
    returned :class:`Completion` carries the version of the weights that actually sampled it, so
    trajectories record their true staleness. The wrapper keeps references to the last k + 1 state dicts it
    is given: pass copies (the trainer does).
    """

    def __init__(self, inner: Any, staleness: int) -> None:
        if staleness < 0:
            raise ValueError(f"staleness={staleness} must be >= 0")
        self.inner = inner
        self.staleness = staleness
        self._version = 0  # learner updates received
        self._history: deque[tuple[int, Any]] = deque(maxlen=staleness + 1)
        self._true_version = {int(inner.version): 0}  # inner engine version -> learner version it holds

    @property
    def version(self) -> int:
        return self._version

    @property
    def loaded_version(self) -> int:
        """The learner version of the weights the engine samples with now."""
        return self._true_version[int(self.inner.version)]

    @property
    def stats(self) -> Any:
        return getattr(self.inner, "stats", None)

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> list[Completion]:
        out = await self.inner.generate(prompt_token_ids, sampling)
        return [c._replace(version=self._true_version[int(c.version)]) for c in out]

    def update_weights(self, weights: dict[str, Any] | str | Path) -> int:
        self._version += 1
        self._history.append((self._version, weights))
        target = self._version - self.staleness
        if target >= 1:
            found = [w for v, w in self._history if v == target]
            assert found, "the history always holds the last k + 1 versions"
            self._true_version[int(self.inner.update_weights(found[0]))] = target
        return self._version

    async def aupdate_weights(self, weights: dict[str, Any] | str | Path) -> int:
        return await asyncio.to_thread(self.update_weights, weights)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------
def make_rollout_backend(spec: MismatchSpec, model: torch.nn.Module, tokenizer: Any, *, seed: int = 0,
                         max_batch_size: int = 64, model_path: str | Path | None = None,
                         vllm_kwargs: dict[str, Any] | None = None) -> Any:
    """A rollout backend that samples from ``model``'s weights with the mismatch ``spec`` injected.

    hf: an :class:`~agentrl.inference.hf.HFBackend` over a private copy of ``model`` (in bf16 for ``bf16``),
    with the logits transform hooked onto its LM head. vllm: a :class:`~agentrl.inference.vllm.VLLMBackend`
    over ``model_path`` (a checkpoint folder holding ``model``'s weights; ``vllm_kwargs`` go to its
    constructor, e.g. max_model_len, gpu_memory_utilization, enforce_eager). Staleness wraps either.
    """
    dtype = torch.bfloat16 if spec.rollout_dtype == "bfloat16" else torch.float32
    if spec.engine == "vllm":
        if model_path is None:
            raise ValueError("the vllm engine needs model_path: a checkpoint folder with the starting weights")
        from agentrl.inference.vllm import VLLMBackend

        backend: Any = VLLMBackend(model_path, dtype=spec.rollout_dtype, seed=seed, **(vllm_kwargs or {}))
    else:
        from agentrl.inference.hf import HFBackend

        backend = HFBackend(model, tokenizer, max_batch_size=max_batch_size, seed=seed, dtype=dtype)
        transform = logits_transform(spec)
        if transform is not None:
            install_logits_transform(backend.model, transform)
    return StaleWeightsBackend(backend, spec.staleness) if spec.staleness else backend
