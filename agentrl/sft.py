"""SFT warm-up on synthetic tool-use demonstrations, so the tool format appears before RL.

The demonstrations are real episodes: a scripted solver plays the env through the rollout manager (real
env, real sandbox, real chat-token bridge), writing ``print(<expression>)`` in a python block, then boxing
the tool's printed result. Training is next-token cross-entropy on the demonstration's sampled tokens only
(``loss_mask``), exactly the tokens RL will later train on. It needs tasks whose metadata carries a python
``expression`` (the procedural Arithmetic family does); other envs train with ``sft.steps=0``.

A model that was never pretrained (the tiny local one) cannot copy from its context, and these demonstrations
need exactly that (question -> code, tool output -> answer). Learning it from the demonstrations alone takes
500-1000+ steps depending on the batch order; a first stage on synthetic copy text (:func:`copy_examples`,
``sft.copy_steps``) teaches it in a few hundred cheaper steps. Pretrained models skip that stage.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

import torch

from agentrl.inference.scripted import ScriptedBackend
from agentrl.rollout import RolloutConfig, RolloutManager
from agentrl.rollout.trajectory import TokenKind, Trajectory
from alp.schedule import lr_factor

log = logging.getLogger(__name__)

_COPY_OPERATORS = ("+", "-", "*", "%", "mod", "is")
COPY_EXAMPLES = 4000  # distinct copy strings for the copy stage (more than it can memorise)
STOP_WINDOW = 20  # steps averaged for the early stop (single-batch losses are noisy)
_RESULT = re.compile(r"Code execution result:\s*(-?\d+)")


def solver_policy(tokenizer: Any, expressions: dict[str, str]) -> Callable[[list[int]], str]:
    """Scripted solver: code for the question's expression, then the boxed tool result."""

    def policy(prompt_ids: list[int]) -> str:
        text = tokenizer.decode(prompt_ids)
        results = _RESULT.findall(text)
        if results:
            return f"The result is \\boxed{{{results[-1]}}}."
        for question, expression in expressions.items():
            if question in text:
                return f"```python\nprint({expression})\n```"
        return "I cannot solve this."

    return policy


async def make_demonstrations(env_factory: Callable[[], Any], tokenizer: Any, n: int, *, seed: int,
                              rollout: RolloutConfig) -> list[Trajectory]:
    seeds = [seed * 100_003 + i for i in range(n)]
    expressions = {}
    for s in seeds:
        env = env_factory()
        _, info = await env.areset(seed=s)
        task = info.get("task") or {}
        expression = (task.get("metadata") or {}).get("expression")
        if expression is None:
            raise ValueError(
                "SFT warm-up needs tasks whose metadata has a python 'expression' (e.g. agentrl/Arithmetic-v0); "
                "set sft.steps=0 for this env"
            )
        expressions[task["question"]] = expression
        env.close()
    cfg = RolloutConfig(n_samples=1, max_turns=rollout.max_turns, max_new_tokens=rollout.max_new_tokens,
                        max_context_tokens=rollout.max_context_tokens, concurrency=rollout.concurrency)
    manager = RolloutManager(ScriptedBackend(tokenizer, solver_policy(tokenizer, expressions)), tokenizer,
                             env_factory, cfg)
    batch = await manager.run(seeds)
    demos = [t for t in batch.trajectories if t.correct]
    if not demos:
        reasons = sorted({t.stop_reason for t in batch.trajectories})
        raise RuntimeError(f"no correct demonstration out of {n} (stop reasons: {reasons}); is the sandbox up?")
    return demos


def copy_examples(tokenizer: Any, n: int, *, seed: int) -> list[Trajectory]:
    """Synthetic copy text for a model that is not pretrained: ``<s> | <s>`` with ``<s>`` a random arithmetic
    string (numbers of 1-4 digits and operators); the loss is on the second ``<s>`` only, which can be
    predicted by copying from the context and not otherwise. Every pretrained LM can do this; the tiny model
    learns it here in a few hundred cheap steps, before the tool demonstrations ask for it."""
    rng = random.Random(seed)
    separator = tokenizer.encode(" | ", add_special_tokens=False)
    examples = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(2, 4)):
            words += [str(rng.randrange(10 ** rng.randint(1, 4))), rng.choice(_COPY_OPERATORS)]
        text = tokenizer.encode(" ".join(words[:-1]), add_special_tokens=False)
        ids = text + separator + text
        prompt = len(text) + len(separator)
        mask = [0] * prompt + [1] * len(text)
        examples.append(Trajectory(
            token_ids=ids, loss_mask=mask, behavior_logprobs=[0.0] * len(ids), turn_ids=[0] * len(ids),
            policy_version=[0] * len(ids), prompt_length=prompt,
            token_kinds=[int(TokenKind.SAMPLED if m else TokenKind.PROMPT) for m in mask]))
    return examples


