"""Summary statistics of per-token values (ratios, log-ratios) for the learner's and the studies' metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["quantiles"]


def quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """The `qs` quantiles of a 1-d tensor, linearly interpolated as ``torch.quantile`` does, without its
    16M-element limit (one sort). An empty tensor gives NaN for every quantile."""
    x = torch.sort(values.reshape(-1).double()).values  # [N]
    n = x.numel()
    if n == 0:
        return [math.nan for _ in qs]
    out = []
    for q in qs:
        if not 0 <= q <= 1:
            raise ValueError(f"quantile {q} must be in [0, 1]")
        pos = q * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        out.append(float(x[lo] + (x[hi] - x[lo]) * (pos - lo)))
    return out
