"""Synchronous vs overlapped rollouts (run.async), measured: episodes/s, idle shares, reward after N steps.

    python benchmarks/pipeline.py                          # tiny and small presets, 8 steps, 3 repeats each
    python benchmarks/pipeline.py --presets tiny --steps 12 --repeats 4 --json out.json

Every run starts from the same post-SFT weights of its preset (built once by the study's warm-up cache, so the
policy solves some tasks and rewards vary) and trains with the same seed, tasks and learner on the HF backend
with the real sandbox. Modes: sync (rollout, then update), async with max_staleness 1 and 2 (generation goes on
during the update, at most k versions ahead). The modes run interleaved (sync, async1, async2, sync, ...), so
machine load drifts over all of them alike; each mode's episodes/s is the mean over repeats of (episodes of the
steps after the first) / (their wall time), printed with its standard error, and the async/sync ratio with
a standard error from the per-repeat pairs. Reward: the mean training reward of the last half of the steps.
The CPU count bounds what overlap can win: generation and the update share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentrl.config import load_config  # noqa: E402
from agentrl.run_dir import read_metrics  # noqa: E402
from agentrl.runtime import sandbox_for  # noqa: E402
from agentrl.study.warmup import preset_start  # noqa: E402
from agentrl.train import train  # noqa: E402

MODES = {"sync": [], "async-k1": ["run.async=true", "rollout.max_staleness=1"],
         "async-k2": ["run.async=true", "rollout.max_staleness=2"]}


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan"))


def run_once(preset: str, mode: str, start: Path, steps: int, seed: int, sandbox: str,
             extra: list[str]) -> dict[str, float]:
    out = tempfile.mkdtemp(prefix="agentrl-pipeline-")
    config = load_config(None, [f"run.output_dir={out}", "run.progress=false", f"run.steps={steps}", "sft.steps=0",
                                "sft.copy_steps=0", "eval.tasks=0", "run.log_trajectories=0", "run.save_every=0",
                                f"model.path={start}", f"model.preset={preset}", f"run.seed={seed}",
                                f"sandbox.url={sandbox}", *MODES[mode], *extra])
    summary = asyncio.run(train(config))
    data = read_metrics(Path(summary["run_dir"]) / "metrics.jsonl")
    col = data.series
    later = range(1, len(data.steps))  # the first step also starts the stream: leave it out
    wall = sum(col["perf/step_s"][i] for i in later)
    episodes = sum(col["rollout/episodes"][i] for i in later)
    half = range(len(data.steps) // 2, len(data.steps))
    return {"episodes_per_s": episodes / wall,
            "generator_idle": statistics.fmean(col["perf/generator_idle_share"][i] for i in later),
            "learner_idle": statistics.fmean(col["perf/learner_idle_share"][i] for i in later),
            "reward": statistics.fmean(col["rollout/reward_mean"][i] for i in half),
            "staleness": statistics.fmean(col["rollout/staleness_mean"][i] for i in later)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sft-steps", type=int, default=None,
                    help="warm-up steps of the start (default: the recipe's; 0: the untrained model: rewards are "
                         "all 0, episodes run to the token limit)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(f"# {os.cpu_count()} CPUs; load average at start {os.getloadavg()}", flush=True)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with sandbox_for(None) as sandbox:
        for preset in args.presets:
            start, extra = preset_start(preset, args.sft_steps)
            print(f"# {preset}: starting from {start}", flush=True)
            per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            for r in range(args.repeats):
                for mode in MODES:
                    res = run_once(preset, mode, start, args.steps, args.seed + r, sandbox, extra)
                    per_mode[mode].append(res)
                    print(json.dumps({"preset": preset, "mode": mode, "repeat": r, **res}), flush=True)
            results[preset] = per_mode
    print(f"\n# load average at end {os.getloadavg()}")
    print("| preset | mode | episodes/s | vs sync | generator idle | learner idle | reward (last half) | staleness |")
    print("|---|---|---|---|---|---|---|---|")
    for preset, per_mode in results.items():
        sync = [r["episodes_per_s"] for r in per_mode["sync"]]
        for mode, runs in per_mode.items():
            eps = [r["episodes_per_s"] for r in runs]
            ratio = mean_se([a / b for a, b in zip(eps, sync, strict=True)])
            cells = [mean_se(eps), mean_se([r["generator_idle"] for r in runs]),
                     mean_se([r["learner_idle"] for r in runs]), mean_se([r["reward"] for r in runs])]
            print(f"| {preset} | {mode} | {cells[0][0]:.2f} ± {cells[0][1]:.2f} | {ratio[0]:.2f}x ± {ratio[1]:.2f} | "
                  f"{cells[1][0]:.2f} | {cells[2][0]:.2f} | {cells[3][0]:.3f} ± {cells[3][1]:.3f} | "
                  f"{statistics.fmean(r['staleness'] for r in runs):.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=1))


if __name__ == "__main__":
    main()
