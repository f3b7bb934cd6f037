"""metrics.jsonl to plottable series, and series names to curve panels.

Each line is ``{"step": int, "time": float, "<prefix>/<name>": float, ...}``. Lines may lack a metric,
hold NaN or inf, or be cut off (a run still writing): missing and non-finite values become ``None``
(a gap in the curve), unreadable lines are counted and skipped. Panels are chosen by name prefix, not
by a fixed list, because the learner's metric names (ratio quantiles, per-layer sigma) vary with config.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _sort_key(name: str) -> tuple[Any, ...]:
    """Natural order so sigma/layer_10 follows sigma/layer_9 and q01 < q05 < q50 < q99."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class MetricSeries:
    steps: list[int] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)
    bad_lines: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "series": self.series, "bad_lines": self.bad_lines}


def read_metrics(path: str | Path) -> MetricSeries:
    """Columns of metrics.jsonl, one entry per readable line, sorted by step."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    bad = 0
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)  # accepts NaN / Infinity, which json.dumps writes for floats
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if not isinstance(row, dict) or _finite(row.get("step")) is None:
                    bad += 1
                    continue
                rows.append(row)
    rows.sort(key=lambda r: r["step"])
    names = sorted({k for r in rows for k in r if k != "step"}, key=_sort_key)
    out = MetricSeries(steps=[int(r["step"]) for r in rows], bad_lines=bad)
    for name in names:
        out.series[name] = [_finite(r.get(name)) for r in rows]
    return out


def panels(names: list[str] | set[str]) -> list[dict[str, Any]]:
    """Non-empty panels in display order: ``[{"key", "title", "series": [names]}]``. ``time`` is skipped."""
    groups: dict[str, list[str]] = {key: [] for key, _ in PANELS}
    for name in sorted(set(names), key=_sort_key):
        if name == "time":
            continue
        groups[panel_of(name)].append(name)
    return [{"key": key, "title": title, "series": groups[key]} for key, title in PANELS if groups[key]]
