"""PNG plots of a run's metrics.jsonl (matplotlib, headless)."""

from __future__ import annotations

import json
import math
from pathlib import Path

# panel file name -> (title, metric-name predicate)
PANELS: dict[str, tuple[str, object]] = {
    "reward_accuracy": ("Reward and accuracy", lambda k: k in (
        "rollout/reward_mean", "rollout/accuracy", "rollout/tool_call_rate", "eval/accuracy")),
    "ratio": ("Importance ratio pi/mu (quantiles, max)", lambda k: k.startswith("ratio/q") or k in (
        "ratio/max", "ratio/mean")),
    "kl": ("KL(mu || pi) estimates", lambda k: k.startswith("kl/")),
    "clip": ("Clip fractions", lambda k: k.startswith("clip/") and k.endswith("_frac")),
    "sigma": ("Per-layer sigma", lambda k: k.startswith("sigma/") and k not in ("sigma/min", "sigma/max")),
    "lengths": ("Response length and turns", lambda k: k in (
        "rollout/response_length_mean", "rollout/turns_mean", "rollout/tool_calls_per_episode")),
}


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def plot_metrics(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per panel; returns the files written (panels with no data are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted({k for r in rows for k in r if k not in ("step", "time")})
    written = []
    for stem, (title, wanted) in PANELS.items():
        keys = [k for k in names if wanted(k)]  # type: ignore[operator]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r and isinstance(r[k], (int, float))
                   and math.isfinite(r[k])]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o" if len(pts) < 30 else None, ms=3, label=k)
        if stem in ("ratio", "kl") and any(
                r.get(k, 0) > 0 for r in rows for k in keys if isinstance(r.get(k), (int, float))):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
