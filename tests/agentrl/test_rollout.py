"""RolloutManager and HF backend: trajectory invariants, masking, faults, staleness, event-loop health.

The environment here is a small in-memory calculator env that follows the envs contract (so these tests do
not need the sandbox); tests/integration runs the real envs against the real sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
import torch

from agentrl.inference.base import Completion, SamplingParams
from agentrl.inference.hf import HFBackend
from agentrl.inference.scripted import ScriptedBackend
from agentrl.rollout import RolloutConfig, RolloutManager, admit
from agentrl.rollout.trajectory import TokenKind


class CalcEnv:
    """Question 'a*b'; ```python print(...)``` blocks are 'run' by eval of a digit-only product."""

    max_turns = 3

    def __init__(self, fail_tools: bool = False, tool_delay: float = 0.0):
        self.fail_tools, self.tool_delay = fail_tools, tool_delay

    async def areset(self, *, seed=None, options=None):
        self.a, self.b = 10 + seed, 20 + seed
        self.task = {"question": f"{self.a}*{self.b}", "answer": str(self.a * self.b)}
        self.turn = 0
        return ({"role": "user", "content": f"What is {self.a}*{self.b}?"},), {}

    async def astep(self, action):
        self.turn += 1
        info = {"stop_reason": None, "is_tool_call": False, "is_answer": False, "void_turn": False,
                "tool_error": False, "tool_calls": [], "reward_breakdown": {}, "correct": None}
        box = re.search(r"\\boxed\{(\d+)\}", action)
        code = re.search(r"print\((\d+)\*(\d+)\)", action)
        if box:
            info.update(is_answer=True, stop_reason="stop", correct=box.group(1) == self.task["answer"])
            return (), float(info["correct"]), True, False, info
        if code:
            if self.tool_delay:
                await asyncio.sleep(self.tool_delay)
            if self.fail_tools:
                info.update(tool_error=True, stop_reason="tool_error")
                return (), 0.0, False, True, info
            info["is_tool_call"] = True
            info["tool_calls"] = [{"status": "Finished", "execution_time": 0.0}]
            info["metrics"] = {"calculator_calls": 1.0}
            value = int(code.group(1)) * int(code.group(2))
            obs = ({"role": "tool", "content": f"Code execution result: {value}\n"},)
        else:
            info["void_turn"] = True
            info["metrics"] = {"nudges": 1.0}
            obs = ({"role": "user", "content": "Use python or answer."},)
        if self.turn >= self.max_turns:
            info["stop_reason"] = "max_turns"
            return (), 0.0, False, True, info
        return obs, 0.0, False, False, info

    async def aclose(self):
        pass


def solver(tok):
    """Scripted: call the tool, then box the tool's result."""

    def policy(prompt_ids):
        text = tok.decode(prompt_ids)
        result = re.findall(r"Code execution result: (\d+)", text)
        if result:
            return f"The answer is \\boxed{{{result[-1]}}}."
        a, b = re.findall(r"What is (\d+)\*(\d+)", text)[0]
        return f"```python\nprint({a}*{b})\n```"

    return policy


