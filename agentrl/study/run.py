"""One run of the mismatch study: a lean RL loop from the cached starting policy under one mismatch.

In execution order, per step:
    tasks of (seed, step) -> rollouts with the mismatched engine (mu) -> score the batch with the trainer's
    current fp32 weights, unperturbed (pi_theta) -> mismatch metrics ``mm/*`` (the same definition for every
    method) -> the method's update (alp.Learner) -> weights to the engine (which may hold them back: staleness)
    -> held-out eval on schedule -> one line of metrics.jsonl

Pairing: task seeds depend only on (seed, step) and sampling streams only on (seed, group, sample, turn,
learner version), so every method of a seed sees the same prompts and the same random numbers; held-out
tasks and their sampling seeds are the same for every run.

The run folder holds config.yaml (what the drift lab reads: rollout settings, mismatch, learner, start),
metrics.jsonl, trajectories/step_NNNNNN.jsonl for the logged steps, weights/version_NNNNNN.safetensors with
weights.json (the weight versions the drift lab needs to replay those steps) and summary.json when done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from alp.stats import quantiles

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
OUTSIDE_BAND = (0.9, 1.1)  # a token's ratio outside this band counts in mm/outside_band


@dataclass
class RunSpec:
    """Everything one run needs (JSON-serialisable, so a worker process can take it)."""

    run_dir: str
    start: str
    """The starting policy's checkpoint folder (the cached warm-up)."""
    mismatch: str
    method: str
    learner: dict[str, Any]
    """LearnerConfig fields."""
    seed: int
    steps: int
    train_config: dict[str, Any]
    """TrainConfig.to_dict() of the study: env, rollout, run.tasks_per_step, eval, backend."""
    eval_every: int = 0
    """Held-out eval every N steps (0: only after the last step)."""
    log_steps: list[int] = field(default_factory=list)
    """Steps whose trajectories (and the weights to replay them) are saved for the drift lab."""
    cell: str = ""
    """The study cell (mismatch and updates per rollout) this run belongs to; '' = the mismatch's name."""


def task_seeds(seed: int, step: int, n: int) -> list[int]:
    """The tasks of a step: a function of (seed, step) only, shared by every method and mismatch."""
    rng = random.Random(seed * 1_000_003 + step * 7919 + 17)
    return [rng.randrange(2**31) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------
# Mismatch metrics: pi_theta (trainer, fp32, unperturbed, before the update) vs mu (the rollout engine)
# ---------------------------------------------------------------------------------------------------
def mismatch_stats(logp_pi: torch.Tensor, logp_mu: torch.Tensor, mask: torch.Tensor,
                   clamp: float = 20.0) -> dict[str, float]:
    """Token and sequence statistics of log r = log pi - log mu over the loss tokens ([B, T] each).

    ``mm/kl_k3`` is the token mean of r - 1 - log r with samples from mu: an unbiased, non-negative
    estimate of KL(mu || pi) per token (Schulman's k3); ``mm/kl_k1`` the mean of -log r. Ratios are
    exp(clamped log r), as the learner clamps them.
    """
    on = mask > 0
    if not bool(on.any()):
        return {}
    log_r = (logp_pi - logp_mu).double().clamp(-clamp, clamp)  # [B, T]
    tok = log_r[on]  # [N]
    ratio = tok.exp()
    seq_abs = (log_r * on).sum(1)[on.any(1)].abs()  # [B'] |sequence log-ratio|
    q01, q99 = quantiles(ratio, [0.01, 0.99])
    lo, hi = OUTSIDE_BAND
    return {
        "mm/ratio_mean": float(ratio.mean()),
        "mm/ratio_q01": q01,
        "mm/ratio_q99": q99,
        "mm/ratio_min": float(ratio.min()),
        "mm/ratio_max": float(ratio.max()),
        "mm/abs_log_ratio_q99": quantiles(tok.abs(), [0.99])[0],
        "mm/outside_band": float(((ratio < lo) | (ratio > hi)).double().mean()),
        "mm/seq_abs_log_ratio_q99": quantiles(seq_abs, [0.99])[0],
        "mm/seq_abs_log_ratio_max": float(seq_abs.max()),
        "mm/kl_k1": float((-tok).mean()),
        "mm/kl_k3": float((ratio - 1 - tok).mean()),
        "mm/tokens": float(tok.numel()),
    }


def staleness_of(trajectories: list[Any], learner_version: int) -> float:
    """Mean over sampled tokens (in the loss or masked, e.g. void turns) of (learner version - the version of
    the weights that sampled the token); infrastructure failures are left out."""
    lags = [learner_version - v for t in trajectories if t.excluded is None for v in t.policy_versions]
    return sum(lags) / len(lags) if lags else 0.0


# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------
def _save_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # clone: tied embeddings share storage, which safetensors refuses to write twice
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))


