"""SFT warm-up on synthetic tool-use demonstrations, so the tool format appears before RL.

The demonstrations are real episodes: a scripted solver plays the env through the rollout manager (real
env, real sandbox, real chat-token bridge), writing ``print(<expression>)`` in a python block, then boxing
the tool's printed result. Training is next-token cross-entropy on the demonstration's sampled tokens only
(``loss_mask``), exactly the tokens RL will later train on. It needs tasks whose metadata carries a python
``expression`` (the procedural Arithmetic family does); other envs train with ``sft.steps=0``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from agentrl.inference.scripted import ScriptedBackend
from agentrl.rollout import RolloutConfig, RolloutManager
from agentrl.trajectory import Trajectory

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


def sft(model: torch.nn.Module, demos: list[Trajectory], *, steps: int, batch_size: int, lr: float, seed: int,
        pad_id: int, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` in place; returns the loss per step."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        index = torch.randint(len(demos), (min(batch_size, len(demos)),), generator=gen).tolist()
        loss = sft_loss(model, [demos[i] for i in index], pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses
