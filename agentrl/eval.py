"""Evaluation: accuracy, pass@k and tool-use statistics on held-out tasks.

    python -m agentrl.eval --model runs/tiny-arithmetic/final --env agentrl/Arithmetic-v0 --n 64 --samples 4

``--model`` takes a checkpoint folder, an HF id, or ``tiny`` / ``small`` (the untrained local presets).
Held-out tasks are the env's ``split=test`` (override with ``--env-kwargs``); task i is ``reset(seed=i)``
offset by ``--seed``, so two evaluations with the same arguments see the same tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections import Counter
from collections.abc import Callable
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
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agentrl.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder, HF id, or a tiny preset name (tiny, small)")
    p.add_argument("--env", default="agentrl/Arithmetic-v0", help="registered env id or module:Class")
    p.add_argument("--env-kwargs", default='{"split": "test"}', help="JSON kwargs for the env")
    p.add_argument("--n", type=int, default=64, help="held-out tasks")
    p.add_argument("--samples", type=int, default=1, help="samples per task (pass@k up to this)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sandbox-url", default=None, help="sandbox URL (default: as training resolves it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from agentrl.inference.hf import HFBackend
    from agentrl.runtime import load_model, make_env_factory, sandbox_for

    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        print(f"error: --env-kwargs is not valid JSON: {exc}", file=sys.stderr)
        return 2
    model, tokenizer = load_model(args.model)
    rollout = RolloutConfig(n_samples=max(args.samples, 1), max_turns=args.max_turns,
                            max_new_tokens=args.max_new_tokens, max_context_tokens=max(512, 4 * args.max_new_tokens))

    async def run() -> dict[str, float]:
        with sandbox_for(args.sandbox_url):
            backend = HFBackend(model, tokenizer, copy_model=False)
            try:
                return await evaluate(backend, tokenizer, make_env_factory(args.env, env_kwargs), tasks=args.n,
                                      samples=args.samples, temperature=args.temperature, seed=args.seed,
                                      rollout=rollout)
            finally:
                await backend.aclose()

    results = asyncio.run(run())
    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"{k:<{width}}  {v:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
