"""Evaluation: accuracy, pass@k and tool-use statistics on held-out tasks.

    python -m agentrl.eval --run runs/tiny-arithmetic                 # the run's final model, its held-out eval
    python -m agentrl.eval --model runs/tiny-arithmetic/checkpoints/step_000011/model --samples 4
    python -m agentrl.eval --model Qwen/Qwen2.5-0.5B-Instruct --config qwen2.5-7b-python-tool --n 64

What is evaluated comes from a training config, so the task is the one training evaluates: the run's own
config.yaml when ``--run`` is given or ``--model`` lies inside a run folder (``final/``, ``sft/``,
``checkpoints/step_N/model``), else the recipe ``--config`` (default: the default recipe). It gives the env and
its kwargs with ``env.eval_kwargs`` over them (the held-out split), the rollout settings (turns, tokens per turn,
context), the eval section (tasks, samples, temperature) and the seed; explicit flags win over it
(``--env-kwargs`` is merged over the config's kwargs). Task i is ``reset`` with a seed derived from i and the
seed, so two evaluations with the same settings see the same tasks (and the training run's held-out tasks).
``--model`` takes a checkpoint folder, an HF id, or ``tiny`` / ``small`` (the untrained local presets).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.inference.base import Backend
from agentrl.rollout import RolloutConfig, RolloutManager

EVAL_SEED_OFFSET = 10_000_000  # eval task seeds never coincide with training task seeds


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


async def evaluate(backend: Backend, tokenizer: Any, env_factory: Callable[[], Any], *, tasks: int,
                   samples: int = 1, temperature: float = 1.0, seed: int = 0,
                   rollout: RolloutConfig | None = None) -> dict[str, float]:
    """eval/* metrics of ``tasks`` held-out tasks x ``samples`` episodes (see :func:`evaluate_by_task`)."""
    metrics, _ = await evaluate_by_task(backend, tokenizer, env_factory, tasks=tasks, samples=samples,
                                        temperature=temperature, seed=seed, rollout=rollout)
    return metrics


async def evaluate_by_task(backend: Backend, tokenizer: Any, env_factory: Callable[[], Any], *, tasks: int,
                           samples: int = 1, temperature: float = 1.0, seed: int = 0,
                           rollout: RolloutConfig | None = None) -> tuple[dict[str, float], list[float]]:
    """eval/* metrics and each task's accuracy (share of its samples graded correct, in task order), the
    per-task values a paired comparison of two evaluations on the same tasks needs (:func:`accuracy_gain`).
    ``rollout`` gives the episode limits; sampling is ``temperature`` (0: greedy), top-p and top-k off."""
    base = rollout or RolloutConfig()
    cfg = RolloutConfig(**{**base.__dict__, "n_samples": samples, "temperature": temperature,
                           "top_p": 1.0, "top_k": 0, "seed": seed + 1})
    manager = RolloutManager(backend, tokenizer, env_factory, cfg)
    batch = await manager.run([EVAL_SEED_OFFSET + seed * 100_003 + i for i in range(tasks)])
    by_task: dict[int, list[bool]] = {}
    for t in batch.trajectories:
        by_task.setdefault(t.group_id, []).append(bool(t.correct))
    out = {
        "eval/tasks": float(tasks),
        "eval/samples": float(samples),
        "eval/accuracy": sum(sum(v) for v in by_task.values()) / max(tasks * samples, 1),
        "eval/tool_call_rate": batch.metrics["rollout/tool_call_rate"],
        "eval/tool_success_rate": batch.metrics["rollout/tool_success_rate"],
        "eval/turns_mean": batch.metrics["rollout/turns_mean"],
        "eval/response_length_mean": batch.metrics["rollout/response_length_mean"],
        "eval/excluded": batch.metrics["rollout/excluded"],
    }
    for k in sorted({1, samples} | {k for k in (2, 4, 8, 16) if k <= samples}):
        out[f"eval/pass@{k}"] = sum(pass_at_k(len(v), sum(v), k) for v in by_task.values()) / max(len(by_task), 1)
    for reason, count in Counter(t.stop_reason for t in batch.trajectories).items():
        out[f"eval/stop/{reason}"] = float(count)
    return out, [sum(by_task.get(g, [])) / samples for g in range(tasks)]


@dataclass(frozen=True)
class Gain:
    """after - before held-out accuracy with its two-sided 95% interval; ``paired``: from per-task differences
    on the same tasks (a t interval), else from two independent proportions (a normal interval)."""

    mean: float
    low: float
    high: float
    paired: bool

    def fmt(self) -> str:
        kind = "paired over tasks" if self.paired else "unpaired"
        return f"{self.mean:+.3f} (95% CI [{self.low:+.3f}, {self.high:+.3f}], {kind})"


def accuracy_gain(before: dict[str, float], after: dict[str, float], before_tasks: list[float] | None = None,
                  after_tasks: list[float] | None = None) -> Gain:
    """The gain from ``before`` to ``after`` (eval/* metrics of :func:`evaluate`). With both per-task accuracy
    lists (same tasks, same order) the interval is the paired one: the per-task difference removes the
    spread between easy and hard tasks, which both evaluations share."""
    from agentrl.study.stats import paired

    if before_tasks and after_tasks and len(before_tasks) == len(after_tasks):
        p = paired(after_tasks, before_tasks)
        return Gain(p.mean, p.low, p.high, paired=True)
    a, b = after["eval/accuracy"], before["eval/accuracy"]
    na = after["eval/tasks"] * after["eval/samples"]
    nb = before["eval/tasks"] * before["eval/samples"]
    half = 1.96 * math.sqrt(a * (1 - a) / max(na, 1) + b * (1 - b) / max(nb, 1))
    return Gain(a - b, a - b - half, a - b + half, paired=False)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
RUN_CONFIG = "config.yaml"
"""A run folder's resolved training config (agentrl.train writes it)."""
RUN_DEPTH = 3
"""How many folders above ``--model`` are searched for a run's config.yaml (checkpoints/step_N/model: 3)."""


@dataclass(frozen=True)
class EvalSettings:
    """Everything an evaluation needs besides the model weights: resolved from a config and the flags."""

    model: str
    env_id: str
    env_kwargs: dict[str, Any]
    rollout: RolloutConfig
    tasks: int
    samples: int
    temperature: float
    seed: int
    sandbox_url: str | None
    sandbox_token: str | None
    max_batch_size: int
    source: str
    """Where the settings came from: a run's config.yaml or a recipe."""


def find_run_dir(model: str) -> Path | None:
    """The run folder holding ``model`` (a folder at most RUN_DEPTH levels below a config.yaml), or None."""
    path = Path(model)
    if not path.exists():
        return None
    path = path.resolve()
    for folder in [path, *path.parents][: RUN_DEPTH + 1]:
        if (folder / RUN_CONFIG).is_file():
            return folder
    return None


def resolve_settings(args: argparse.Namespace) -> EvalSettings:
    """The settings of an evaluation: the run's config (``--run``, or the run folder ``--model`` is in), else
    the recipe ``--config``; then the explicit flags. Raises ConfigError on a bad run folder or config."""
    import yaml

    from agentrl.config import ConfigError, config_from_dict, load_config

    run_dir = Path(args.run) if args.run else find_run_dir(args.model) if args.model else None
    if args.run and args.config:
        raise ConfigError("--run takes the run's own config.yaml; give --config only without a run")
    if run_dir is not None and not args.config:
        if not (run_dir / RUN_CONFIG).is_file():
            raise ConfigError(f"--run {run_dir}: no {RUN_CONFIG} there; is it a run directory?")
        config = config_from_dict(yaml.safe_load((run_dir / RUN_CONFIG).read_text()))
        source = str(run_dir / RUN_CONFIG)
    else:
        config = load_config(args.config)
        source = f"recipe {args.config or 'default'}"
    model = args.model or (str(run_dir / "final") if run_dir is not None else None)
    if model is None:
        raise ConfigError("give --model (a checkpoint folder, an HF id, tiny or small) or --run RUN_DIR")
    try:
        extra = json.loads(args.env_kwargs) if args.env_kwargs else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--env-kwargs is not valid JSON: {exc}") from exc
    if not isinstance(extra, dict):
        raise ConfigError(f"--env-kwargs must be a JSON object, got {args.env_kwargs}")
    rollout_changes = {k: v for k, v in (("max_turns", args.max_turns), ("max_new_tokens", args.max_new_tokens))
                       if v is not None}
    rollout = config.rollout
    if rollout_changes:
        budget = max(rollout.max_context_tokens, 4 * rollout_changes.get("max_new_tokens", 0))
        try:
            rollout = dataclasses.replace(rollout, **rollout_changes, max_context_tokens=budget)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    same_env = args.env in (None, config.env.id)  # another env: the config's kwargs are not its kwargs
    return EvalSettings(
        model=model, env_id=args.env or config.env.id,
        env_kwargs={**config.env.kwargs, **config.env.eval_kwargs, **extra} if same_env else extra,
        rollout=rollout, tasks=_given(args.n, config.eval.tasks), samples=_given(args.samples, config.eval.samples),
        temperature=_given(args.temperature, config.eval.temperature), seed=_given(args.seed, config.run.seed),
        sandbox_url=args.sandbox_url or config.sandbox_url, sandbox_token=config.sandbox.token,
        max_batch_size=config.backend.max_batch_size, source=source)


def _given(flag: Any, default: Any) -> Any:
    return default if flag is None else flag


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agentrl.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint folder, HF id, or a tiny preset name (tiny, small); default with "
                   "--run: RUN_DIR/final")
    p.add_argument("--run", metavar="RUN_DIR", help="a training run folder: its config.yaml gives the settings")
    p.add_argument("--config", help="a recipe (name or YAML file) giving the settings when the model is not in a "
                   "run folder; default: the default recipe")
    p.add_argument("--env", help="registered env id or module:Class (then only --env-kwargs are its kwargs)")
    p.add_argument("--env-kwargs", help="JSON kwargs for the env, merged over the config's")
    p.add_argument("--n", type=int, help="held-out tasks (config: eval.tasks)")
    p.add_argument("--samples", type=int, help="samples per task, pass@k up to this (config: eval.samples)")
    p.add_argument("--temperature", type=float, help="sampling temperature, 0: greedy (config: eval.temperature)")
    p.add_argument("--max-turns", type=int, help="config: rollout.max_turns")
    p.add_argument("--max-new-tokens", type=int, help="tokens per turn (config: rollout.max_new_tokens)")
    p.add_argument("--seed", type=int, help="picks the tasks (config: run.seed)")
    p.add_argument("--sandbox-url", default=None, help="sandbox URL (default: as training resolves it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from agentrl.config import ConfigError
    from agentrl.inference.hf import HFBackend
    from agentrl.runtime import load_model, make_env_factory, sandbox_for

    try:
        s = resolve_settings(args)
        env_factory = make_env_factory(s.env_id, s.env_kwargs)
    except (ConfigError, ValueError, KeyError, TypeError) as exc:  # bad settings fail before the model loads
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[agentrl.eval] {s.model} on {s.env_id} {json.dumps(s.env_kwargs)}: {s.tasks} tasks x {s.samples} "
          f"samples, temperature {s.temperature}, seed {s.seed} (settings from {s.source})", file=sys.stderr)
    model, tokenizer = load_model(s.model)

    async def run() -> dict[str, float]:
        with sandbox_for(s.sandbox_url, token=s.sandbox_token):
            backend = HFBackend(model, tokenizer, copy_model=False, max_batch_size=s.max_batch_size, seed=s.seed)
            try:
                return await evaluate(backend, tokenizer, env_factory, tasks=s.tasks, samples=s.samples,
                                      temperature=s.temperature, seed=s.seed, rollout=s.rollout)
            finally:
                await backend.aclose()

    results = asyncio.run(run())
    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
