"""Rollouts on the real built-in envs against the real sandbox on loopback."""

from __future__ import annotations

import asyncio
import re

import pytest
import torch

import envs
from agentrl.inference.hf import HFBackend
from agentrl.inference.scripted import ScriptedBackend
from agentrl.rollout import RolloutConfig, RolloutManager
from agentrl.rollout.trajectory import TokenKind
from agentrl.sft import solver_policy


@pytest.fixture(scope="module")
def sandbox():
    from tools.embedded import EmbeddedSandbox

    with EmbeddedSandbox() as server:
        yield server


def arithmetic_factory(url, **kwargs):
    return lambda: envs.make("agentrl/Arithmetic-v0", sandbox=url, **kwargs)


def expressions_for(url, seeds):
    out = {}
    for s in seeds:
        env = envs.make("agentrl/Arithmetic-v0", sandbox=url)
        _, info = env.reset(seed=s)
        out[info["task"]["question"]] = info["task"]["metadata"]["expression"]
        env.close()
    return out


def check_invariants(traj):
    assert len(traj.token_ids) == len(traj.loss_mask) == len(traj.behavior_logprobs) == len(traj.turn_ids)
    assert traj.loss_mask == [int(k == TokenKind.SAMPLED) for k in traj.token_kinds]
    assert all(lp == 0.0 for lp, m in zip(traj.behavior_logprobs, traj.loss_mask, strict=True) if not m)
    assert traj.turn_ids == sorted(traj.turn_ids)


async def test_arithmetic_tool_episodes_through_the_sandbox(sandbox, tiny_tokenizer):
    tok = tiny_tokenizer
    seeds = [11, 12, 13]
    backend = ScriptedBackend(tok, solver_policy(tok, expressions_for(sandbox.url, seeds)))
    manager = RolloutManager(backend, tok, arithmetic_factory(sandbox.url), RolloutConfig(n_samples=2, max_turns=3))
    batch = await manager.run(seeds)
    for traj in batch.trajectories:
        check_invariants(traj)
        assert traj.stop_reason == "stop" and traj.correct and traj.reward == 1.0 and traj.num_turns == 2
        assert traj.tool_calls and traj.tool_calls[0]["status"] in ("Finished", "Success", "ok")
        obs = "".join(tok.decode(traj.token_ids[a:b]) for k, a, b in traj.spans() if k == TokenKind.OBSERVATION)
        assert "Code execution result:" in obs and traj.info["answer"] in obs  # the real sandbox computed it
        assert traj.group_id in (0, 1, 2)
    assert batch.metrics["rollout/tool_success_rate"] == 1.0


async def test_hf_policy_on_python_math_matches_recomputation(sandbox, tiny_tokenizer):
    from agentrl.tiny import load_tiny
    from alp.logprobs import sampling_logprobs

    model, tok = load_tiny("tiny")
    backend = HFBackend(model, tok)
    factory = lambda: envs.make("agentrl/PythonMath-v0", dataset="gsm8k", sandbox=sandbox.url)  # noqa: E731
    cfg = RolloutConfig(n_samples=2, max_turns=2, max_new_tokens=32, max_context_tokens=1024,
                        mask_void_turns=False, temperature=0.8)
    batch = await RolloutManager(backend, tok, factory, cfg).run([0, 1])
    await backend.aclose()
    for traj in batch.trajectories:
        check_invariants(traj)
        assert traj.stop_reason in ("stop", "max_turns", "length")
        ids = torch.tensor([traj.token_ids])
        with torch.no_grad():
            lp = sampling_logprobs(model(ids).logits, ids, temperature=0.8)[0]
        mask = torch.tensor(traj.loss_mask, dtype=torch.bool)
        assert torch.allclose(lp[mask], torch.tensor(traj.behavior_logprobs)[mask], atol=1e-4)


async def test_killed_sandbox_mid_batch_gives_tool_errors_and_a_finished_batch(tiny_tokenizer):
    from tools.embedded import EmbeddedSandbox

    tok = tiny_tokenizer
    server = EmbeddedSandbox().start()
    try:
        seeds = list(range(8))
        policy = solver_policy(tok, expressions_for(server.url, seeds))
        slow = ScriptedBackend(tok, lambda ids: policy(ids), latency_s=0.0)
        calls = {"n": 0}

        def delayed(ids):  # first turns go through; later turns find the sandbox dead
            calls["n"] += 1
            return policy(ids)

        slow.policy = delayed
        manager = RolloutManager(slow, tok, arithmetic_factory(server.url),
                                 RolloutConfig(n_samples=1, max_turns=3, episode_timeout_s=120))
        first = await manager.run(seeds[:2])
        assert all(t.stop_reason == "stop" for t in first.trajectories)
        server.stop()
        batch = await asyncio.wait_for(manager.run(seeds), timeout=120)
    finally:
        server.stop()
    assert len(batch.trajectories) == 8
    assert {t.stop_reason for t in batch.trajectories} == {"tool_error"}
    assert all(t.excluded == t.stop_reason and t.num_sampled == 0 for t in batch.trajectories)
    assert batch.metrics["rollout/stop/tool_error"] == 8 and batch.trainable == []
    assert re.search(r"\d", str(batch.metrics["perf/rollout_s"]))
