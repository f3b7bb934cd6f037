"""Rollout manager benchmarks (prints measured numbers; not a test).

    python benchmarks/rollout.py [--episodes 1000] [--skip-hf]

(a) manager overhead: N concurrent 4-turn episodes, a zero-latency scripted backend, an in-memory tool:
    turns/s through reset -> bridge -> generate -> env.astep -> observation tokens. Target >= 2,000.
(b) HF dynamic batching: 32 concurrent episodes vs the same 32 one at a time, tiny model, same run:
    sampled tokens/s and the ratio. Target >= 4x.
(c) overlap: the 32 HF episodes again with a 50 ms tool latency: how much of the added tool wait the
    run hides behind generation (other episodes keep generating while one waits for its tool).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

from agentrl.inference.hf import HFBackend
from agentrl.inference.scripted import ScriptedBackend
from agentrl.rollout import RolloutConfig, RolloutManager
from agentrl.tiny import load_tiny

TURNS = 4


class CounterEnv:
    """Each turn the policy 'calls a tool'; the tool answers in memory; the last turn answers."""

    max_turns = TURNS

    def __init__(self, tool_latency_s: float = 0.0) -> None:
        self.tool_latency_s = tool_latency_s

    async def areset(self, *, seed=None, options=None):
        self.turn, self.seed = 0, seed
        self.task = {"question": f"count to {TURNS}", "answer": str(TURNS)}
        return ({"role": "system", "content": "Count with the tool."},
                {"role": "user", "content": f"Task {seed}: count to {TURNS}."}), {}

    async def astep(self, action):
        self.turn += 1
        if self.tool_latency_s:
            await asyncio.sleep(self.tool_latency_s)
        info = {"tool_calls": [{"status": "Finished", "execution_time": self.tool_latency_s}],
                "void_turn": False, "tool_error": False, "correct": None}
        if self.turn >= TURNS:
            info["correct"] = True
            return (), 1.0, True, False, info
        return ({"role": "tool", "content": f"Code execution result: {self.turn}\n"},), 0.0, False, False, info

    async def aclose(self):
        return None


def counting_policy(tok):
    def policy(prompt_ids):
        done = len(re.findall(r"result: \d", tok.decode(prompt_ids[-40:])))
        return f"```python\nprint({done} + 1)\n```"

    return policy


async def bench_overhead(episodes: int) -> None:
    _, tok = load_tiny("tiny")
    cfg = RolloutConfig(n_samples=1, max_turns=TURNS, concurrency=episodes, max_new_tokens=64)
    manager = RolloutManager(ScriptedBackend(tok, counting_policy(tok)), tok, CounterEnv, cfg)
    await manager.run(list(range(50)))  # warm-up: jinja compile, tokenizer caches
    start = time.perf_counter()
    batch = await manager.run(list(range(episodes)))
    wall = time.perf_counter() - start
    turns = sum(t.num_turns for t in batch.trajectories)
    ok = all(t.stop_reason == "stop" and t.num_turns == TURNS for t in batch.trajectories)
    print(f"(a) manager overhead: {episodes} concurrent episodes, {turns} turns in {wall:.2f} s -> "
          f"{turns / wall:,.0f} turns/s (target >= 2,000); all episodes complete: {ok}")


async def run_hf(model, tok, n: int, concurrency: int, tool_latency_s: float) -> tuple[float, int, float]:
    backend = HFBackend(model, tok, seed=0)
    cfg = RolloutConfig(n_samples=1, max_turns=TURNS, concurrency=concurrency, max_new_tokens=48,
                        max_context_tokens=1024, mask_void_turns=False)
    manager = RolloutManager(backend, tok, lambda: CounterEnv(tool_latency_s), cfg)
    start = time.perf_counter()
    batch = await manager.run(list(range(n)))
    wall = time.perf_counter() - start
    await backend.aclose()
    tokens = int(batch.metrics["rollout/sampled_tokens"])
    return wall, tokens, backend.stats.busy_s


async def bench_hf() -> None:
    model, tok = load_tiny("tiny")
    await run_hf(model, tok, 4, 4, 0.0)  # warm-up
    w1, t1, _ = await run_hf(model, tok, 32, 1, 0.0)
    w32, t32, busy32 = await run_hf(model, tok, 32, 32, 0.0)
    print(f"(b) HF dynamic batching, 32 episodes: one at a time {t1 / w1:,.0f} tok/s ({t1} tokens, {w1:.1f} s); "
          f"32 concurrent {t32 / w32:,.0f} tok/s ({t32} tokens, {w32:.1f} s) -> {(t32 / w32) / (t1 / w1):.1f}x "
          f"(target >= 4x)")
    wl, tl, busyl = await run_hf(model, tok, 32, 32, 0.050)
    serial_wait = TURNS * 0.050  # one episode's tool waits, back to back
    added = wl - w32
    print(f"(c) 50 ms tool latency: wall {w32:.2f} s -> {wl:.2f} s (+{added:.2f} s) for 32 episodes x {TURNS} "
          f"tool calls; run one at a time the waits alone would add {32 * serial_wait:.1f} s; generation busy "
          f"{busyl / wl:.0%} of the wall time (vs {busy32 / w32:.0%} without tool latency)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--skip-hf", action="store_true", help="only (a)")
    args = parser.parse_args()
    asyncio.run(bench_overhead(args.episodes))
    if not args.skip_hf:
        asyncio.run(bench_hf())


if __name__ == "__main__":
    main()
