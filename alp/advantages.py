"""Group-relative advantage estimators (one scalar per sequence, broadcast over its sampled tokens).

| estimator     | A_i                                        | source                                    |
|---------------|--------------------------------------------|-------------------------------------------|
| `grpo`        | (r_i - mean_g) / (std_g + eps)             | DeepSeekMath (Shao et al. 2024); std is   |
|               |                                            | the unbiased sample std, as TRL and verl  |
| `grpo_no_std` | r_i - mean_g                               | TRL scale_rewards=False                   |
| `dr_grpo`     | r_i - mean_g (same advantage as            | Dr.GRPO (Liu et al. 2025): the other half |
|               | grpo_no_std)                               | of the fix is loss_agg seq-mean-token-sum |
| `rloo`        | r_i - mean_{j != i} r_j = G/(G-1)(r_i - m) | Ahmadian et al. 2024                      |

A group of one sequence has no baseline: its advantage is 0 (it carries no learning signal).
Shapes: B sequences, T tokens, G groups.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ESTIMATORS", "compute_advantages", "broadcast_advantages", "flat_groups"]

ESTIMATORS = ("grpo", "grpo_no_std", "dr_grpo", "rloo")


def compute_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, estimator: str = "grpo", eps: float = 1e-6
) -> torch.Tensor:
    """rewards [B], group_ids [B] (any int labels) -> advantages [B] float32."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: choose one of {ESTIMATORS}")
    rewards = torch.as_tensor(rewards, dtype=torch.float64)  # [B]
    group_ids = torch.as_tensor(group_ids)
    _, g = torch.unique(group_ids, return_inverse=True)  # [B] dense group index
    G = int(g.max()) + 1 if g.numel() else 0
    n = torch.zeros(G, dtype=torch.float64).index_add_(0, g, torch.ones_like(rewards))  # [G]
    s = torch.zeros(G, dtype=torch.float64).index_add_(0, g, rewards)  # [G]
    mean = (s / n)[g]  # [B]
    centred = rewards - mean  # [B]
    size = n[g]  # [B]
    if estimator == "grpo":
        ss = torch.zeros(G, dtype=torch.float64).index_add_(0, g, centred**2)  # [G]
        std = torch.sqrt(ss / (n - 1).clamp(min=1))[g]  # [B] unbiased
        adv = centred / (std + eps)  # [B]
    elif estimator == "rloo":
        adv = centred * size / (size - 1).clamp(min=1)  # [B]
    else:  # grpo_no_std, dr_grpo
        adv = centred  # [B]
    adv = torch.where(size > 1, adv, torch.zeros_like(adv))  # [B]
    return adv.float()


def broadcast_advantages(advantages: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence [B] (or already per-token [B, T]) advantages -> [B, T], zero where loss_mask is 0."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # [B, 1]
    return advantages * loss_mask  # [B, T]


def flat_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """rewards [B], group_ids [B] -> [G] bool (groups in sorted id order): True where every reward of the group
    is the same (a group of one included). Every estimator gives such a group zero advantage: it carries no
    learning signal."""
    rewards = torch.as_tensor(rewards, dtype=torch.float64)  # [B]
    _, g = torch.unique(torch.as_tensor(group_ids), return_inverse=True)  # [B]
    G = int(g.max()) + 1 if g.numel() else 0
    high = torch.full((G,), -math.inf, dtype=torch.float64).scatter_reduce(0, g, rewards, "amax")  # [G]
    low = torch.full((G,), math.inf, dtype=torch.float64).scatter_reduce(0, g, rewards, "amin")  # [G]
    return high == low
