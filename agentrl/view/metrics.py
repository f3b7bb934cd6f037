"""Metric names to the viewer's curve panels (metrics.jsonl itself is read by agentrl.run_dir.read_metrics).

Panels are chosen by name prefix, not by a fixed list, because the learner's metric names (ratio quantiles,
per-layer sigma) vary with config.
"""

from __future__ import annotations

import re
from typing import Any

from agentrl.run_dir import MetricSeries, natural_order, read_metrics

__all__ = ["PANELS", "MetricSeries", "panel_of", "panels", "read_metrics"]

PANELS: tuple[tuple[str, str], ...] = (
    ("reward", "Reward & accuracy"),
    ("ratio", "Ratio (learner / behavior)"),
    ("kl", "KL"),
    ("clip", "Clip fractions"),
    ("sigma", "Per-layer sigma"),
    ("lengths", "Lengths, turns & tools"),
    ("entropy", "Entropy & grad norm"),
    ("loss", "Loss"),
    ("perf", "Perf"),
    ("other", "Other"),
)
"""Panel keys in display order with their titles."""


def panel_of(name: str) -> str:
    """Which panel a metric name belongs to (see :data:`PANELS`)."""
    prefix, _, rest = name.partition("/")
    if not rest:
        prefix, rest = "", name
    low = name.lower()
    if prefix in ("ratio", "kl", "clip", "sigma", "loss", "perf"):
        return prefix
    if prefix in ("rollout", "eval", "train", ""):
        if re.search(r"reward|accuracy|correct|pass@|success", rest.lower()) and "tool" not in low:
            return "reward"
        if re.search(r"length|turns|tokens|tool", rest.lower()):
            return "lengths"
        if rest.lower() in ("entropy", "grad_norm") or prefix == "" and re.search(r"entropy|grad", low):
            return "entropy"
        if prefix == "" and re.search(r"kl", low):
            return "kl"
    if re.search(r"entropy|grad_norm", low):
        return "entropy"
    return "other"


def panels(names: list[str] | set[str]) -> list[dict[str, Any]]:
    """Non-empty panels in display order: ``[{"key", "title", "series": [names]}]``. ``time`` is skipped."""
    groups: dict[str, list[str]] = {key: [] for key, _ in PANELS}
    for name in sorted(set(names), key=natural_order):
        if name == "time":
            continue
        groups[panel_of(name)].append(name)
    return [{"key": key, "title": title, "series": groups[key]} for key, title in PANELS if groups[key]]