def sft_loss(model: torch.nn.Module, trajs: list[Trajectory], pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the sampled (loss-masked) tokens of the batch."""
    width = max(len(t) for t in trajs)
    ids = torch.full((len(trajs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(trajs), width), dtype=torch.float32)
    attn = torch.zeros((len(trajs), width), dtype=torch.long)
    for i, t in enumerate(trajs):  # right padding
        ids[i, : len(t)] = torch.tensor(t.token_ids)
        mask[i, : len(t)] = torch.tensor(t.loss_mask, dtype=torch.float32)
        attn[i, : len(t)] = 1
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]  # (B, T-1, V)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
    m = mask[:, 1:]
    return (nll * m).sum() / m.sum().clamp(min=1)


def sft_schedule(steps: int, warmup: float, final: float) -> Callable[[int], float]:
    """The SFT learning-rate multiplier per step: linear warm-up over the first ``warmup`` fraction of ``steps``
    (at least one step), then cosine decay to ``final`` x lr at the last step (``warmup=0, final=1``: constant)."""
    ramp = max(1, round(warmup * steps))
    return lambda step: lr_factor(step, warmup_steps=ramp, schedule="cosine", decay_steps=steps, final_ratio=final)


def sft(model: torch.nn.Module, demos: list[Trajectory], *, steps: int, batch_size: int, lr: float, seed: int,
        pad_id: int, warmup: float = 0.0, final_lr: float = 1.0, stop_loss: float | None = None,
        on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` in place for at most ``steps`` steps; returns the loss per step.

    The learning rate follows :func:`sft_schedule` (``warmup=0, final_lr=1``: constant). With ``stop_loss``,
    training ends early once the mean loss of the last :data:`STOP_WINDOW` steps is at or below it.
    """
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, sft_schedule(steps, warmup, final_lr))
    model.train()
    losses = []
    for step in range(steps):
        index = torch.randint(len(demos), (min(batch_size, len(demos)),), generator=gen).tolist()
        loss = sft_loss(model, [demos[i] for i in index], pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
        if stop_loss is not None and len(losses) >= STOP_WINDOW and sum(losses[-STOP_WINDOW:]) / STOP_WINDOW <= stop_loss:
            break
    model.eval()
    return losses


async def warm_up(model: torch.nn.Module, tokenizer: Any, env_factory: Callable[[], Any], cfg: Any,
                  rollout: RolloutConfig, *, seed: int, progress: bool = False) -> dict[str, Any]:
    """The whole warm-up, in place on ``model``: the copy stage (``cfg.copy_steps``), then the demonstrations
    (``cfg.demos`` played through ``env_factory``) and SFT on them (``cfg.steps`` at most). ``cfg`` is an
    ``agentrl.config.SFTConfig``. Returns a summary: steps taken, losses, demonstrations, seconds."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    summary: dict[str, Any] = {"copy_steps": 0, "steps": 0, "demos": 0}
    if cfg.copy_steps > 0:  # a never-pretrained model learns to copy from its context first
        copies = copy_examples(tokenizer, COPY_EXAMPLES, seed=seed)
        with tqdm(total=cfg.copy_steps, desc="sft copy", disable=not progress, leave=False) as bar:
            losses = sft(model, copies, steps=cfg.copy_steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                         pad_id=tokenizer.pad_token_id, on_step=lambda _s, _loss: bar.update(1))
        summary.update(copy_steps=len(losses), copy_loss=[losses[0], losses[-1]])
        log.info("sft copy stage: %d steps, loss %.3f -> %.3f (%.0f s)", len(losses), losses[0], losses[-1],
                 time.perf_counter() - t0)
    if cfg.steps > 0:
        demos = await make_demonstrations(env_factory, tokenizer, cfg.demos, seed=seed, rollout=rollout)
        with tqdm(total=cfg.steps, desc="sft", disable=not progress, leave=False) as bar:
            losses = sft(model, demos, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                         final_lr=cfg.final_lr, stop_loss=cfg.stop_loss, seed=seed, pad_id=tokenizer.pad_token_id,
                         on_step=lambda _s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
        summary.update(steps=len(losses), demos=len(demos), loss=[losses[0], losses[-1]])
        log.info("sft: %d demonstrations, %d steps, loss %.3f -> %.3f", len(demos), len(losses), losses[0],
                 losses[-1])
    summary["seconds"] = time.perf_counter() - t0
    return summary
