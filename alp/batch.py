"""The plain batch the learner trains on: turn-concatenated sequences with per-token records.

alp knows nothing about trajectories, chat templates or environments: whoever drives it (agentrl's
trainer or your own) packs each episode into one token sequence with three aligned per-token arrays.

Convention (B sequences, T tokens, right padding):
    token_ids[i][t]          the t-th token of sequence i (prompt, sampled turns, tool outputs, ...)
    loss_mask[i][t]          1 = sampled by the policy in this rollout (in the loss), 0 otherwise
    behavior_logprobs[i][t]  log mu(token_ids[i][t] | token_ids[i][:t]) from the inference engine at
                             sampling time; 0 where loss_mask is 0. Position 0 is always a prompt
                             token with mask 0 (nothing predicts it).
Per sequence: `advantages` (scalar per sequence, or per token [B, T]) or `rewards` + `group_ids` (the
learner computes advantages with the configured estimator); optional `sequence_ids` (stable ids, used
to key the perturbation noise). Sampling settings (`temperature`, `top_p`, `top_k`) are the rollout's:
the learner scores tokens under the same distribution (alp.logprobs).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, fields

import torch

__all__ = ["TrainBatch", "pack_micro_batches"]


def _pad(rows: Sequence[Sequence[float]], dtype: torch.dtype, width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=dtype)  # [B, T]
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.as_tensor(list(r), dtype=dtype)
    return out


def _group_index(group_ids: Sequence[Hashable] | torch.Tensor) -> torch.Tensor:
    if isinstance(group_ids, torch.Tensor):
        return group_ids.long()
    index: dict[Hashable, int] = {}
    return torch.tensor([index.setdefault(g, len(index)) for g in group_ids], dtype=torch.long)


@dataclass
class TrainBatch:
    """B sequences, right-padded to T. Lists of per-sequence lists are padded in __post_init__."""

    token_ids: torch.Tensor
    """[B, T] int64 token ids (lists of lists accepted)."""
    loss_mask: torch.Tensor
    """[B, T] float 1 = policy-sampled token in the loss, 0 = prompt / tool output / padding."""
    behavior_logprobs: torch.Tensor
    """[B, T] float rollout logprob of each token given its prefix; 0 where loss_mask is 0."""
    lengths: torch.Tensor | None = None
    """[B] int64 real length of each sequence; None = derived from lists, or T for every row."""
    advantages: torch.Tensor | None = None
    """[B] or [B, T] float advantages; None = computed by the learner from rewards and group_ids."""
    rewards: torch.Tensor | None = None
    """[B] float scalar episode reward."""
    group_ids: torch.Tensor | None = None
    """[B] int64 group (prompt) of each sequence; any hashables are mapped to ints in order of appearance."""
    sequence_ids: torch.Tensor | None = None
    """[B] int64 stable per-sequence ids (noise keys); None = row index."""
    temperature: float = 1.0
    """Rollout sampling temperature (> 0)."""
    top_p: float = 1.0
    """Rollout nucleus threshold, 1.0 = off."""
    top_k: int = 0
    """Rollout top-k, 0 = off."""

    def __post_init__(self) -> None:
        if not isinstance(self.token_ids, torch.Tensor):
            rows = [list(r) for r in self.token_ids]
            width = max((len(r) for r in rows), default=0)
            if self.lengths is None:
                self.lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
            self.token_ids = _pad(rows, torch.long, width)
        if not isinstance(self.loss_mask, torch.Tensor):
            self.loss_mask = _pad(self.loss_mask, torch.float32, self.token_ids.shape[1])
        if not isinstance(self.behavior_logprobs, torch.Tensor):
            self.behavior_logprobs = _pad(self.behavior_logprobs, torch.float32, self.token_ids.shape[1])
        B, T = self.token_ids.shape
        self.token_ids = self.token_ids.long()
        self.loss_mask = self.loss_mask.float()
        self.behavior_logprobs = self.behavior_logprobs.float()
        if self.lengths is None:
            self.lengths = torch.full((B,), T, dtype=torch.long)
        self.lengths = torch.as_tensor(self.lengths, dtype=torch.long)
        if self.advantages is not None:
            adv = self.advantages
            if not isinstance(adv, torch.Tensor) and len(adv) and isinstance(adv[0], Sequence):
                adv = _pad(adv, torch.float32, T)
            self.advantages = torch.as_tensor(adv, dtype=torch.float32)
        if self.rewards is not None:
            self.rewards = torch.as_tensor(self.rewards, dtype=torch.float32)
        if self.group_ids is not None:
            self.group_ids = _group_index(self.group_ids)
        if self.sequence_ids is not None:
            self.sequence_ids = torch.as_tensor(self.sequence_ids, dtype=torch.long)
        self.validate()

    @classmethod
    def from_lists(
        cls,
        *,
        token_ids: Sequence[Sequence[int]],
        loss_mask: Sequence[Sequence[int | float | bool]],
        behavior_logprobs: Sequence[Sequence[float]],
        advantages: Sequence[float] | Sequence[Sequence[float]] | None = None,
        rewards: Sequence[float] | None = None,
        group_ids: Sequence[Hashable] | None = None,
        sequence_ids: Sequence[int] | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> TrainBatch:
        """Build from plain python lists (one inner list per sequence, equal lengths per sequence)."""
        for name, rows in (("loss_mask", loss_mask), ("behavior_logprobs", behavior_logprobs)):
            if len(rows) != len(token_ids):
                raise ValueError(f"{name} has {len(rows)} sequences but token_ids has {len(token_ids)}")
            for i, (a, b) in enumerate(zip(token_ids, rows, strict=True)):
                if len(a) != len(b):
                    raise ValueError(
                        f"sequence {i}: {name} has {len(b)} entries but token_ids has {len(a)}; "
                        "every per-token list must align with token_ids"
                    )
        return cls(
            token_ids=token_ids,  # type: ignore[arg-type]
            loss_mask=loss_mask,  # type: ignore[arg-type]
            behavior_logprobs=behavior_logprobs,  # type: ignore[arg-type]
            advantages=advantages,  # type: ignore[arg-type]
            rewards=rewards,  # type: ignore[arg-type]
            group_ids=group_ids,  # type: ignore[arg-type]
            sequence_ids=sequence_ids,  # type: ignore[arg-type]
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
        )

    def __len__(self) -> int:
        return self.token_ids.shape[0]

    def validate(self) -> None:
        """Check shapes and the per-token convention; raise ValueError naming the problem and the fix."""
        B, T = self.token_ids.shape
        for name in ("loss_mask", "behavior_logprobs"):
            if tuple(getattr(self, name).shape) != (B, T):
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected {(B, T)}")
        assert self.lengths is not None
        if self.lengths.shape != (B,) or (B and (self.lengths.max() > T or self.lengths.min() < 1)):
            raise ValueError(f"lengths must be [B]={B} values in [1, {T}], got {self.lengths.tolist()}")
        if T and bool((self.loss_mask[:, 0] != 0).any()):
            raise ValueError(
                "loss_mask[:, 0] must be 0: position 0 has no prefix to predict it from "
                "(start every sequence with at least one prompt token)"
            )
        pos = torch.arange(T).unsqueeze(0)  # [1, T]
        if bool((self.loss_mask * (pos >= self.lengths.unsqueeze(1))).any()):
            raise ValueError("loss_mask is 1 beyond a sequence's length; padding must have mask 0")
        if not bool(torch.isfinite(self.behavior_logprobs[self.loss_mask > 0]).all()):
            raise ValueError("behavior_logprobs must be finite where loss_mask is 1 (got inf/nan)")
        if self.advantages is None and (self.rewards is None or self.group_ids is None):
            raise ValueError(
                "give either advantages, or rewards and group_ids (the learner computes advantages)"
            )
        if self.advantages is not None and self.advantages.shape not in ((B,), (B, T)):
            raise ValueError(
                f"advantages has shape {tuple(self.advantages.shape)}, expected ({B},) or {(B, T)}"
            )
        for name in ("rewards", "group_ids", "sequence_ids"):
            v = getattr(self, name)
            if v is not None and v.shape != (B,):
                raise ValueError(f"{name} has shape {tuple(v.shape)}, expected ({B},)")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")

    def select(self, index: torch.Tensor) -> TrainBatch:
        """Rows `index` as a new TrainBatch (tensors indexed, sampling settings kept)."""
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v[index] if isinstance(v, torch.Tensor) else v
        return TrainBatch(**kw)


def pack_micro_batches(lengths: torch.Tensor, rows: torch.Tensor, token_budget: int) -> list[torch.Tensor]:
    """Split `rows` into micro-batches whose padded size (count x longest) fits `token_budget`.

    Rows are sorted by length (longest first, ties by position) so padding stays small; a row longer
    than the budget gets a micro-batch of its own. Deterministic.
    """
    lens = lengths[rows].tolist()
    order = sorted(range(len(lens)), key=lambda i: (-lens[i], i))
    out: list[list[int]] = []
    width = 0
    for i in order:
        if out and (len(out[-1]) + 1) * width <= token_budget:
            out[-1].append(i)
        else:
            out.append([i])
            width = lens[i]
    return [rows[torch.tensor(mb, dtype=torch.long)] for mb in out]
