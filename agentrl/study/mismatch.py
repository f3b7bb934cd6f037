"""The mismatch study: methods x mismatches x seeds from one starting policy, then the report.

    python -m agentrl.study mismatch --quick                 # <= 10 minutes on 2 cores (after the warm-up)
    python -m agentrl.study mismatch                         # the full study (hours; see docs/study.md)
    python -m agentrl.study mismatch --preset small --mismatch stale4+bf16 --methods bypass tis alp --seeds 4

Steps: resolve the train config (agentrl.config defaults, the plan's overrides, then ``--set``), find or
build the cached warm-up (:mod:`agentrl.study.warmup`), evaluate it once on the held-out tasks, run every
(mismatch, method, seed) cell with :func:`agentrl.study.run.train_run` in ``--workers`` processes (a cell
whose summary.json exists is skipped, so an interrupted study resumes), then write the report
(:mod:`agentrl.study.report`).

Folder: STUDY_DIR/study.json (the plan, command, versions), start_eval.json, runs/<cell>/<method>/seed<k>/
(one run each; a cell is a mismatch, with -u<n> when it takes n optimizer steps per rollout), report.md,
summary.json, plots/*.png.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("agentrl.study")

STUDY_FILE = "study.json"
START_EVAL_FILE = "start_eval.json"


@dataclass
class Cell:
    """A mismatch and the methods run under it (with its own updates per rollout, if given)."""

    mismatch: str
    methods: list[str]
    updates_per_rollout: int | None = None
    """Optimizer steps per rollout batch in this cell (None: the plan's)."""

    def key(self, plan_updates: int) -> str:
        """The cell's name in folders and reports: the canonical mismatch, plus -u<n> for n updates per rollout."""
        from agentrl.inference.mismatch import MismatchSpec

        n = self.updates_per_rollout or plan_updates
        name = MismatchSpec.parse(self.mismatch).name
        return name if n == plan_updates and self.updates_per_rollout is None else f"{name}-u{n}"


@dataclass
class StudyPlan:
    """What a study runs. The numbers of the train config (lr, batch, env, rollout) come from agentrl.config
    at run time; ``overrides`` only change what the plan names."""

    name: str
    preset: str
    cells: list[Cell]
    seeds: int
    steps: int
    sigma: str = "rel0.01"
    """Default sigma of ALP methods written without @sigma."""
    sigma_reg: tuple[float, float] = (1e-3, 1e-3)
    """(alpha, beta) of the sigma regulariser alpha sigma^2 - beta log sigma^2 (paper dev code: 1e-3, 1e-3)."""
    sigma_lr: float | None = None
    """Override of the sigma learning rate (None: the preset's, paper 5e-4)."""
    updates_per_rollout: int = 1
    """Optimizer steps per rollout batch (mini-batches); the default CPU config takes one."""
    eval_every: int = 0
    log_steps: str = "first,last"
    """Steps whose trajectories and weights are kept for the drift lab: first, last, or numbers."""
    overrides: list[str] = field(default_factory=list)
    """key=value overrides of the train config (run.tasks_per_step=8, eval.tasks=128, ...)."""

    def runs(self) -> int:
        return sum(len(c.methods) for c in self.cells) * self.seeds


# Core methods and the controls that isolate the noise: bypass is Seq-ALP with sigma = 0 (same objective
# and clip), alp-token@0 is Token-ALP with sigma = 0, bypass-ppo is bypass with the usual [0.8, 1.2] clip.
CORE = ["bypass", "bypass-ppo", "tis", "mis", "icepop", "gspo", "alp", "alp-token", "alp-token@0"]
LAYERS = ["alp-early", "alp-middle", "alp-late", "alp-logits"]
SIGMA_SWEEP = ["alp@abs1e-6", "alp@abs0.01", "alp@abs0.05", "alp@rel0.003", "alp@rel0.03", "alp@rel0.1"]

# Sized to finish in <= 10 minutes on 2 cores with the warm-up cached (2 worker processes): 10 runs x 8 steps of
# 8 tasks x n_samples episodes. Two seeds resolve nothing small; it shows the machinery and the direction.
QUICK = StudyPlan(
    name="quick", preset="tiny", seeds=2, steps=8,
    cells=[Cell("stale4+bf16", ["bypass", "tis", "alp", "alp-token", "alp-token@0"])],
    overrides=["run.tasks_per_step=8", "eval.tasks=64"],
)
FULL = StudyPlan(
    name="full", preset="tiny", seeds=4, steps=40, eval_every=10,
    cells=[
        Cell("stale4+bf16", CORE + LAYERS + SIGMA_SWEEP),
        Cell("stale4+bf16", ["bypass", "bypass-ppo", "tis", "alp", "alp-token", "alp-token@0"], updates_per_rollout=4),
        Cell("stale4", ["bypass", "tis", "alp", "alp-token", "alp-token@0"]),
        Cell("bf16", ["bypass", "tis", "alp", "alp-token", "alp-token@0"]),
        Cell("fp8-logits", ["bypass", "tis", "alp", "alp-token", "alp-token@0"]),
        Cell("noise0.05", ["bypass", "tis", "alp", "alp-token", "alp-token@0"]),
    ],
    overrides=["eval.tasks=128"],
)


def parse_log_steps(text: str, steps: int) -> list[int]:
    out = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if part == "first":
            out.add(0)
        elif part == "last":
            out.add(steps - 1)
        elif part.isdigit() and int(part) < steps:
            out.add(int(part))
        else:
            raise ValueError(f"log steps {text!r}: use first, last or step numbers below steps={steps}")
    return sorted(out)


def train_config(plan: StudyPlan) -> Any:
    """The study's TrainConfig: agentrl.config defaults <- model.preset <- the plan's overrides."""
    from agentrl.config import load_config

    return load_config(None, [f"model.preset={plan.preset}", *plan.overrides])


def build_specs(plan: StudyPlan, study_dir: Path, start: Path, config: Any) -> tuple[list[Any], dict[str, Any]]:
    """RunSpecs for every cell, seed-major (all methods of seed 0 first: partial results stay paired)."""
    from agentrl.inference.mismatch import MismatchSpec
    from agentrl.study.methods import resolve_methods
    from agentrl.study.run import RunSpec

    B = config.run.tasks_per_step * config.rollout.n_samples
    log_steps = parse_log_steps(plan.log_steps, plan.steps)
    specs, layout = [], {}
    resolved = []
    for cell in plan.cells:
        mm = MismatchSpec.parse(cell.mismatch)
        key = cell.key(plan.updates_per_rollout)
        if key in layout:
            raise ValueError(f"mismatch {cell.mismatch!r} is given twice with the same updates per rollout")
        updates = cell.updates_per_rollout or plan.updates_per_rollout
        if updates < 1:
            raise ValueError(f"updates per rollout {updates} must be >= 1")
        base = dict(config.learner.overrides)
        if updates > 1:
            base["mini_batch_size"] = -(-B // updates)
        methods, aliases = resolve_methods(cell.methods, default_sigma=plan.sigma, base=base,
                                           sigma_reg=tuple(plan.sigma_reg), sigma_lr=plan.sigma_lr)
        resolved.append((key, mm, methods))
        describe = mm.describe() + (f"; {updates} optimizer steps per rollout" if updates > 1 else "")
        layout[key] = {"mismatch": mm.name, "updates_per_rollout": updates, "describe": describe,
                       "methods": {m.label: m.config for m in methods}, "aliases": aliases,
                       "controls": {m.label: m.control for m in methods if m.control}}
    for seed in range(plan.seeds):
        for key, mm, methods in resolved:
            for m in methods:
                run_dir = study_dir / "runs" / key / m.label / f"seed{seed}"
                specs.append(RunSpec(run_dir=str(run_dir), start=str(start), mismatch=mm.name, method=m.label,
                                     learner=m.config, seed=seed, steps=plan.steps,
                                     train_config=config.to_dict(), eval_every=plan.eval_every,
                                     log_steps=log_steps, cell=key))
    return specs, layout


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpus": str(os.cpu_count())}


def run_study(plan: StudyPlan, study_dir: Path, *, workers: int = 1, command: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the study in ``study_dir`` and write its report; returns the report summary."""
    import torch
    from tqdm import tqdm

    from agentrl.runtime import sandbox_for
    from agentrl.study.report import write_report
    from agentrl.study.run import SUMMARY_FILE, run_in_worker
    from agentrl.study.warmup import ensure_warmup

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    config = train_config(plan)
    plan_dict = asdict(plan)
    study_dir.mkdir(parents=True, exist_ok=True)
    meta_path = study_dir / STUDY_FILE
    previous = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if previous is not None and previous.get("plan") != json.loads(json.dumps(plan_dict)):
        raise ValueError(f"{study_dir} holds a study with another plan; pass --out NEW_DIR (or delete it) "
                         "to run this one")
    with sandbox_for(config.sandbox.url):
        t_warm = time.perf_counter()
        start = ensure_warmup(config, progress=progress)
        warm_s = time.perf_counter() - t_warm
        specs, layout = build_specs(plan, study_dir, start, config)
        meta = {
            "plan": plan_dict, "command": command, "train_config": config.to_dict(), "start": str(start),
            "layout": layout, "versions": _versions(), "workers": workers,
            "started": previous.get("started") if previous else time.strftime("%Y-%m-%d %H:%M:%S"),
            "wall_s": (previous or {}).get("wall_s", 0.0),
        }
        meta_path.write_text(json.dumps(meta, indent=2, default=str))
        start_eval_path = study_dir / START_EVAL_FILE
        if not start_eval_path.exists():
            start_eval_path.write_text(json.dumps(asyncio.run(_eval_start(start, config)), indent=2))
        todo = [s for s in specs if not (Path(s.run_dir) / SUMMARY_FILE).exists()]
        log.info("study %s: %d runs (%d to do), %d steps each, %d worker(s); start %s (warm-up %.0f s)",
                 study_dir, len(specs), len(todo), plan.steps, workers, start, warm_s)
        bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="runs", disable=not progress)
        failures = []
        if workers <= 1:
            for spec in todo:
                try:
                    done = run_in_worker(asdict(spec))
                    bar.set_postfix_str(f"{done['cell']} {done['method']} s{done['seed']} {done['wall_s']:.0f}s")
                except Exception as exc:  # one failed run must not lose the others
                    log.exception("run %s failed", spec.run_dir)
                    failures.append((spec.run_dir, repr(exc)))
                bar.update(1)
        else:
            import multiprocessing

            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(run_in_worker, asdict(s)): s for s in todo}
                for fut in as_completed(futures):
                    try:
                        done = fut.result()
                        bar.set_postfix_str(f"{done['cell']} {done['method']} s{done['seed']} "
                                            f"{done['wall_s']:.0f}s")
                    except Exception as exc:
                        log.error("run %s failed: %r", futures[fut].run_dir, exc)
                        failures.append((futures[fut].run_dir, repr(exc)))
                    bar.update(1)
        bar.close()
    meta["wall_s"] = meta["wall_s"] + (time.perf_counter() - t0)
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    meta["failures"] = failures
    meta_path.write_text(json.dumps(meta, indent=2, default=str))
    summary = write_report(study_dir)
    if failures:
        log.error("%d run(s) failed: %s", len(failures), failures)
    return summary


async def _eval_start(start: Path, config: Any) -> dict[str, float]:
    """Held-out results of the starting policy (the same tasks and seeds every run's eval uses)."""
    from agentrl.eval import evaluate
    from agentrl.inference.hf import HFBackend
    from agentrl.runtime import load_model, make_env_factory

    model, tokenizer = load_model(str(start))
    env = make_env_factory(config.env.id, {**config.env.kwargs, **config.env.eval_kwargs})
    backend = HFBackend(model, tokenizer, max_batch_size=config.backend.max_batch_size, seed=0)
    try:
        return await evaluate(backend, tokenizer, env, tasks=config.eval.tasks, samples=config.eval.samples,
                              temperature=config.eval.temperature, seed=0, rollout=config.rollout)
    finally:
        await backend.aclose()


def command_line() -> str:
    return "python -m agentrl.study " + " ".join(shlex.quote(a) for a in sys.argv[1:])
