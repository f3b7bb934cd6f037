"""``python -m agentrl.train``: RL training of a tool-using agent, end to end.

    python -m agentrl.train                                       # tiny model on CPU, minutes
    python -m agentrl.train --config configs/qwen2.5-7b-python-tool.yaml learner.lr=1e-6
    python -m agentrl.train --resume runs/tiny-arithmetic          # continue from the last checkpoint

One loop, in execution order: config -> model and tokenizer -> sandbox -> SFT warm-up on demonstrations ->
held-out eval -> { rollout (RolloutManager) -> ALP update (alp.Learner) -> weights to the backend ->
metrics, trajectories, checkpoint } -> held-out eval -> final HF checkpoint and plots.

The run directory holds: config.yaml (resolved), metrics.jsonl (one line per step), eval.json (before/after),
trajectories/step_NNNNNN.jsonl (with samples rendered in samples.txt), plots/*.png, checkpoints/step_NNNNNN,
final/ (``from_pretrained`` loads it) and tokenizer/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import math
import random
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agentrl.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
)

log = logging.getLogger("agentrl.train")


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentrl.train",
        description="Train an LLM agent with RL (ALP learner) on a tool-using environment. With no arguments: "
        "a tiny local model learns the Python tool on procedural arithmetic, on CPU, in minutes.",
        epilog="Overrides are dotted keys: run.steps=20 rollout.n_samples=8 learner.preset=tis learner.lr=1e-5 "
        "env.id=agentrl/PythonMath-v0 model.path=Qwen/Qwen2.5-0.5B-Instruct. Sections: run, model, env, "
        "sandbox, sft, rollout, backend, learner, eval (see docs/training.md).",
    )
    parser.add_argument("--config", help="YAML config file (configs/*.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[agentrl] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "config.yaml").is_file():
                raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory?")
            import yaml

            tree = yaml.safe_load((run_dir / "config.yaml").read_text())
            # extra overrides, e.g. run.steps=20 to extend a finished run
            config = config_from_dict(apply_overrides(tree, args.overrides))
        else:
            config = load_config(args.config, args.overrides)
            run_dir = None
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    try:
        summary = asyncio.run(train(config, run_dir=run_dir, resume=bool(args.resume)))
    except KeyboardInterrupt:
        print("[agentrl] interrupted: the last completed step is checkpointed; continue with --resume",
              file=sys.stderr)
        return 130
    return 0 if summary is not None else 1


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------
def _new_run_dir(config: TrainConfig) -> Path:
    base = Path(config.run.output_dir) / config.run.name
    run_dir, n = base, 1
    while run_dir.exists():  # never overwrite an earlier run
        run_dir = base.with_name(f"{base.name}-{n}")
        n += 1
    run_dir.mkdir(parents=True)
    return run_dir


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _task_seeds(config: TrainConfig, step: int) -> list[int]:
    """Tasks of a step depend only on (seed, step): resume sees the same tasks."""
    rng = random.Random(config.run.seed * 1_000_003 + step)
    return [rng.randrange(2**31) for _ in range(config.run.tasks_per_step)]


def to_train_batch(trajectories: list[Any], rollout_cfg: Any):  # -> alp.TrainBatch | None
    from alp.batch import TrainBatch

    usable = [t for t in trajectories if not t.info.get("excluded") and t.num_sampled > 0]
    if not usable:
        return None
    return TrainBatch.from_lists(
        token_ids=[t.token_ids for t in usable],
        loss_mask=[t.loss_mask for t in usable],
        behavior_logprobs=[t.behavior_logprobs for t in usable],
        rewards=[t.reward for t in usable],
        group_ids=[t.group_id for t in usable],
        temperature=rollout_cfg.temperature,
        top_p=rollout_cfg.top_p,
        top_k=rollout_cfg.top_k,
    )


class _Loggers:
    """metrics.jsonl always; TensorBoard and W&B when asked for (and installed)."""

    def __init__(self, run_dir: Path, config: TrainConfig, resume_step: int) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step >= 0 and self.path.exists():  # drop steps after the checkpoint: they are redone
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip()
                    and json.loads(ln).get("step", -1) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.tb = self.wandb = None
        if config.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError("run.tensorboard=true needs `pip install tensorboard`") from exc
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if config.run.wandb:
            try:
                import wandb
            except ImportError as exc:
                raise ConfigError("run.wandb=true needs `pip install wandb`") from exc
            self.wandb = wandb.init(project="agentrl", name=run_dir.name, config=config.to_dict(), resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in metrics.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.tb is not None:
            for k, v in clean.items():
                if v is not None:
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in clean.items() if v is not None}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _attach_learner_ratios(model: Any, trajectories: list[Any], rollout_cfg: Any) -> None:
    """Per-token pi_theta / mu (before this step's update, unperturbed) for the logged trajectories, in
    ``info["learner_ratio"]`` (1.0 off the loss mask) so the run viewer can show it beside the logprob."""
    import torch

    from alp.logprobs import sampling_logprobs

    with torch.no_grad():
        for t in trajectories:
            if not t.num_sampled:
                continue
            ids = torch.tensor([t.token_ids], device=next(model.parameters()).device)
            logp = sampling_logprobs(model(input_ids=ids).logits.float(), ids, temperature=rollout_cfg.temperature,
                                     top_p=rollout_cfg.top_p, top_k=rollout_cfg.top_k)[0].cpu()
            ratio = torch.exp(logp - torch.tensor(t.behavior_logprobs))
            t.info["learner_ratio"] = [round(float(r), 5) if m else 1.0
                                       for r, m in zip(ratio, t.loss_mask, strict=True)]


def _write_trajectories(run_dir: Path, step: int, trajectories: list[Any], tokenizer: Any, n: int) -> None:
    from agentrl.rollout.trajectory import write_jsonl

    if n <= 0:
        return
    folder = run_dir / "trajectories"
    folder.mkdir(exist_ok=True)
    chosen = trajectories[:n]
    write_jsonl(folder / f"step_{step:06d}.jsonl", chosen)
    with open(run_dir / "samples.txt", "a", encoding="utf-8") as f:
        t = chosen[0]
        f.write(f"=== step {step} | reward {t.reward} | stop {t.stop_reason} | turns {t.num_turns} ===\n")
        f.write(t.render(tokenizer) + "\n\n")


# ---------------------------------------------------------------------------------------------------
# Data-parallel learner (torchrun): rank 0 runs rollouts, eval and logging; every rank updates
# ---------------------------------------------------------------------------------------------------
def _init_distributed(device: str) -> tuple[int, int]:
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _broadcast(obj: Any = None) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sync_parameters(learner: Any) -> None:
    """Every rank starts from rank 0's weights and sigma (after its SFT warm-up or checkpoint)."""
    import torch.distributed as dist

    for tensor in [*learner.model.state_dict().values(), *learner.perturbation.state_dict().values()]:
        dist.broadcast(tensor.data, src=0)


def _follow(config: TrainConfig, learner_cfg: Any) -> dict[str, Any]:
    """Ranks > 0: same model and learner, batches from rank 0, the all-reduced update, nothing else."""
    from agentrl.checkpoint import load_state
    from agentrl.runtime import load_model
    from alp.learner import Learner

    mc = config.model
    model, _ = load_model(mc.path, preset=mc.preset, seed=config.run.seed, dtype=mc.dtype, device=mc.device)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if learner_cfg.kl_coef > 0 else None
    learner = Learner(model, learner_cfg, ref_model=ref_model, device=mc.device)
    checkpoint = _broadcast()
    if checkpoint is not None:
        learner.load_state_dict(load_state(Path(checkpoint))["learner"])
    _sync_parameters(learner)
    while (message := _broadcast()) != "stop":
        if message is not None:
            learner.update(message)
    return {}


async def train(config: TrainConfig, *, run_dir: Path | None = None, resume: bool = False) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from agentrl.checkpoint import latest_checkpoint, load_state, save_checkpoint
    from agentrl.eval import evaluate
    from agentrl.inference.hf import HFBackend
    from agentrl.plots import plot_metrics
    from agentrl.rollout import RolloutManager, admit
    from agentrl.runtime import load_model, make_env_factory, sandbox_for
    from agentrl.sft import warm_up
    from alp.learner import Learner

    started = time.perf_counter()
    learner_cfg = config.learner.build()
    rank, world = _init_distributed(config.model.device)
    if rank > 0:
        return _follow(config, learner_cfg)  # {} on followers: rank 0 reports
    # ---- run directory -------------------------------------------------------------------------
    if run_dir is None:
        run_dir = _new_run_dir(config)
    dump_config(config, run_dir / "config.yaml")
    checkpoint = latest_checkpoint(run_dir) if resume else None
    start_step = 0
    state = None
    if checkpoint is not None:
        state = load_state(checkpoint)
        start_step = int(state["step"]) + 1
        log.info("resuming %s from %s (step %d)", run_dir, checkpoint.name, start_step)
    _seed_everything(config.run.seed)

    # ---- model ---------------------------------------------------------------------------------
    mc = config.model
    model, tokenizer = load_model(mc.path, preset=mc.preset, seed=config.run.seed, dtype=mc.dtype, device=mc.device)
    tokenizer.save_pretrained(run_dir / "tokenizer")
    log.info("run dir %s | model %s (%s parameters) | learner preset %s", run_dir, mc.path or f"tiny:{mc.preset}",
             f"{sum(p.numel() for p in model.parameters()):,}", config.learner.preset)

    with sandbox_for(config.sandbox.url) as sandbox_url:
        log.info("sandbox %s", sandbox_url)
        train_env = make_env_factory(config.env.id, config.env.kwargs)
        eval_env = make_env_factory(config.env.id, {**config.env.kwargs, **config.env.eval_kwargs})
        evals: dict[str, Any] = json.loads((run_dir / "eval.json").read_text()) if (
            resume and (run_dir / "eval.json").exists()) else {}

        async def run_eval(backend: Any, label: str) -> dict[str, float]:
            if config.eval.tasks <= 0:
                return {}
            t0 = time.perf_counter()
            result = await evaluate(backend, tokenizer, eval_env, tasks=config.eval.tasks,
                                    samples=config.eval.samples, temperature=config.eval.temperature,
                                    seed=config.run.seed, rollout=config.rollout)
            evals[label] = result
            (run_dir / "eval.json").write_text(json.dumps(evals, indent=2))
            log.info("eval %-6s accuracy %.3f | tool-call rate %.2f | turns %.2f (%.0f s)", label,
                     result["eval/accuracy"], result["eval/tool_call_rate"], result["eval/turns_mean"],
                     time.perf_counter() - t0)
            return result

        # ---- SFT warm-up (skipped when resuming: the checkpoint has it) -------------------------
        sft_steps = 0
        if state is None and config.sft.steps > 0:
            base_backend = HFBackend(model, tokenizer, seed=config.run.seed)
            await run_eval(base_backend, "base")  # the untrained model, for the record
            await base_backend.aclose()
            warm = await warm_up(model, tokenizer, train_env, config.sft, config.rollout, seed=config.run.seed,
                                 progress=config.run.progress)
            sft_steps = warm["steps"]
            model.save_pretrained(run_dir / "sft")  # the RL start (version 0): for replay and comparisons
            tokenizer.save_pretrained(run_dir / "sft")

        # A frozen copy of the starting policy, only when a KL-to-reference term is on (kl_coef > 0).
        ref_model = copy.deepcopy(model).eval().requires_grad_(False) if learner_cfg.kl_coef > 0 else None
        learner = Learner(model, learner_cfg, ref_model=ref_model, device=mc.device)
        if state is not None:
            learner.load_state_dict(state["learner"])
            torch.set_rng_state(state["torch_rng"])
        if world > 1:
            _broadcast(str(checkpoint) if checkpoint is not None else None)
            _sync_parameters(learner)
            log.info("data-parallel learner over %d ranks", world)
        backend = HFBackend(model, tokenizer, max_batch_size=config.backend.max_batch_size, seed=config.run.seed,
                            initial_version=start_step)
        if config.backend.kind != "hf":
            raise ConfigError(f"backend.kind={config.backend.kind}: only the hf backend trains from this entry "
                              "point today; see docs/inference.md for vLLM and OpenAI-server rollouts")
        manager = RolloutManager(backend, tokenizer, train_env, config.rollout)
        loggers = _Loggers(run_dir, config, start_step - 1 if state is not None else -1)

        if "before" not in evals:
            await run_eval(backend, "before")

        # ---- RL loop ------------------------------------------------------------------------------
        bar = tqdm(range(start_step, config.run.steps), initial=start_step, total=config.run.steps, desc="rl",
                   disable=not config.run.progress)
        step = start_step - 1
        last_saved = last_logged = start_step - 1

        def checkpoint_now(at: int) -> None:
            nonlocal last_saved
            if at < 0 or at == last_saved:
                return
            save_checkpoint(run_dir, at, model, tokenizer,
                            {"step": at, "learner": learner.state_dict(), "torch_rng": torch.get_rng_state()},
                            keep_last=config.run.keep_last)
            last_saved = at

        off_policy = config.rollout.max_staleness > 0
        stream = manager.stream(s for st in range(start_step, 1 << 30) for s in _task_seeds(config, st)) \
            if off_policy else None
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentrl-learner")
        update: Future | None = None
        pending: tuple[int, dict[str, float]] | None = None

        async def collect(step: int) -> tuple[list[Any], dict[str, float]]:
            if stream is None:
                batch = await manager.run(_task_seeds(config, step))
                return batch.trajectories, dict(batch.metrics)
            # Off-policy: take finished groups while generation goes on; drop tokens that are too stale.
            t0, kept, stale = time.perf_counter(), [], 0
            while len({t.group_id for t in kept}) < config.run.tasks_per_step:
                group = await stream.__anext__()
                admitted, rejected = admit(group.trajectories, backend.version, config.rollout.max_staleness)
                kept += admitted
                stale += len(rejected)
            metrics = manager.summarize(kept, time.perf_counter() - t0)
            metrics["rollout/stale_rejected"] = float(stale)
            return kept, metrics

        # Ctrl-C: finish the step in flight, checkpoint it, exit 130. A second Ctrl-C aborts at once (losing only
        # the steps since the last checkpoint). A flag checked between steps, not task cancellation, so no
        # library that swallows a CancelledError can turn an interrupt into a run that goes on.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            if stop.is_set():
                loop.remove_signal_handler(signal.SIGINT)
                raise KeyboardInterrupt
            stop.set()
            log.warning("Ctrl-C: finishing this step, then checkpointing and exiting (Ctrl-C again to abort now)")

        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: no handler
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            for step in bar:
                if stop.is_set():
                    break
                t0 = time.perf_counter()
                trajectories, metrics = await collect(step)
                train_batch = to_train_batch(trajectories, config.rollout)
                if config.run.log_trajectories > 0:
                    model.eval()
                    _attach_learner_ratios(model, trajectories[: config.run.log_trajectories], config.rollout)
                if world > 1:
                    _broadcast(train_batch)  # None: the followers skip this step too
                if train_batch is not None:
                    # In a worker thread, so off-policy generation keeps running on the event loop meanwhile.
                    update = executor.submit(learner.update, train_batch)
                    metrics.update(await asyncio.wrap_future(update))
                    update = None
                else:
                    log.warning("step %d: no trainable trajectory (all excluded); skipping the update", step)
                pending = (step, metrics)  # the learner took this step; it must be logged before any save
                await backend.aupdate_weights({k: v.detach().clone() for k, v in model.state_dict().items()})
                metrics["perf/step_s"] = time.perf_counter() - t0
                metrics["time"] = time.perf_counter() - started
                if config.eval.every and (step + 1) % config.eval.every == 0 and step + 1 < config.run.steps:
                    metrics.update(await run_eval(backend, f"step_{step}"))
                loggers.log(step, metrics)
                last_logged, pending = step, None
                _write_trajectories(run_dir, step, trajectories, tokenizer, config.run.log_trajectories)
                bar.set_postfix({
                    "reward": f"{metrics.get('rollout/reward_mean', 0):.2f}",
                    "acc": f"{metrics.get('rollout/accuracy', 0):.2f}",
                    "tool": f"{metrics.get('rollout/tool_call_rate', 0):.2f}",
                    "r_p99": f"{metrics.get('ratio/q99', float('nan')):.2f}",
                    "sigma": f"{metrics.get('sigma/mean', 0):.1e}",
                })
                if config.run.save_every and (step + 1) % config.run.save_every == 0:
                    checkpoint_now(step)
        except asyncio.CancelledError:  # Ctrl-C: keep every completed step, then stop
            bar.close()
            if update is not None:  # an update in flight finishes first: never save half a step
                metrics.update(update.result())
                pending = (step, metrics)
            if pending is not None:  # the learner took a step the log has not seen yet
                loggers.log(*pending)
                last_logged = pending[0]
            checkpoint_now(last_logged)
            loggers.close()
            await backend.aclose()
            raise KeyboardInterrupt from None
        finally:
            executor.shutdown(wait=True)
            if stream is not None:
                await stream.aclose()
            if world > 1:
                _broadcast("stop")
        bar.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        if stop.is_set():
            checkpoint_now(last_logged)
            loggers.close()
            await backend.aclose()
            raise KeyboardInterrupt
        checkpoint_now(config.run.steps - 1)

        after = await run_eval(backend, "after")
        await backend.aclose()
        loggers.close()

    # ---- final checkpoint, plots, summary ------------------------------------------------------------
    model.save_pretrained(run_dir / "final")
    tokenizer.save_pretrained(run_dir / "final")
    plots = plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots") if (run_dir / "metrics.jsonl").exists() else []
    before = evals.get("before", {})
    base = evals.get("base")
    if base and after:
        print(f"[agentrl] held-out accuracy untrained {base['eval/accuracy']:.3f} -> after SFT "
              f"{before['eval/accuracy']:.3f} -> after RL {after['eval/accuracy']:.3f}")
    summary = {"run_dir": str(run_dir), "steps": config.run.steps, "wall_s": time.perf_counter() - started,
               "untrained": base or {}, "sft_steps": sft_steps, "before": before, "after": after,
               "plots": [str(p) for p in plots]}
    if before and after:
        print(f"[agentrl] held-out accuracy {before['eval/accuracy']:.3f} -> {after['eval/accuracy']:.3f} | "
              f"tool-call rate {before['eval/tool_call_rate']:.2f} -> {after['eval/tool_call_rate']:.2f} | "
              f"{summary['wall_s'] / 60:.1f} min | {run_dir}")
    return summary


if __name__ == "__main__":
    sys.exit(main())