async def train_run(spec: RunSpec, *, on_step: Any = None) -> dict[str, Any]:
    """Run ``spec`` to completion; returns the summary (also written to summary.json)."""
    import yaml

    from agentrl.config import config_from_dict
    from agentrl.eval import evaluate
    from agentrl.inference.hf import HFBackend
    from agentrl.inference.mismatch import MismatchSpec, make_rollout_backend
    from agentrl.rollout import RolloutManager
    from agentrl.rollout.packing import to_train_batch
    from agentrl.rollout.trajectory import write_jsonl
    from agentrl.runtime import load_model, make_env_factory
    from alp.config import LearnerConfig
    from alp.learner import Learner
    from alp.logprobs import score

    started = time.perf_counter()
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config_from_dict(spec.train_config)
    mismatch = MismatchSpec.parse(spec.mismatch)
    learner_cfg = LearnerConfig(**{**spec.learner, "seed": spec.seed})
    rollout_cfg = replace(config.rollout, seed=spec.seed)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({
        "study_run": {"method": spec.method, "mismatch": mismatch.name, "seed": spec.seed, "steps": spec.steps},
        "model": {"path": spec.start},
        "rollout": asdict(rollout_cfg),
        "env": {"id": config.env.id, "kwargs": config.env.kwargs},
        "learner": learner_cfg.to_dict(),
    }, sort_keys=False))

    torch.manual_seed(spec.seed)
    model, tokenizer = load_model(spec.start)
    learner = Learner(model, learner_cfg)
    vllm_kwargs = {"max_model_len": config.rollout.max_context_tokens,
                   "gpu_memory_utilization": config.backend.gpu_memory_utilization,
                   "enforce_eager": not torch.cuda.is_available()}  # CPU build: eager starts minutes sooner
    backend = make_rollout_backend(mismatch, model, tokenizer, seed=spec.seed,
                                   max_batch_size=config.backend.max_batch_size, model_path=spec.start,
                                   vllm_kwargs=vllm_kwargs)
    train_env = make_env_factory(config.env.id, config.env.kwargs)
    eval_env = make_env_factory(config.env.id, {**config.env.kwargs, **config.env.eval_kwargs})
    manager = RolloutManager(backend, tokenizer, train_env, rollout_cfg)
    k = mismatch.staleness
    keep_versions = {v for s in spec.log_steps for v in (s, s - k) if 0 < v}
    weights_index: dict[int, str] = {0: str(Path(spec.start).resolve())}

    async def held_out() -> dict[str, float]:
        backend_eval = HFBackend(model, tokenizer, max_batch_size=config.backend.max_batch_size, seed=0)
        try:
            return await evaluate(backend_eval, tokenizer, eval_env, tasks=config.eval.tasks,
                                  samples=config.eval.samples, temperature=config.eval.temperature, seed=0,
                                  rollout=config.rollout)
        finally:
            await backend_eval.aclose()

    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.write_text("")
    try:
        for step in range(spec.steps):
            t0 = time.perf_counter()
            if step in keep_versions:  # the trainer's weights now are version `step`
                _save_weights(model, run_dir / "weights" / f"version_{step:06d}.safetensors")
                weights_index[step] = f"weights/version_{step:06d}.safetensors"
            rollout = await manager.run(task_seeds(spec.seed, step, config.run.tasks_per_step))
            metrics: dict[str, float] = dict(rollout.metrics)
            batch = to_train_batch(rollout.trajectories)
            metrics["mm/staleness"] = staleness_of(rollout.trajectories, step)
            if batch is not None:
                model.eval()
                logp_pi = score(model, batch, micro_batch_tokens=learner_cfg.micro_batch_tokens)
                metrics.update(mismatch_stats(logp_pi, batch.behavior_logprobs, batch.loss_mask,
                                              learner_cfg.log_ratio_clamp))
                metrics.update(learner.update(batch))
            else:
                log.warning("%s: step %d has no trainable trajectory; no update", run_dir, step)
            await backend.aupdate_weights({k_: v.detach().clone() for k_, v in model.state_dict().items()})
            if step in spec.log_steps:
                folder = run_dir / "trajectories"
                folder.mkdir(exist_ok=True)
                n = max(config.run.log_trajectories, 1)
                write_jsonl(folder / f"step_{step:06d}.jsonl", rollout.trajectories[:n])
            if (spec.eval_every and (step + 1) % spec.eval_every == 0) or step == spec.steps - 1:
                metrics.update(await held_out())
            metrics["perf/step_s"] = time.perf_counter() - t0
            metrics["time"] = time.perf_counter() - started
            clean = {k_: (v if isinstance(v, (int, float)) and math.isfinite(v) else None)
                     for k_, v in metrics.items()}
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **clean}) + "\n")
            if on_step is not None:
                on_step(step, clean)
    finally:
        await backend.aclose()
    (run_dir / "weights.json").write_text(json.dumps({str(v): p for v, p in sorted(weights_index.items())},
                                                     indent=1))
    summary = {"status": "done", "cell": spec.cell or mismatch.name, "method": spec.method,
               "mismatch": mismatch.name, "seed": spec.seed,
               "steps": spec.steps, "wall_s": time.perf_counter() - started}
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def run_in_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Process-pool entry: one thread of torch, quiet logs, then :func:`train_run`."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="[agentrl.study] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(train_run(RunSpec(**spec)))
