"""``python -m agentrl.study {mismatch,drift,report}``: the mismatch study, the drift lab and the report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "docs" / "results.md"


def _parser() -> argparse.ArgumentParser:
    from agentrl.study.methods import BASE_METHODS
    from agentrl.study.report import SPIKE_FACTOR

    p = argparse.ArgumentParser(
        prog="python -m agentrl.study",
        description="Training-inference mismatch: does ALP keep the importance-ratio tail and KL in check, and "
        "does it learn better than the corrections in use? See docs/study.md.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{mismatch,drift,report}")

    m = sub.add_parser(
        "mismatch", help="run the study (methods x mismatches x seeds) and write its report",
        description="Train the cached warm-up policy under controlled mismatches with every method, paired "
        "seeds, then write report.md, summary.json and plots/ in the study folder. An interrupted study "
        "resumes: finished runs are kept.",
        epilog="Mismatch parts (join with +): stale<k>, bf16, bf16-logits, fp8-logits, noise<std>, vllm, none. "
        f"Methods: {', '.join(BASE_METHODS)}; ALP ones take @sigma: @0 (no noise), @rel<x>, @abs<x>. "
        "Example: --mismatch stale4+bf16 --methods bypass tis alp@rel0.01 alp-token@0 --seeds 4 --steps 40",
    )
    m.add_argument("--quick", action="store_true",
                   help="the CI-sized plan: tiny, stale4+bf16, 5 methods x 2 seeds x 8 steps (<= 10 min on 2 cores "
                   "once the warm-up is cached)")
    m.add_argument("--preset", choices=["tiny", "small"], help="model preset (default: the plan's, tiny)")
    m.add_argument("--mismatch", nargs="+", metavar="SPEC", help="mismatches to run (replaces the plan's)")
    m.add_argument("--methods", nargs="+", metavar="LABEL", help="methods to run under every mismatch")
    m.add_argument("--seeds", type=int, help="seeds per method")
    m.add_argument("--steps", type=int, help="RL steps per run")
    m.add_argument("--sigma", help="default sigma of ALP methods without @sigma (rel<x> or abs<x>)")
    m.add_argument("--sigma-reg", metavar="ALPHA,BETA",
                   help="sigma regulariser alpha sigma^2 - beta log sigma^2 (paper dev code: 1e-3,1e-3; 0,0 = off)")
    m.add_argument("--sigma-lr", type=float, help="learning rate of log-sigma (default: the preset's, 5e-4)")
    m.add_argument("--updates-per-rollout", type=int, help="optimizer steps per rollout batch (default 1)")
    m.add_argument("--eval-every", type=int, help="held-out eval every N steps (0: after the last step only)")
    m.add_argument("--log-steps", help="steps whose trajectories and weights are kept for the drift lab "
                   "(first,last or numbers)")
    m.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="train-config overrides on top of the plan's, e.g. run.tasks_per_step=16 eval.tasks=256")
    m.add_argument("--workers", type=int, default=None, help="runs in parallel (default: 2 if >= 2 CPUs, else 1)")
    m.add_argument("--out", type=Path, help="study folder (default runs/study-mismatch-<plan>-<preset>)")
    m.add_argument("--write-docs", nargs="?", const=DEFAULT_DOCS, type=Path, metavar="RESULTS_MD",
                   help="also regenerate the study section of docs/results.md")
    m.add_argument("--dry-run", action="store_true", help="print the plan and the runs, run nothing")
    m.add_argument("--no-progress", action="store_true")

    d = sub.add_parser("drift", help="replay a run's trajectories and split the log-ratio drift by cause",
                       description="Replay RUN_DIR's saved trajectories through the trainer on CPU and report the "
                       "log-ratio drift by cause (engine, staleness, truncation, batch/chunk, dtype, turns and tool "
                       "boundaries) with its tails, beside the learned per-layer sigma. Writes RUN_DIR/drift.md "
                       "and drift.json.")
    d.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    d.add_argument("--steps", help="comma-separated logged steps to replay (default: all)")
    d.add_argument("--max-trajectories", type=int, default=64, help="trajectories per step at most")
    d.add_argument("--max-gap", type=int, default=8, help="largest staleness gap (weight versions) to measure")

    r = sub.add_parser("report", help="rebuild a study's report.md, summary.json and plots",
                       description="Rebuild STUDY_DIR/report.md, summary.json and plots/ from its runs; with "
                       "--write-docs also the generated study section of docs/results.md.")
    r.add_argument("study_dir", type=Path, metavar="STUDY_DIR")
    r.add_argument("--write-docs", nargs="?", const=DEFAULT_DOCS, type=Path, metavar="RESULTS_MD",
                   help="also regenerate the study block of docs/results.md (or RESULTS_MD) and copy the plots")
    r.add_argument("--spike-factor", type=float, default=SPIKE_FACTOR,
                   help="KL spike: KL(mu||pi) above this many times the pooled median of the mismatch")
    return p


def _plan(args: argparse.Namespace):
    from agentrl.study.mismatch import FULL, QUICK, Cell

    plan = replace(QUICK if args.quick else FULL)
    if args.preset:
        plan.preset = args.preset
    if args.mismatch or args.methods:
        planned = {c.mismatch: c.methods for c in plan.cells}
        mismatches = args.mismatch or list(planned)
        plan.cells = [Cell(mm, list(args.methods or planned.get(mm) or plan.cells[0].methods)) for mm in mismatches]
    for name in ("seeds", "steps", "sigma", "sigma_lr", "updates_per_rollout", "eval_every", "log_steps"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    if args.sigma_reg is not None:
        try:
            alpha, beta = (float(x) for x in args.sigma_reg.split(","))
        except ValueError:
            raise SystemExit(f"--sigma-reg {args.sigma_reg!r}: write ALPHA,BETA, e.g. 1e-3,1e-3") from None
        plan.sigma_reg = (alpha, beta)
    plan.overrides = [*plan.overrides, *args.overrides]
    if plan.seeds < 1 or plan.steps < 1:
        raise SystemExit(f"--seeds {plan.seeds} and --steps {plan.steps} must be >= 1")
    return plan


def _mismatch(args: argparse.Namespace) -> int:
    import os

    from agentrl.config import ConfigError
    from agentrl.study.mismatch import build_specs, command_line, run_study, train_config
    from agentrl.study.report import write_docs

    plan = _plan(args)
    workers = args.workers if args.workers is not None else (2 if (os.cpu_count() or 1) >= 2 else 1)
    out = args.out or Path("runs") / f"study-mismatch-{plan.name}-{plan.preset}"
    try:
        config = train_config(plan)
        specs, layout = build_specs(plan, out, Path("<warm-up>"), config)
    except (ConfigError, ValueError, KeyError) as exc:
        print(f"study error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"plan": plan.name, "preset": plan.preset, "out": str(out), "runs": len(specs),
                          "steps": plan.steps, "seeds": plan.seeds, "workers": workers,
                          "episodes_per_step": config.run.tasks_per_step * config.rollout.n_samples,
                          "cells": {mm: {"methods": list(v["methods"]), "aliases": v["aliases"]}
                                         for mm, v in layout.items()}}, indent=1))
        return 0
    try:
        summary = run_study(plan, out, workers=workers, command=command_line(), progress=not args.no_progress)
    except ValueError as exc:
        print(f"study error: {exc}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text())
    if args.write_docs:
        print(f"[agentrl.study] wrote {write_docs(out, args.write_docs)}")
    return 1 if summary.get("incomplete") else 0


def _drift(args: argparse.Namespace) -> int:
    import torch

    from agentrl.study.drift import analyse, to_markdown

    torch.set_num_threads(1)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    try:
        result = analyse(args.run_dir, steps=steps, max_trajectories=args.max_trajectories, max_gap=args.max_gap)
    except (FileNotFoundError, ValueError) as exc:
        print(f"drift error: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(result)
    (args.run_dir / "drift.md").write_text(text)
    (args.run_dir / "drift.json").write_text(json.dumps(result, indent=1, default=str))
    print(text)
    return 0


def _report(args: argparse.Namespace) -> int:
    from agentrl.study.report import write_docs, write_report

    try:
        write_report(args.study_dir, spike_factor=args.spike_factor)
    except FileNotFoundError as exc:
        print(f"report error: {exc}", file=sys.stderr)
        return 2
    print((args.study_dir / "report.md").read_text())
    if args.write_docs:
        print(f"[agentrl.study] wrote {write_docs(args.study_dir, args.write_docs, spike_factor=args.spike_factor)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[agentrl.study] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return {"mismatch": _mismatch, "drift": _drift, "report": _report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
