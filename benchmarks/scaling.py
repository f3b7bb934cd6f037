"""One process vs two under torchrun (gloo on CPU): FSDP2 learner, rollouts on every rank. Prints measured
numbers, not a verdict.

    python benchmarks/scaling.py                       # small preset, 6 steps, 2 repeats each, interleaved
    python benchmarks/scaling.py --preset tiny --steps 4 --repeats 3

Both settings run the same recipe from the same post-SFT weights (the study's warm-up cache) with the same
tasks per step, so the two processes each run half of the groups. Per run: episodes/s over the steps after the
first (the first also builds the stream and warms caches) and the peak resident memory of the largest process
(perf/peak_rss_mb). Runs alternate (1, 2, 1, 2, ...) so load drift hits both alike; ratios are per repeat pair
with a standard error. This machine has 2 cores: two processes compete for them with each other and with the
sandbox, so the speed-up here is bounded by the cores, not by the kit. The learner's own memory halves with
FSDP2 (tests/agentrl/test_distributed.py measures the parameter and optimizer bytes); a process's RSS also holds
the Python runtime, torch and the rollout engine's full copy of the model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentrl.run_dir import read_metrics  # noqa: E402
from agentrl.runtime import sandbox_for  # noqa: E402
from agentrl.study.warmup import preset_start  # noqa: E402
from tools.embedded import free_port  # noqa: E402


def run(procs: int, args: list[str]) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="agentrl-scaling-"))
    launcher = [sys.executable, "-m", "agentrl.train"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "agentrl.train"]
    subprocess.run([*launcher, f"run.output_dir={out}", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=3600)
    data = read_metrics(next(out.glob("*/metrics.jsonl")))
    col, later = data.series, range(1, len(data.steps))
    return {"episodes_per_s": sum(col["rollout/episodes"][i] for i in later) / sum(col["perf/step_s"][i] for i in later),
            "peak_rss_mb": max(col["perf/peak_rss_mb"])}


def mean_se(xs: list[float]) -> str:
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return f"{statistics.fmean(xs):.3f} ± {se:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sft-steps", type=int, default=None,
                    help="warm-up steps of the start (default: the recipe's; 0: the untrained model, whose episodes "
                         "run to the token limit: a generation-heavy load without the warm-up's cost)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    print(f"# {os.cpu_count()} CPUs; load average at start {os.getloadavg()}", flush=True)
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with sandbox_for(None) as sandbox:
        start, unmask = preset_start(a.preset, a.sft_steps)
        print(f"# {a.preset}: starting from {start}", flush=True)
        args = [f"model.path={start}", f"model.preset={a.preset}", "sft.steps=0", "sft.copy_steps=0",
                "eval.tasks=0", "run.progress=false", "run.log_trajectories=0", "run.save_every=0",
                f"run.steps={a.steps}", f"run.tasks_per_step={a.tasks}", "learner.strategy=fsdp2",
                f"sandbox.url={sandbox}", *unmask]
        for r in range(a.repeats):
            for procs in (1, 2):
                res = run(procs, args)
                results[procs].append(res)
                print(json.dumps({"processes": procs, "repeat": r, **res}), flush=True)
    print(f"\n# load average at end {os.getloadavg()}")
    speed = [b["episodes_per_s"] / a_["episodes_per_s"] for a_, b in zip(results[1], results[2], strict=True)]
    mem = [b["peak_rss_mb"] / a_["peak_rss_mb"] for a_, b in zip(results[1], results[2], strict=True)]
    print("| processes | episodes/s | peak RSS per process (MiB) |\n|---|---|---|")
    for procs, runs in results.items():
        print(f"| {procs} | {mean_se([x['episodes_per_s'] for x in runs])} | "
              f"{mean_se([x['peak_rss_mb'] for x in runs])} |")
    print(f"\n2 vs 1 process: episodes/s x{mean_se(speed)}, peak RSS per process x{mean_se(mem)}")
    if a.json:
        a.json.write_text(json.dumps({"args": vars(a) | {"json": str(a.json)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
