"""The default CPU learning run, measured (prints numbers; not a test).

    python benchmarks/train_cpu.py [key=value ...]      # same overrides as python -m agentrl.train

Runs the default pipeline (tiny model, SFT warm-up, ALP RL on agentrl/Arithmetic-v0) into a fresh run
directory and prints held-out pass@1 (temperature 1; eval.tasks x eval.samples graded episodes) and greedy
accuracy of the untrained model, after the SFT warm-up and after RL; RL's own gain (after RL minus after SFT)
with its 95% interval, paired over the same tasks; the wall time; and the machine's load average at the start
and the end (the box may be shared: a loaded machine makes the same run slower). The targets checked: the whole
run <= 10 minutes on 2 cores, RL alone >= +0.15, at least 512 graded samples per evaluation.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

from agentrl.config import load_config
from agentrl.train import train

TARGET_MINUTES = 10.0
TARGET_RL_GAIN = 0.15
TARGET_SAMPLES = 512  # graded episodes per evaluation: the standard error of a pass@1 near 0.5 is <= 0.022


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min; {os.cpu_count()} CPUs)"


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv: list[str]) -> None:
    out = tempfile.mkdtemp(prefix="agentrl-bench-")
    config = load_config(None, [f"run.output_dir={out}", "run.progress=false", *argv])
    print(f"load at start           {load()}", flush=True)
    summary = asyncio.run(train(config))
    print(f"load at end             {load()}")
    untrained, sft, after = summary["untrained"], summary["before"], summary["after"]
    stages = [("untrained", untrained), (f"after SFT ({summary['sft_steps']} steps)", sft),
              (f"after RL ({summary['steps']} steps)", after)]
    for name, ev in stages:
        if ev:
            greedy = f" | greedy {ev['eval/greedy_accuracy']:.3f}" if "eval/greedy_accuracy" in ev else ""
            k = int(ev["eval/samples"])
            print(f"{name:<24} pass@1 {ev['eval/accuracy']:.3f}{greedy} | pass@{k} {ev[f'eval/pass@{k}']:.3f} | "
                  f"tool-call rate {ev['eval/tool_call_rate']:.2f} | turns {ev['eval/turns_mean']:.2f}")
    samples = int(config.eval.tasks * config.eval.samples)
    gain = summary["rl_gain"]
    print(f"graded samples per eval {samples} ({config.eval.tasks} tasks x {config.eval.samples}; target >= "
          f"{TARGET_SAMPLES}: {met(samples >= TARGET_SAMPLES)})")
    print(f"RL gain                 {gain['mean']:+.3f} (95% CI [{gain['low']:+.3f}, {gain['high']:+.3f}], "
          f"{'paired over tasks' if gain['paired'] else 'unpaired'}; target >= +{TARGET_RL_GAIN:.2f}: "
          f"{met(gain['mean'] >= TARGET_RL_GAIN)})")
    minutes = summary["wall_s"] / 60
    print(f"wall time               {minutes:.1f} min (target <= {TARGET_MINUTES:.0f}: {met(minutes <= TARGET_MINUTES)})")
    print(f"run directory           {summary['run_dir']}")


if __name__ == "__main__":
    main(sys.argv[1:])
