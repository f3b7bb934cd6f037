"""Adaptive layerwise perturbation: h~_l = h_l + sigma_l * eps on the input hidden states of decoder layers.

Source: Ye et al., "Adaptive Layerwise Perturbation: Unifying Off-Policy Corrections for LLM RL",
arXiv 2603.19470. The perturbed policy pi_{theta,delta} is the ratio numerator of the update; noise is
never applied to rollouts, evaluation or a reference model: hooks exist only inside
`LayerPerturbation.active(...)` and are removed on exit (also on exceptions).

Design:
- One learnable log-sigma per perturbed layer (`log_sigma` [L]); sigma_l = exp(log_sigma_l).
- Noise scale `absolute` (the paper: eps ~ N(0, I)) or `relative` (ours: eps scaled per token by the
  detached RMS of that token's hidden state, so sigma is a noise-to-signal ratio; useful for tiny models
  whose embedding RMS is ~0.05 against ~1 deeper in).
- Noise is keyed: one torch.Generator per (seed, step, micro_batch, sequence_id, layer), a splitmix64
  hash of the tuple, drawn for that sequence's own length. So it is reproducible, the same on
  activation-checkpoint recompute, and does not depend on how sequences are packed into micro-batches or
  spread over ranks when the caller passes stable, batch-unique `sequence_ids` (the learner does, with
  micro_batch=0).
- Cheap and fused: the add is a custom autograd function: one normal_ draw per row from a keyed
  generator, one fused addcmul (h + scale * eps), nothing of size [b, T, H] saved for backward (the
  output replaces h as what the layer norm saves), and eps regenerated from the same keys in backward
  for d loss / d sigma = sum(g * eps * scale); the gradient to h passes through untouched.
- Layer selection: `all`, `early` / `middle` / `late` (thirds; remainders go to the later thirds),
  `logits` (the final hidden state entering the LM head, i.e. correlated Gaussian noise on the logits,
  H instead of V draws per token), `none`, or explicit indices.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["LAYER_MODES", "LayerPerturbation", "find_decoder_layers", "select_layers", "noise_key"]

LAYER_MODES = ("all", "early", "middle", "late", "logits", "none")

# Where decoder layers live in common HF causal LMs; anything else falls back to a generic search.
_KNOWN_PATHS = (
    "model.layers",  # Llama, Qwen2/3, Mistral, Gemma, Phi3, ...
    "model.language_model.layers",  # Gemma3 / multimodal wrappers
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "model.decoder.layers",  # OPT
    "transformer.layers",
    "layers",
)

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def noise_key(*parts: int) -> int:
    """Generator seed from integers, e.g. (seed, step, micro_batch, sequence, layer): a 63-bit splitmix64 hash.

    The noise of a sequence is keyed by its id, never by the rank that scores it, so an update does not depend
    on how sequences are spread over ranks (sequence ids must be unique across the whole batch)."""
    h = 0
    for v in parts:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def _get_path(model: nn.Module, path: str) -> nn.Module | None:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def find_decoder_layers(model: nn.Module, layers_path: str | None = None) -> nn.ModuleList:
    """The decoder layer list of an HF decoder-only model (Qwen2, Llama, Mistral, Gemma, GPT-NeoX, ...).

    Tries `layers_path` if given, then the known attribute paths, then the longest nn.ModuleList whose
    length equals config.num_hidden_layers. Raises ValueError naming what to pass when none is found.
    """
    if layers_path is not None:
        found = _get_path(model, layers_path)
        if not isinstance(found, nn.ModuleList):
            raise ValueError(
                f"layers_path={layers_path!r} does not name an nn.ModuleList on {type(model).__name__}"
            )
        return found
    for path in _KNOWN_PATHS:
        found = _get_path(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) > 0 and (n is None or len(m) == n)
    ]
    if candidates:
        return max(candidates, key=lambda nm: len(nm[1]))[1]
    lists = [f"{name} ({len(m)})" for name, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    raise ValueError(
        f"could not find the decoder layers of {type(model).__name__} (tried {', '.join(_KNOWN_PATHS)} and "
        f"ModuleLists of length num_hidden_layers={n}); pass layers_path='<dotted.path>' naming the "
        f"nn.ModuleList of decoder layers. ModuleLists found: {lists or 'none'}"
    )


def select_layers(spec: str | Sequence[int], num_layers: int) -> list[int]:
    """Indices of the perturbed layers for `spec` (see LAYER_MODES) out of num_layers.

    Thirds: early = [0, n // 3), middle = [n // 3, 2n // 3 rounded), late = the rest. `logits` and
    `none` select no decoder layer.
    """
    if isinstance(spec, str):
        if spec not in LAYER_MODES:
            raise ValueError(
                f"perturb_layers={spec!r}: choose one of {LAYER_MODES} or a list of layer indices"
            )
        a, b = num_layers // 3, round(2 * num_layers / 3)
        return {
            "all": list(range(num_layers)),
            "early": list(range(0, a)),
            "middle": list(range(a, b)),
            "late": list(range(b, num_layers)),
            "logits": [],
            "none": [],
        }[spec]
    out = sorted({int(i) % num_layers if -num_layers <= int(i) < num_layers else int(i) for i in spec})
    bad = [i for i in out if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"perturb_layers indices {bad} out of range for a model with {num_layers} layers")
    return out


def _draw(like: torch.Tensor, keys: Sequence[int], lengths: Sequence[int] | None) -> torch.Tensor:
    """eps [b, T, H] with row i drawn from Generator(keys[i]) for its first lengths[i] positions, 0 after."""
    b, T = like.shape[0], like.shape[1]
    eps = torch.empty_like(like)  # [b, T, H]
    gen = torch.Generator(device=like.device)
    for i in range(b):
        n = T if lengths is None else min(int(lengths[i]), T)
        gen.manual_seed(keys[i])
        eps[i, :n].normal_(generator=gen)
        if n < T:
            eps[i, n:].zero_()
    return eps


class _AddNoise(torch.autograd.Function):
    """out = h + sigma * scale * eps, eps regenerated from keys in backward (nothing [b, T, H] saved)."""

    @staticmethod
    def forward(ctx, h, sigma, keys, lengths, relative):
        if relative:
            rms = h.detach().float().pow(2).mean(-1, keepdim=True).sqrt().to(h.dtype)  # [b, T, 1]
            scale = sigma.to(h.dtype) * rms  # [b, T, 1]
        else:
            rms = None
            scale = sigma.to(h.dtype)  # []
        eps = _draw(h, keys, lengths)  # [b, T, H]
        out = torch.addcmul(h, eps, scale)  # [b, T, H] one fused pass; eps is freed on return
        ctx.keys, ctx.lengths, ctx.relative = keys, lengths, relative
        if relative:
            ctx.save_for_backward(sigma, rms)
        else:
            ctx.save_for_backward(sigma)
        ctx.shape_like = (h.shape, h.dtype, h.device)
        return out

    @staticmethod
    def backward(ctx, g):
        grad_sigma = None
        if ctx.needs_input_grad[1]:
            saved = ctx.saved_tensors
            sigma = saved[0]
            shape, dtype, device = ctx.shape_like
            eps = _draw(torch.empty(shape, dtype=dtype, device=device), ctx.keys, ctx.lengths)  # [b, T, H]
            if ctx.relative:
                eps.mul_(saved[1])  # [b, T, H] eps * rms
            acc = torch.float32 if g.dtype in (torch.float16, torch.bfloat16) else g.dtype  # sum in >= fp32
            grad_sigma = torch.dot(g.reshape(-1).to(acc), eps.reshape(-1).to(acc)).to(sigma.dtype)
        return g, grad_sigma, None, None, None


class LayerPerturbation(nn.Module):
    """Learnable per-layer Gaussian perturbation of a HF decoder-only model's hidden states.

    Not a submodule of the model (its state stays out of the model checkpoint). Use:

        pert = LayerPerturbation(model, layers="all", sigma_init=1e-6)
        with pert.active(step=3, sequence_ids=[...], lengths=[...]):
            logits = model(input_ids).logits   # perturbed
            loss.backward()                    # keep backward inside if you checkpoint whole layer calls
        model.generate(...)                    # unperturbed: no hooks outside the context
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: str | Sequence[int] = "all",
        sigma_init: float = 1e-6,
        noise_scale: str = "absolute",
        seed: int = 0,
        layers_path: str | None = None,
    ) -> None:
        super().__init__()
        if noise_scale not in ("absolute", "relative"):
            raise ValueError(f"noise_scale={noise_scale!r}: choose 'absolute' (paper) or 'relative'")
        if not sigma_init > 0:
            raise ValueError(
                f"sigma_init={sigma_init}: must be > 0 (log-sigma is learned); use layers='none' for none"
            )
        self.mode = layers if isinstance(layers, str) else "indices"
        self.noise_scale = noise_scale
        self.seed = int(seed)
        self._model = [model]  # a list keeps the model out of this module's children and state_dict
        if self.mode == "logits":
            head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            if head is None:
                raise ValueError(
                    f"perturb_layers='logits' needs model.get_output_embeddings() (the LM head); "
                    f"{type(model).__name__} has none"
                )
            self._targets: list[nn.Module] = [head]
            self.layer_indices: list[int] = [-1]
        elif self.mode == "none":
            self._targets, self.layer_indices = [], []
        else:
            decoder = find_decoder_layers(model, layers_path)
            self.layer_indices = select_layers(layers, len(decoder))
            self._targets = [decoder[i] for i in self.layer_indices]
        self.log_sigma = nn.Parameter(torch.full((len(self._targets),), math.log(sigma_init)))  # [L]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def sigma(self) -> torch.Tensor:
        """sigma_l = exp(log_sigma_l), [L]."""
        return self.log_sigma.exp()

    @property
    def num_layers(self) -> int:
        return len(self._targets)

    def layer_names(self) -> list[str]:
        """Metric names: layer index per sigma, or 'logits'."""
        return ["logits" if i < 0 else str(i) for i in self.layer_indices]

    def regulariser(self, alpha: float, beta: float) -> torch.Tensor:
        """sum_l alpha sigma_l^2 - beta log sigma_l^2 (minimum at sigma^2 = beta / alpha)."""
        return (alpha * torch.exp(2 * self.log_sigma) - beta * 2 * self.log_sigma).sum()

    @property
    def is_active(self) -> bool:
        return bool(self._handles)

    @contextmanager
    def active(
        self,
        *,
        step: int,
        micro_batch: int = 0,
        sequence_ids: Sequence[int] | torch.Tensor | None = None,
        lengths: Sequence[int] | torch.Tensor | None = None,
    ) -> Iterator[LayerPerturbation]:
        """Install the noise hooks for one update forward (and its backward); remove them on exit.

        Noise of row i at layer l is keyed by (seed, step, micro_batch, sequence_ids[i], l) and drawn
        for lengths[i] positions (padding gets none). sequence_ids default to row indices.
        """
        if self._handles:
            raise RuntimeError("LayerPerturbation.active() is already entered; contexts do not nest")
        seq_ids = None if sequence_ids is None else [int(s) for s in torch.as_tensor(sequence_ids).tolist()]
        lens = None if lengths is None else [int(n) for n in torch.as_tensor(lengths).tolist()]
        relative = self.noise_scale == "relative"

        def make_hook(slot: int, layer: int):
            def hook(module, args, kwargs):
                if args:
                    h, rest = args[0], args[1:]
                else:
                    h, rest = kwargs["hidden_states"], None
                b = h.shape[0]
                ids = seq_ids if seq_ids is not None and len(seq_ids) == b else list(range(b))
                row_lens = lens if lens is not None and len(lens) == b else None
                keys = [noise_key(self.seed, step, micro_batch, s, layer) for s in ids]
                h = _AddNoise.apply(h, self.sigma[slot], keys, row_lens, relative)
                if rest is None:
                    kwargs = {**kwargs, "hidden_states": h}
                    return args, kwargs
                return (h, *rest), kwargs

            return hook

        try:
            for slot, (module, layer) in enumerate(zip(self._targets, self.layer_indices, strict=True)):
                self._handles.append(
                    module.register_forward_pre_hook(make_hook(slot, layer), with_kwargs=True)
                )
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []
