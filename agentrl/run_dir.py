"""A training run's folder: everything ``python -m agentrl.train`` writes and ``--resume`` reads back.

    RUN_DIR/config.yaml                    the resolved config
    RUN_DIR/metrics.jsonl                  one JSON object per step ({"step": N, "<prefix>/<name>": value})
    RUN_DIR/eval.json                      held-out evaluations by label (base, before, step_N, after)
    RUN_DIR/trajectories/step_NNNNNN.jsonl logged trajectories (samples.txt renders one per step)
    RUN_DIR/checkpoints/step_NNNNNN/       model/ (an HF folder) + state.pt, written atomically, last K kept
    RUN_DIR/plots/*.png                    curves of metrics.jsonl
    RUN_DIR/sft/, final/, tokenizer/       the post-warm-up model, the final model, the tokenizer

The metrics file is the run's record: ``MetricsLog`` writes it (and TensorBoard / W&B when asked),
``read_metrics`` reads it back tolerantly (the viewer and the plots share it).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the run viewer reads metrics through this module and must not import torch
    from agentrl.rollout.trajectory import Trajectory

CHECKPOINTS = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"step_(\d{6})$")


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    """output_dir/name, or name-1, name-2, ... when it exists: an earlier run is never overwritten."""
    base = Path(output_dir) / name
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir = base.with_name(f"{base.name}-{n}")
        n += 1
    run_dir.mkdir(parents=True)
    return run_dir


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class MetricsLog:
    """metrics.jsonl always; TensorBoard and W&B when asked for (their packages are then required).

    ``resume_step``: lines of later steps are dropped (a resumed run redoes them); -1 keeps none of them.
    """

    def __init__(self, run_dir: Path, *, resume_step: int | None = None, tensorboard: bool = False,
                 wandb_config: dict[str, Any] | None = None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", -1) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.tb = self.wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if wandb_config is not None:
            import wandb

            self.wandb = wandb.init(project="agentrl", name=Path(run_dir).name, config=wandb_config, resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: _finite(v) for k, v in metrics.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        present = {k: v for k, v in clean.items() if v is not None}
        if self.tb is not None:
            for k, v in present.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(present, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


@dataclass
class MetricSeries:
    """metrics.jsonl as columns: one entry per readable line, sorted by step; None for a missing or
    non-finite value (a gap in a curve)."""

    steps: list[int] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)
    bad_lines: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "series": self.series, "bad_lines": self.bad_lines}


def natural_order(name: str) -> tuple[Any, ...]:
    """Natural order so sigma/layer_10 follows sigma/layer_9 and q01 < q05 < q50 < q99."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def read_metrics(path: str | Path) -> MetricSeries:
    """Read metrics.jsonl tolerantly: lines may lack a metric, hold NaN or inf, or be cut off (a run still
    writing); unreadable lines are counted in ``bad_lines`` and skipped."""
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
    names = sorted({k for r in rows for k in r if k != "step"}, key=natural_order)
    out = MetricSeries(steps=[int(r["step"]) for r in rows], bad_lines=bad)
    for name in names:
        out.series[name] = [_finite(r.get(name)) for r in rows]
    return out


# panel file name -> (title, metric-name predicate)
PLOT_PANELS: dict[str, tuple[str, Any]] = {
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


def plot_metrics(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per panel of PLOT_PANELS (matplotlib, headless); returns the files written (panels with no
    data are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_metrics(metrics_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, (title, wanted) in PLOT_PANELS.items():
        keys = [k for k in data.series if wanted(k)]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        positive = False
        for k in keys:
            pts = [(s, v) for s, v in zip(data.steps, data.series[k], strict=True) if v is not None]
            positive |= any(v > 0 for _, v in pts)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o" if len(pts) < 30 else None, ms=3, label=k)
        if stem in ("ratio", "kl") and positive:
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


# ---------------------------------------------------------------------------------------------------
# Evaluations and logged trajectories
# ---------------------------------------------------------------------------------------------------
def read_evals(run_dir: Path) -> dict[str, dict[str, float]]:
    path = Path(run_dir) / "eval.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_evals(run_dir: Path, evals: dict[str, dict[str, float]]) -> None:
    (Path(run_dir) / "eval.json").write_text(json.dumps(evals, indent=2))


def write_trajectories(run_dir: Path, step: int, trajectories: list[Trajectory], tokenizer: Any, n: int) -> None:
    """The first ``n`` trajectories to trajectories/step_NNNNNN.jsonl and the first one, rendered, to
    samples.txt."""
    from agentrl.rollout.trajectory import write_jsonl

    if n <= 0 or not trajectories:
        return
    folder = Path(run_dir) / "trajectories"
    folder.mkdir(exist_ok=True)
    chosen = trajectories[:n]
    write_jsonl(folder / f"step_{step:06d}.jsonl", chosen)
    with open(Path(run_dir) / "samples.txt", "a", encoding="utf-8") as f:
        t = chosen[0]
        f.write(f"=== step {step} | reward {t.reward} | stop {t.stop_reason} | turns {t.num_turns} ===\n")
        f.write(t.render(tokenizer) + "\n\n")


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------
def save_final(model: Any, tokenizer: Any, folder: Path, state_dict: dict[str, Any] | None = None) -> None:
    """The trained model as an ordinary HF folder (``from_pretrained`` loads it); LoRA adapters are merged into
    the base weights first (this consumes the adapter wrapper: call it last) and also kept in folder/adapter.
    ``state_dict``: the whole tensors to write (a sharded model's, gathered)."""
    if hasattr(model, "peft_config"):
        model.save_pretrained(Path(folder) / "adapter")
        model, state_dict = model.merge_and_unload(), None
    model.save_pretrained(folder, state_dict=state_dict)
    tokenizer.save_pretrained(folder)


def save_checkpoint(run_dir: Path, step: int, model: Any, tokenizer: Any, state: dict[str, Any], *,
                    keep_last: int, sharded: dict[str, Any] | None = None, lead: bool = True) -> Path:
    """checkpoints/step_NNNNNN/{model/, state.pt}: written under a temporary name, then renamed, so a
    checkpoint folder exists only once complete; keeps the last ``keep_last``.

    ``sharded`` (a sharded learner's state, each rank's shards): every rank calls this, the shards go to
    ``learner/`` with torch.distributed.checkpoint (each rank writes its own), and only the ``lead`` rank writes
    state.pt and renames; there is no ``model/`` (``final/`` holds the whole model at the end)."""
    import torch

    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-step_{step:06d}"
    if lead:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    if sharded is not None:
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp

        dist.barrier()  # the lead made the folder
        dcp.save(sharded, checkpoint_id=tmp / "learner")  # collective: returns once every rank's shards are written
    if not lead:
        return final
    if sharded is None:
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
    torch.save(state, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_sharded(path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """A sharded learner state saved by save_checkpoint, read into ``template`` (the learner's current
    state_dict, which says each rank's shards); a collective. Resuming on the same world size is exact."""
    import torch.distributed.checkpoint as dcp

    dcp.load(template, checkpoint_id=Path(path) / "learner")
    return template


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _CHECKPOINT_NAME.match(p.name))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_step(path: Path) -> int:
    match = _CHECKPOINT_NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint folder (step_NNNNNN)")
    return int(match.group(1))


def load_state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
