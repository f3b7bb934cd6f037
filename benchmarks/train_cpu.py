"""The default CPU learning run, measured (prints numbers; not a test).

    python benchmarks/train_cpu.py [key=value ...]      # same overrides as python -m agentrl.train

Runs the default pipeline (tiny model, SFT warm-up, ALP RL on agentrl/Arithmetic-v0) into a fresh run
directory and prints held-out accuracy and tool-call rate before vs after, and the wall time, against the
issue's target (<= 10 minutes on 2 cores, accuracy up by >= 0.3 absolute).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

from agentrl.config import load_config
from agentrl.train import train


def main(argv: list[str]) -> None:
    out = tempfile.mkdtemp(prefix="agentrl-bench-")
    config = load_config(None, [f"run.output_dir={out}", "run.progress=false", *argv])
    summary = asyncio.run(train(config))
    before, after = summary["before"], summary["after"]
    gain = after["eval/accuracy"] - before["eval/accuracy"]
    minutes = summary["wall_s"] / 60
    print(f"held-out accuracy   {before['eval/accuracy']:.3f} -> {after['eval/accuracy']:.3f} "
          f"(+{gain:.3f}; target >= +0.300: {'met' if gain >= 0.3 else 'MISSED'})")
    print(f"tool-call rate      {before['eval/tool_call_rate']:.2f} -> {after['eval/tool_call_rate']:.2f}")
    print(f"pass@1              {before.get('eval/pass@1', 0):.3f} -> {after.get('eval/pass@1', 0):.3f}")
    print(f"wall time           {minutes:.1f} min (target <= 10: {'met' if minutes <= 10 else 'MISSED'})")
    print(f"run directory       {summary['run_dir']}")


if __name__ == "__main__":
    main(sys.argv[1:])