class Recording:
    """Wraps a backend and keeps what it returned, to compare with the trajectories."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    @property
    def version(self):
        return self.inner.version

    async def generate(self, prompt, sampling):
        out = await self.inner.generate(prompt, sampling)
        self.calls.append((list(prompt), out[0]))
        return out

    def update_weights(self, w):
        return self.inner.update_weights(w)


async def test_hf_trajectories_are_token_exact_and_match_recomputation(tiny):
    from alp.logprobs import sampling_logprobs

    model, tok = tiny
    backend = Recording(HFBackend(model, tok))
    cfg = RolloutConfig(n_samples=3, max_turns=3, max_new_tokens=24, temperature=0.9, top_p=0.95, top_k=40)
    manager = RolloutManager(backend, tok, lambda: CalcEnv(), cfg)
    batch = await manager.run([1, 2])
    assert len(batch.trajectories) == 6
    assert sorted((t.group_id, t.sample_id) for t in batch.trajectories) == [(g, i) for g in (0, 1) for i in range(3)]
    completions: dict[tuple, list] = {}
    for prompt, c in backend.calls:
        completions.setdefault(tuple(prompt), []).append(c.token_ids)
    for traj in batch.trajectories:
        spans = [(a, b) for kind, a, b in traj.spans() if kind in (TokenKind.SAMPLED, TokenKind.MASKED)]
        assert len(spans) == traj.num_turns
        for a, b in spans:  # each sampled span is exactly what the backend returned for that prefix
            assert traj.token_ids[a:b] in completions[tuple(traj.token_ids[:a])]
        assert [m for m in traj.loss_mask] == [int(k == TokenKind.SAMPLED) for k in traj.token_kinds]
        ids = torch.tensor([traj.token_ids])
        with torch.no_grad():
            lp = sampling_logprobs(model(ids).logits, ids, temperature=0.9, top_p=0.95, top_k=40)[0]
        mask = torch.tensor(traj.loss_mask, dtype=torch.bool)
        if mask.any():
            assert torch.allclose(lp[mask], torch.tensor(traj.behavior_logprobs)[mask], atol=1e-4)
        assert {v for v, m in zip(traj.policy_version, traj.loss_mask, strict=True) if m} <= {0}
    assert batch.metrics["rollout/episodes"] == 6
    await backend.inner.aclose()


async def test_scripted_multiturn_masks_tool_output_and_scores(tiny_tokenizer):
    tok = tiny_tokenizer
    manager = RolloutManager(ScriptedBackend(tok, solver(tok)), tok, lambda: CalcEnv(),
                             RolloutConfig(n_samples=2, max_turns=3))
    batch = await manager.run([3, 4, 5])
    for t in batch.trajectories:
        assert t.stop_reason == "stop" and t.correct and t.reward == 1.0 and t.num_turns == 2
        obs = [tok.decode(t.token_ids[a:b]) for kind, a, b in t.spans() if kind == TokenKind.OBSERVATION]
        assert len(obs) == 1 and "Code execution result" in obs[0]
        assert all(t.behavior_logprobs[i] == -1.0 for i, m in enumerate(t.loss_mask) if m)
    assert batch.metrics["rollout/accuracy"] == 1.0 and batch.metrics["rollout/tool_call_rate"] == 1.0


async def test_void_turns_are_masked(tiny_tokenizer):
    tok = tiny_tokenizer
    manager = RolloutManager(ScriptedBackend(tok, "hmm, let me think"), tok, lambda: CalcEnv(),
                             RolloutConfig(n_samples=1, max_turns=3))
    t = (await manager.run([0])).trajectories[0]
    assert t.stop_reason == "max_turns" and t.num_turns == 3 and t.num_sampled == 0
    assert sum(1 for k in t.token_kinds if k == TokenKind.MASKED) > 0
    unmasked = RolloutManager(ScriptedBackend(tok, "hmm"), tok, lambda: CalcEnv(),
                              RolloutConfig(n_samples=1, max_turns=3, mask_void_turns=False))
    assert (await unmasked.run([0])).trajectories[0].num_sampled > 0


async def test_tool_failure_excludes_episode_and_batch_finishes(tiny_tokenizer):
    tok = tiny_tokenizer
    flaky = iter([True, False] * 10)
    manager = RolloutManager(ScriptedBackend(tok, solver(tok)), tok, lambda: CalcEnv(fail_tools=next(flaky)),
                             RolloutConfig(n_samples=2))
    batch = await manager.run([1, 2])
    reasons = sorted(t.stop_reason for t in batch.trajectories)
    assert reasons == ["stop", "stop", "tool_error", "tool_error"]
    for t in batch.trajectories:
        if t.stop_reason == "tool_error":
            assert t.excluded == t.stop_reason and t.num_sampled == 0 and t.reward == 0.0
    assert len(batch.trainable) == 2 and batch.metrics["rollout/excluded"] == 2


class Broken:
    version = 0

    async def generate(self, prompt, sampling):
        raise RuntimeError("engine died")


async def test_engine_error_and_timeout_are_stop_reasons(tiny_tokenizer):
    tok = tiny_tokenizer
    batch = await RolloutManager(Broken(), tok, lambda: CalcEnv(), RolloutConfig(n_samples=2)).run([1])
    assert [t.stop_reason for t in batch.trajectories] == ["error", "error"]
    assert "engine died" in batch.trajectories[0].info["error"]
    slow = RolloutManager(ScriptedBackend(tok, solver(tok)), tok, lambda: CalcEnv(tool_delay=5.0),
                          RolloutConfig(n_samples=2, episode_timeout_s=0.2))
    batch = await slow.run([1])
    assert [t.stop_reason for t in batch.trajectories] == ["timeout", "timeout"]
    assert all(t.excluded for t in batch.trajectories)


async def test_context_budget_ends_with_length(tiny_tokenizer):
    tok = tiny_tokenizer
    manager = RolloutManager(ScriptedBackend(tok, "x " * 200), tok, lambda: CalcEnv(),
                             RolloutConfig(n_samples=1, max_new_tokens=100, max_context_tokens=160))
    t = (await manager.run([1])).trajectories[0]
    assert t.stop_reason == "length" and len(t) <= 160


async def test_cancellation_leaves_nothing_running(tiny):
    model, tok = tiny
    backend = HFBackend(model, tok)
    manager = RolloutManager(backend, tok, lambda: CalcEnv(), RolloutConfig(n_samples=8, max_new_tokens=200))
    before = len(asyncio.all_tasks())
    task = asyncio.create_task(manager.run([1, 2]))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) == before
    # the backend dropped the cancelled rows and still serves new requests
    out = await backend.generate([1, 2, 3], SamplingParams(max_new_tokens=3, seed=0))
    assert len(out[0].token_ids) <= 3
    await backend.aclose()


async def test_no_callback_blocks_the_event_loop(tiny, caplog):
    model, tok = tiny
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    backend = HFBackend(model, tok)
    manager = RolloutManager(backend, tok, lambda: CalcEnv(), RolloutConfig(n_samples=8, max_new_tokens=32))
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            await manager.run([1, 2, 3, 4])
    finally:
        loop.set_debug(False)
        await backend.aclose()
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert not slow, slow


def test_staleness_admission(tiny_tokenizer):
    from agentrl.rollout.bridge import ChatBridge, EpisodeTokens

    bridge = ChatBridge(tiny_tokenizer)

    def traj(versions):
        ep = EpisodeTokens(bridge, [{"role": "user", "content": "q"}])
        for i, v in enumerate(versions):
            ep.add_turn([5, tiny_tokenizer.eos_token_id], [-1.0, -1.0], policy_version=v)
            if i < len(versions) - 1:
                ep.add_observation([{"role": "tool", "content": "r"}])
        return ep.to_trajectory()

    fresh, mixed, old = traj([5, 5]), traj([3, 5]), traj([1, 2])
    admitted, rejected = admit([fresh, mixed, old], current_version=5, max_staleness=2)
    assert admitted == [fresh, mixed] and rejected == [old]
    assert admit([mixed], current_version=5, max_staleness=0)[0] == []


async def test_weight_update_changes_version_and_outputs(tiny):
    model, tok = tiny
    backend = HFBackend(model, tok)
    sp = SamplingParams(max_new_tokens=8, seed=7)
    before = (await backend.generate([1, 5, 9], sp))[0]
    state = {k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items()}
    assert backend.update_weights(state) == 1
    after = (await backend.generate([1, 5, 9], sp))[0]
    assert isinstance(after, Completion) and after.version == 1 and before.version == 0
    assert after.token_ids != before.token_ids or after.logprobs != before.logprobs
    with pytest.raises(ValueError, match="do not fit"):
        backend.update_weights({"nope": torch.zeros(1)})
    await backend.aclose()


def test_config_errors():
    with pytest.raises(ValueError, match="max_context_tokens"):
        RolloutConfig(max_new_tokens=512, max_context_tokens=256)
    with pytest.raises(ValueError, match="n_samples"):
        RolloutConfig(n_samples=0)
    with pytest.raises(ValueError, match="top_p"):
        RolloutConfig(top_p=0.0)


async def test_stream_keeps_generating_while_the_consumer_updates(tiny_tokenizer):
    """Off-policy mode: groups arrive as they finish; weights change mid-stream; staleness admits."""
    tok = tiny_tokenizer
    backend = ScriptedBackend(tok, solver(tok), latency_s=0.01)
    manager = RolloutManager(backend, tok, lambda: CalcEnv(tool_delay=0.02),
                             RolloutConfig(n_samples=2, concurrency=4, max_staleness=1))
    seen, versions_seen, trajs = [], set(), []
    stream = manager.stream(range(6))
    async for group in stream:
        seen.append(group.trajectories[0].group_id)
        trajs.extend(group.trajectories)
        assert len(group.trajectories) == 2 and len({t.group_id for t in group.trajectories}) == 1
        for t in group.trajectories:
            versions_seen.update(v for v in t.policy_version if v >= 0)
        backend.update_weights({})  # a learner step between groups; in-flight episodes continue
    assert sorted(seen) == list(range(6))
    assert len(versions_seen) > 1  # episodes straddled updates: tokens from several versions
    admitted, rejected = admit(trajs, current_version=backend.version, max_staleness=1)
    assert len(admitted) + len(rejected) == len(trajs) and rejected  # the early groups are too old now
    for t in admitted:
        assert min(v for v, m in zip(t.policy_version, t.loss_mask, strict=True) if m) >= backend.version - 1


async def test_stream_close_cancels_in_flight(tiny_tokenizer):
    tok = tiny_tokenizer
    manager = RolloutManager(ScriptedBackend(tok, solver(tok), latency_s=0.05), tok, lambda: CalcEnv(),
                             RolloutConfig(n_samples=2, concurrency=8))
    before = len(asyncio.all_tasks())
    stream = manager.stream(range(100))
    first = await stream.__anext__()
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert first.trajectories and len(asyncio.all_tasks()) == before


async def test_env_metrics_are_summed_per_episode_and_averaged(tiny_tokenizer):
    script = iter(["```python\nprint(3*4)\n```", "hmm", "\\boxed{12}"] * 2)
    backend = ScriptedBackend(tiny_tokenizer, lambda _ids: next(script))
    manager = RolloutManager(backend, tiny_tokenizer, CalcEnv, RolloutConfig(n_samples=2, concurrency=1,
                                                                             mask_void_turns=False))
    batch = await manager.run([0])
    assert [t.metrics for t in batch.trajectories] == [{"calculator_calls": 1.0, "nudges": 1.0}] * 2
    assert batch.metrics["rollout/env/calculator_calls"] == 1.0 and batch.metrics["rollout/env/nudges"] == 1.0
