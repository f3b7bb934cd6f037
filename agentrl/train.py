"""``python -m agentrl.train``: RL training of a tool-using agent, end to end.

    python -m agentrl.train                                       # the tiny_cpu recipe: minutes on a CPU
    python -m agentrl.train --config qwen2.5-7b-python-tool learner.lr=2e-6
    python -m agentrl.train --resume runs/tiny-arithmetic          # continue from the last checkpoint

One loop, in execution order: config (checked whole) -> envs -> model and tokenizer -> sandbox -> SFT warm-up
on demonstrations -> held-out eval -> { rollout (RolloutManager) -> ALP update (alp.Learner) -> weights to the
backend -> metrics, trajectories, checkpoint } -> held-out eval -> final HF checkpoint and plots.
The run directory's layout: agentrl/run_dir.py.

Under torchrun, rank 0 runs rollouts, evaluation and logging; every rank takes its share of each update
(``follow``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import random
import resource
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from agentrl.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
)
from agentrl.eval import accuracy_gain, evaluate, evaluate_by_task
from agentrl.inference.base import Backend
from agentrl.inference.hf import HFBackend
from agentrl.ranks import Ranks, broadcast, leave_distributed, local_device
from agentrl.rollout import RolloutManager, Trajectory, to_train_batch
from agentrl.rollout.pipeline import RolloutPipeline
from agentrl.run_dir import (
    MetricsLog,
    latest_checkpoint,
    load_sharded,
    load_state,
    new_run_dir,
    plot_metrics,
    read_evals,
    save_checkpoint,
    save_final,
    write_evals,
    write_trajectories,
)
from agentrl.runtime import (
    EnvFactory,
    SandboxOutage,
    SandboxWatch,
    WeightPublisher,
    apply_lora,
    load_model,
    make_backend,
    make_env_factory,
    model_folder,
    overlap_threads,
    sandbox_for,
)
from agentrl.sft import warm_up
from alp.distributed import full_state_dict
from alp.learner import Learner

log = logging.getLogger("agentrl.train")


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentrl.train",
        description="Train an LLM agent with RL (ALP learner) on a tool-using environment. With no arguments: "
        "the tiny_cpu recipe, a tiny local model learning the Python tool on procedural arithmetic, on CPU.",
        epilog="Overrides are dotted keys: run.steps=20 rollout.n_samples=8 learner.preset=tis learner.lr=1e-5 "
        "env.id=agentrl/PythonMath-v0 model.path=Qwen/Qwen2.5-0.5B-Instruct. Sections: run, model, env, "
        "sandbox, sft, rollout, backend, learner, eval (see docs/training.md).",
    )
    parser.add_argument("--config", help="a recipe: a YAML file, or the name of a shipped one (agentrl/configs/: "
                        "tiny_cpu, qwen2.5-7b-python-tool, qwen2.5-math-1.5b-single-turn); default tiny_cpu")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, Path | None]:
    """The config to run (a recipe and overrides, or a run directory's own config) and that run directory."""
    if not args.resume:
        return load_config(args.config, args.overrides), None
    run_dir = Path(args.resume)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory?")
    if args.config:
        raise ConfigError("--resume takes the run's own config.yaml; give changes as key=value overrides instead "
                          "of --config")
    tree = yaml.safe_load((run_dir / "config.yaml").read_text())
    return config_from_dict(apply_overrides(tree, args.overrides)), run_dir  # e.g. run.steps=40 to extend


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[agentrl] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config, run_dir = resolve_config(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    try:
        summary = asyncio.run(train(config, run_dir=run_dir, resume=run_dir is not None))
        leave_distributed()
    except KeyboardInterrupt:
        print("[agentrl] interrupted: the last completed step is checkpointed; continue with --resume",
              file=sys.stderr)
        return 130
    except SandboxOutage as exc:
        print(f"[agentrl] error: {exc}", file=sys.stderr)
        return 3
    return 0 if summary is not None else 1


# ---------------------------------------------------------------------------------------------------
# What the loop is made of
# ---------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def task_seeds(config: TrainConfig, step: int) -> list[int]:
    """Tasks of a step depend only on (seed, step): resume sees the same tasks."""
    rng = random.Random(config.run.seed * 1_000_003 + step)
    return [rng.randrange(2**31) for _ in range(config.run.tasks_per_step)]


def build_learner(config: TrainConfig, model: torch.nn.Module, checkpoint: Path | None,
                  state: dict[str, Any] | None) -> Learner:
    """The learner over ``model`` (already wrapped with LoRA adapters when model.lora.r > 0; sharded here with
    learner.strategy=fsdp2), restored from a checkpoint when given. A frozen copy of the starting policy is the
    reference only when a KL-to-reference term is on (kl_coef > 0)."""
    learner_cfg = config.learner.build()
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if learner_cfg.kl_coef > 0 else None
    learner = Learner(model, learner_cfg, ref_model=ref_model, device=local_device(config.model.device))
    if checkpoint is not None and learner.parallel.sharded:
        learner.load_state_dict(load_sharded(checkpoint, learner.state_dict()))
    elif state is not None:
        learner.load_state_dict(state["learner"])
    return learner


def start_folder(config: TrainConfig, run_dir: Path, checkpoint: Path | None) -> str:
    """The HF folder holding the weights a run starts from (a resume: loads, or an engine's first weights):
    the checkpoint's model when it has one (not with LoRA adapters or a sharded learner), else RUN_DIR/sft
    after a warm-up, else the model's own folder."""
    if checkpoint is not None and (checkpoint / "model").is_dir() and config.model.lora.r == 0:
        return str(checkpoint / "model")
    if (run_dir / "sft").is_dir():
        return str(run_dir / "sft")
    mc = config.model
    return model_folder(mc.path, preset=mc.preset, seed=config.run.seed)


def attach_learner_ratios(learner: Learner, trajectories: list[Trajectory], ranks: Ranks) -> None:
    """Per-token pi_theta / mu (before this step's update, unperturbed) in ``info["learner_ratio"]`` (1.0 off
    the loss mask), so the run viewer can show it beside the logprob. A sharded learner's forward is a
    collective: every rank scores its own trajectories, or none does."""
    batch = to_train_batch(trajectories)
    everyone = all(ranks.gather(batch is not None)) if learner.parallel.sharded else batch is not None
    if batch is None or not everyone:
        return
    learner.model.eval()
    logp = learner.logprobs(batch)  # [B, T]
    ratio = torch.exp(logp - batch.behavior_logprobs) * batch.loss_mask + (1 - batch.loss_mask)  # [B, T]
    for t, row, n in zip([t for t in trajectories if t.trainable], ratio.tolist(), batch.lengths.tolist(),
                         strict=True):
        t.info["learner_ratio"] = [round(r, 5) for r in row[:n]]


class HeldOut:
    """Held-out evaluations of the run, kept in eval.json by label (base, before, step_N, after), and each
    task's accuracy per label in eval_tasks.json (same tasks every time, so two labels compare task by task)."""

    TASKS_FILE = "eval_tasks.json"

    def __init__(self, run_dir: Path, config: TrainConfig, tokenizer: Any, env_factory: EnvFactory, *,
                 resume: bool) -> None:
        self.run_dir, self.config, self.tokenizer, self.env_factory = run_dir, config, tokenizer, env_factory
        self.evals: dict[str, dict[str, float]] = read_evals(run_dir) if resume else {}
        tasks_file = run_dir / self.TASKS_FILE
        self.task_accuracy: dict[str, list[float]] = (
            json.loads(tasks_file.read_text()) if resume and tasks_file.is_file() else {})

    async def __call__(self, backend: Backend, label: str) -> dict[str, float]:
        cfg = self.config
        if cfg.eval.tasks <= 0:
            return {}
        t0 = time.perf_counter()
        common = {"tasks": cfg.eval.tasks, "seed": cfg.run.seed, "rollout": cfg.rollout}
        result, per_task = await evaluate_by_task(backend, self.tokenizer, self.env_factory, **common,
                                                  samples=cfg.eval.samples, temperature=cfg.eval.temperature)
        if cfg.eval.greedy:
            greedy = await evaluate(backend, self.tokenizer, self.env_factory, **common, samples=1, temperature=0.0)
            result["eval/greedy_accuracy"] = greedy["eval/accuracy"]
        self.evals[label], self.task_accuracy[label] = result, per_task
        write_evals(self.run_dir, self.evals)
        (self.run_dir / self.TASKS_FILE).write_text(json.dumps(self.task_accuracy))
        greedy_text = f" | greedy {result['eval/greedy_accuracy']:.3f}" if cfg.eval.greedy else ""
        log.info("eval %-6s accuracy %.3f%s | tool-call rate %.2f | turns %.2f (%.0f s)", label,
                 result["eval/accuracy"], greedy_text, result["eval/tool_call_rate"], result["eval/turns_mean"],
                 time.perf_counter() - t0)
        return result


async def warm_up_stage(config: TrainConfig, model: torch.nn.Module, tokenizer: Any, env_factory: EnvFactory,
                        held_out: HeldOut, run_dir: Path) -> int:
    """The untrained model's eval (for the record), then the SFT warm-up in place; the post-SFT weights (the
    RL start, version 0) go to RUN_DIR/sft for replays and comparisons. Returns the SFT steps taken."""
    base = HFBackend(model, tokenizer, seed=config.run.seed)
    try:
        await held_out(base, "base")
    finally:
        await base.aclose()
    warm = await warm_up(model, tokenizer, env_factory, config.sft, config.rollout, seed=config.run.seed,
                         progress=config.run.progress)
    model.save_pretrained(run_dir / "sft")
    tokenizer.save_pretrained(run_dir / "sft")
    return int(warm["steps"])


def start_backend(config: TrainConfig, model: torch.nn.Module, tokenizer: Any, run_dir: Path,
                  checkpoint: Path | None, start_step: int, ranks: Ranks) -> tuple[Backend, WeightPublisher, bool]:
    """The rollout backend, its weight publisher, and whether it must catch up with the learner (one publish
    before the first step, from version start_step - 1). Call it before the learner shards the model: the HF
    backend copies the whole model.

    An engine starts from ``start_folder``. Servers (openai) hold whatever they were started with, and an
    engine cannot start from LoRA adapters or a sharded learner's checkpoint, so those catch up.
    """
    catch_up = config.backend.kind == "openai" or (
        checkpoint is not None and not (checkpoint / "model").is_dir() or
        checkpoint is not None and config.model.lora.r > 0)
    backend = make_backend(config, model, tokenizer, start_folder=start_folder(config, run_dir, checkpoint),
                           initial_version=start_step - int(catch_up))
    weights = WeightPublisher(config.backend.kind, model, backend,
                              Path(config.backend.weights_dir or run_dir / "policy"), ranks)
    return backend, weights, catch_up


class Checkpoints:
    """Saves the run's state at a step (once per step); what ``--resume`` continues from. Every rank calls
    ``save`` (a sharded learner writes its shards from every rank); the lead writes the rest."""

    def __init__(self, run_dir: Path, config: TrainConfig, model: torch.nn.Module, tokenizer: Any,
                 learner: Learner, start_step: int, ranks: Ranks) -> None:
        self.run_dir, self.config, self.model, self.tokenizer = run_dir, config, model, tokenizer
        self.learner, self.ranks = learner, ranks
        self.last_saved = start_step - 1

    def save(self, step: int) -> None:
        if step < 0 or step == self.last_saved:
            return
        sharded = self.learner.state_dict() if self.learner.parallel.sharded else None
        if sharded is None and not self.ranks.lead:
            self.last_saved = step  # replicas are the same: the lead's copy is the checkpoint
            return
        state = {"step": step, "torch_rng": torch.get_rng_state()}
        if sharded is None:
            state["learner"] = self.learner.state_dict()
        save_checkpoint(self.run_dir, step, self.model, self.tokenizer, state, keep_last=self.config.run.keep_last,
                        sharded=sharded, lead=self.ranks.lead)
        self.last_saved = step


@contextlib.contextmanager
def ctrl_c_flag() -> Iterator[asyncio.Event]:
    """Ctrl-C sets the flag: the loop finishes the step in flight, checkpoints it and exits 130; a second
    Ctrl-C aborts at once (losing only the steps since the last checkpoint). A flag checked between steps,
    not task cancellation, so no library that swallows a CancelledError can turn an interrupt into a run
    that goes on."""
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
        yield stop
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


def progress_postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's fields: reward and accuracy (of the episodes not excluded), the excluded episodes when
    there are any, the share of groups with no signal (all rewards equal), the ratio tail, sigma."""
    postfix = {"reward": f"{metrics.get('rollout/reward_mean', 0):.2f}",
               "acc": f"{metrics.get('rollout/accuracy', 0):.2f}"}
    if metrics.get("rollout/excluded", 0) > 0:
        postfix["excluded"] = f"{metrics['rollout/excluded']:.0f}/{metrics.get('rollout/episodes', 0):.0f}"
    postfix.update({"tool": f"{metrics.get('rollout/tool_call_rate', 0):.2f}",
                    "flat": f"{metrics.get('groups/all_equal_frac', float('nan')):.2f}",
                    "r_p99": f"{metrics.get('ratio/q99', float('nan')):.2f}",
                    "sigma": f"{metrics.get('sigma/mean', 0):.1e}"})
    return postfix


# ---------------------------------------------------------------------------------------------------
# Data-parallel learner (torchrun): rank 0 runs rollouts, eval and logging; every rank updates
# ---------------------------------------------------------------------------------------------------
def share_start(learner: Learner, checkpoint: Path | None) -> None:
    """Rank 0's side of the start: followers load the same checkpoint, then take rank 0's weights and sigma
    (after its SFT warm-up)."""
    broadcast(str(checkpoint) if checkpoint is not None else None)
    for tensor in [*learner.model.state_dict().values(), *learner.perturbation.state_dict().values()]:
        dist.broadcast(tensor.data, src=0)


def follow(config: TrainConfig) -> dict[str, Any]:
    """Ranks > 0 with learner.strategy=replicate: same model and learner, batches from rank 0, the all-reduced
    update, nothing else."""
    mc = config.model
    model, _ = load_model(mc.path, preset=mc.preset, seed=config.run.seed, dtype=mc.dtype,
                          device=local_device(mc.device))
    checkpoint = broadcast()
    if config.model.lora.r > 0:
        model = apply_lora(model, config.model.lora)
    learner = build_learner(config, model, None, load_state(Path(checkpoint)) if checkpoint is not None else None)
    for tensor in [*learner.model.state_dict().values(), *learner.perturbation.state_dict().values()]:
        dist.broadcast(tensor.data, src=0)
    while (message := broadcast()) != "stop":
        if message is not None:
            learner.update(message)
    return {}


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------
async def train(config: TrainConfig, *, run_dir: Path | None = None, resume: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    ranks = Ranks.join(config.model.device, config.learner.build().strategy)
    if not ranks.lead:
        logging.getLogger("agentrl").setLevel(logging.WARNING)  # rank 0 reports
    if not ranks.lead and not ranks.every_rank:
        return follow(config)  # {} on followers
    train_env = make_env_factory(config.env.id, config.env.kwargs)  # a bad env fails before anything loads
    eval_env = make_env_factory(config.env.id, {**config.env.kwargs, **config.env.eval_kwargs})
    run_dir = Path(ranks.share(str(run_dir or new_run_dir(config.run.output_dir, config.run.name))
                               if ranks.lead else None))
    if ranks.lead:
        dump_config(config, run_dir / "config.yaml")
    checkpoint = latest_checkpoint(run_dir) if resume else None
    state = load_state(checkpoint) if checkpoint is not None else None
    start_step = int(state["step"]) + 1 if state is not None else 0
    if start_step >= config.run.steps:  # nothing to redo: a finished run is extended, not repeated
        log.info("%s is finished (%d steps, checkpoint %s); nothing to do. Extend it with --resume %s "
                 "run.steps=<more>", run_dir, config.run.steps, checkpoint.name if checkpoint else "-", run_dir)
        return {"run_dir": str(run_dir), "steps": config.run.steps, "finished": True, **read_evals(run_dir)}
    if checkpoint is not None:
        log.info("resuming %s from %s (step %d)", run_dir, checkpoint.name, start_step)
    seed_everything(config.run.seed)

    mc = config.model
    model, tokenizer = load_model(start_folder(config, run_dir, checkpoint) if resume else mc.path, preset=mc.preset,
                                  seed=config.run.seed, dtype=mc.dtype, device=local_device(mc.device))
    if ranks.lead:
        tokenizer.save_pretrained(run_dir / "tokenizer")
        log.info("run dir %s | model %s (%s parameters) | learner preset %s", run_dir, mc.path or f"tiny:{mc.preset}",
                 f"{sum(p.numel() for p in model.parameters()):,}", config.learner.preset)
    sft_steps = 0
    async with contextlib.AsyncExitStack() as stack:  # the one shutdown path: closed in reverse order
        lead_url = stack.enter_context(sandbox_for(config.sandbox_url, token=config.sandbox.token)) \
            if ranks.lead else None
        sandbox_url = ranks.share(lead_url)  # every rank uses the lead's sandbox (or sandbox.url)
        if not ranks.lead:
            stack.enter_context(sandbox_for(sandbox_url, token=config.sandbox.token))
        log.info("sandbox %s", sandbox_url)
        held_out = HeldOut(run_dir, config, tokenizer, eval_env, resume=resume)
        if state is None and config.sft.steps > 0:
            if ranks.lead:
                sft_steps = await warm_up_stage(config, model, tokenizer, train_env, held_out, run_dir)
            ranks.share_weights(model)
        if config.model.lora.r > 0:
            model = apply_lora(model, config.model.lora)
        backend, weights, catch_up = start_backend(config, model, tokenizer, run_dir, checkpoint, start_step, ranks)
        stack.push_async_callback(backend.aclose)
        learner = build_learner(config, model, checkpoint, state)
        if state is not None:
            torch.set_rng_state(state["torch_rng"])
        if ranks.world > 1 and not ranks.every_rank:
            share_start(learner, checkpoint)
        if catch_up:
            await weights.publish()
        if ranks.world > 1:
            log.info("data-parallel learner (%s) over %d ranks%s", learner.parallel.strategy, ranks.world,
                     ", rollouts on every rank" if ranks.every_rank else "")
        log.info("rollouts: %s backend%s", config.backend.kind,
                 f", overlapped (max staleness {config.rollout.max_staleness}"
                 f"{', partial' if config.rollout.partial else ''})" if config.run.async_ else "")
        metrics_log = MetricsLog(run_dir, resume_step=start_step - 1 if state is not None else None,
                                 tensorboard=config.run.tensorboard,
                                 wandb_config=config.to_dict() if config.run.wandb else None) if ranks.lead else None
        if metrics_log is not None:
            stack.callback(metrics_log.close)
        if ranks.lead and "before" not in held_out.evals:
            await held_out(backend, "before")
        await rl_loop(config, run_dir, model, tokenizer, learner, backend, weights, metrics_log, held_out,
                      train_env, SandboxWatch(sandbox_url, config.sandbox.outage_timeout_s), ranks,
                      start_step=start_step, started=started)
        if ranks.lead:
            await held_out(backend, "after")
    return finish(config, run_dir, model, tokenizer, held_out, ranks, sft_steps=sft_steps, started=started)


async def rl_loop(config: TrainConfig, run_dir: Path, model: torch.nn.Module, tokenizer: Any, learner: Learner,
                  backend: Backend, weights: WeightPublisher, metrics_log: MetricsLog | None, held_out: HeldOut,
                  train_env: EnvFactory, sandbox: SandboxWatch, ranks: Ranks, *, start_step: int,
                  started: float) -> None:
    """Steps start_step .. run.steps - 1; checkpoints as configured and at the end. A step lost to a sandbox
    outage is redone once the sandbox is back (SandboxWatch). On Ctrl-C the step in flight finishes, is logged
    and checkpointed, and KeyboardInterrupt is raised; when the sandbox does not come back, the last completed
    step is checkpointed and SandboxOutage is raised. Every rank of an every-rank job runs this loop on its own
    tasks; they decide together whether a step is redone or the run stops."""
    manager = RolloutManager(backend, tokenizer, train_env, config.rollout, group_offset=ranks.rank * ranks.every_rank,
                             group_stride=ranks.world if ranks.every_rank else 1)
    rollouts = RolloutPipeline(manager, lambda step: ranks.tasks(task_seeds(config, step)), start_step=start_step,
                               overlap=config.run.async_, max_staleness=config.rollout.max_staleness)
    checkpoints = Checkpoints(run_dir, config, model, tokenizer, learner, start_step, ranks)
    threads = overlap_threads(config.run.async_, local_device(config.model.device))
    if threads is not None:  # the learner's thread and the HF backend's decoding thread share the cores
        log.info("overlapped rollouts on CPU: %d torch threads each for generation and the update", threads)
        if hasattr(backend, "threads"):
            backend.threads = threads
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentrl-learner",
                                  initializer=torch.set_num_threads if threads else None,
                                  initargs=(threads,) if threads else ())
    bar = tqdm(total=config.run.steps, initial=start_step, desc="rl", disable=not (config.run.progress and ranks.lead))
    last_logged, step = start_step - 1, start_step
    update: Future | None = None
    metrics: dict[str, float] = {}
    taken = interrupted = False
    with ctrl_c_flag() as stop:
        try:
            while step < config.run.steps and not any(ranks.gather(stop.is_set())):
                t0 = time.perf_counter()
                trajectories, metrics = await rollouts.collect(step)
                outcome = ranks.gather(await sandbox.check([t.stop_reason for t in trajectories], step))
                if "down" in outcome:
                    raise SandboxOutage(sandbox.error or f"the sandbox at {sandbox.url} stayed down on another rank")
                if "redo" in outcome:
                    metrics = {}
                    continue  # the same step again: the lost episodes are neither trained on nor counted
                metrics["perf/peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
                metrics = ranks.combine(metrics)  # perf/ keys: the largest rank's
                batch = to_train_batch(trajectories)
                if config.run.log_trajectories > 0:
                    attach_learner_ratios(learner, trajectories[: config.run.log_trajectories], ranks)
                if ranks.world > 1 and not ranks.every_rank:
                    broadcast(batch)  # None: the followers skip this step too
                if config.backend.sleep:
                    await backend.asleep()  # the engine's GPU memory goes to the learner meanwhile
                t_update = time.perf_counter()
                if all(ranks.gather(batch is not None)):  # in a thread: overlapped generation goes on meanwhile
                    update = executor.submit(learner.update, batch)
                    metrics.update(await asyncio.wrap_future(update))
                    update = None
                else:  # every rank takes part in an update, so all skip it when one has nothing to train on
                    log.warning("step %d: no trainable trajectory on a rank (all excluded, or no token left in the loss: "
                                "void turns are masked, rollout.mask_void_turns); skipping the update", step)
                taken = True  # the learner took this step: it is logged even if the run is cancelled now
                metrics["perf/learner_idle_share"] = 1.0 - (time.perf_counter() - t_update) / max(
                    time.perf_counter() - t0, 1e-9)
                if config.backend.sleep:
                    await backend.awake_up()
                await weights.publish()
                await rollouts.weights_updated()
                if ranks.lead and config.eval.every and (step + 1) % config.eval.every == 0 and step + 1 < config.run.steps:
                    metrics.update(await held_out(backend, f"step_{step}"))
                metrics["perf/step_s"] = time.perf_counter() - t0
                metrics["time"] = time.perf_counter() - started
                if metrics_log is not None:
                    metrics_log.log(step, metrics)
                    write_trajectories(run_dir, step, trajectories, tokenizer, config.run.log_trajectories)
                bar.set_postfix(progress_postfix(metrics))
                bar.update(1)
                last_logged, metrics, taken = step, {}, False
                if config.run.save_every and (step + 1) % config.run.save_every == 0:
                    checkpoints.save(step)
                step += 1
            interrupted = step < config.run.steps
        except SandboxOutage:
            checkpoints.save(last_logged)
            raise
        except asyncio.CancelledError:  # a second Ctrl-C: keep every completed step, then stop
            interrupted = True
            if update is not None:  # an update in flight finishes first: never save half a step
                metrics.update(update.result())
                taken = True
            if taken and metrics_log is not None:  # the learner took a step the log has not seen yet
                metrics_log.log(last_logged + 1, metrics)
            last_logged += int(taken)
        finally:
            bar.close()
            executor.shutdown(wait=True)
            if threads is not None and hasattr(backend, "threads"):
                backend.threads = None
            await rollouts.aclose()
            if ranks.world > 1 and not ranks.every_rank:
                broadcast("stop")
    if interrupted:
        checkpoints.save(last_logged)
        raise KeyboardInterrupt
    checkpoints.save(config.run.steps - 1)


def finish(config: TrainConfig, run_dir: Path, model: torch.nn.Module, tokenizer: Any, held_out: HeldOut,
           ranks: Ranks, *, sft_steps: int, started: float) -> dict[str, Any]:
    """Final HF checkpoint, plots, and the summary (printed and returned): held-out accuracy untrained -> after
    SFT -> after RL, RL's gain with its 95% interval (paired over the same tasks), greedy accuracy beside it.
    Every rank takes part in gathering a sharded model; the lead writes and reports ({} elsewhere)."""
    whole = full_state_dict(model)
    if not ranks.lead:
        return {}
    save_final(model, tokenizer, run_dir / "final", state_dict=whole)
    plots = plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots") if (run_dir / "metrics.jsonl").exists() else []
    evals = held_out.evals
    base, before, after = evals.get("base", {}), evals.get("before", {}), evals.get("after", {})
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": config.run.steps,
                               "wall_s": time.perf_counter() - started, "untrained": base, "sft_steps": sft_steps,
                               "before": before, "after": after, "plots": [str(p) for p in plots]}
    if before and after:
        gain = accuracy_gain(before, after, held_out.task_accuracy.get("before"), held_out.task_accuracy.get("after"))
        summary["rl_gain"] = {"mean": gain.mean, "low": gain.low, "high": gain.high, "paired": gain.paired}
        phases = [("untrained", base), ("after SFT", before), ("after RL", after)] if base else \
            [("before RL", before), ("after RL", after)]
        ev = config.eval
        print(f"[agentrl] held-out accuracy ({ev.tasks} tasks x {ev.samples} samples, temperature "
              f"{ev.temperature:g}): " + " -> ".join(f"{name} {e['eval/accuracy']:.3f}" for name, e in phases))
        if all("eval/greedy_accuracy" in e for _, e in phases):
            print("[agentrl] greedy accuracy: " + " -> ".join(f"{e['eval/greedy_accuracy']:.3f}" for _, e in phases))
        print(f"[agentrl] RL gain {gain.fmt()} | tool-call rate {before['eval/tool_call_rate']:.2f} -> "
              f"{after['eval/tool_call_rate']:.2f} | {summary['wall_s'] / 60:.1f} min | {run_dir}")
    return summary


if __name__ == "__main__":
    sys.exit(main())
