"""Overlapped rollouts: the staleness bound under random timings, partial rollouts, per-token versions."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch
from test_rollout import CalcEnv, solver

from agentrl.inference.base import SamplingParams
from agentrl.inference.hf import HFBackend
from agentrl.inference.scripted import ScriptedBackend
from agentrl.rollout import RolloutConfig, RolloutManager
from agentrl.rollout.pipeline import RolloutPipeline, staleness_metrics

TASKS = 3


class JitterBackend(ScriptedBackend):
    """The scripted solver with a random latency per call (seeded): episodes finish in random order."""

    def __init__(self, tokenizer, rng: random.Random):
        super().__init__(tokenizer, solver(tokenizer))
        self.rng = rng

    async def generate(self, prompt_token_ids, sampling):
        await asyncio.sleep(self.rng.uniform(0.0, 0.02))
        return await super().generate(prompt_token_ids, sampling)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("seed", range(5))
async def test_staleness_bound_holds_over_random_timings(tiny_tokenizer, seed, k):
    rng = random.Random(seed)
    backend = JitterBackend(tiny_tokenizer, rng)
    config = RolloutConfig(n_samples=2, concurrency=rng.choice([2, 4, 8]), max_staleness=k)
    manager = RolloutManager(backend, tiny_tokenizer, lambda: CalcEnv(tool_delay=rng.uniform(0, 0.01)), config)
    pipeline = RolloutPipeline(manager, lambda step: [step * 100 + i for i in range(TASKS)], start_step=0,
                               overlap=True, max_staleness=k)
    lags = []
    try:
        for step in range(8):
            trajectories, metrics = await pipeline.collect(step)
            assert backend.version == step and len({t.group_id for t in trajectories}) == TASKS
            for t in trajectories:
                versions = t.policy_versions
                assert all(step - v <= k for v in versions), (step, versions)  # admitted: within the bound
                intended = t.group_id // TASKS  # the step whose tasks this group holds
                assert min(versions) >= intended - k  # the gate: it started at most k versions early
                lags += [step - v for v in versions]
            assert metrics["rollout/staleness_max"] <= k
            await asyncio.sleep(rng.uniform(0.0, 0.05))  # the learner's update, while generation goes on
            backend.update_weights({})
            await pipeline.weights_updated()
    finally:
        await pipeline.aclose()
    assert max(lags) >= 1  # generation did run ahead of the learner: the bound was exercised


def test_staleness_metrics_count_tokens_by_lag(tiny_tokenizer):
    from agentrl.rollout.trajectory import TokenKind, Trajectory

    P, S, M = TokenKind.PROMPT, TokenKind.SAMPLED, TokenKind.MASKED
    t = Trajectory(token_ids=[1, 2, 3, 4], loss_mask=[0, 1, 1, 0], behavior_logprobs=[0, -1, -1, 0],
                   turn_ids=[0, 1, 1, 2], policy_version=[-1, 3, 4, 4], token_kinds=[P, S, S, M], prompt_length=1)
    m = staleness_metrics([t], version=5)
    assert m["rollout/tokens_at_lag/1"] == 2 and m["rollout/tokens_at_lag/2"] == 1
    assert m["rollout/staleness_max"] == 2 and m["rollout/staleness_mean"] == pytest.approx(4 / 3)
    assert m["rollout/versions_per_episode"] == 2


async def _update_mid_request(backend: HFBackend, model) -> list:
    task = asyncio.create_task(backend.generate([1, 5, 9], SamplingParams(max_new_tokens=60, seed=3)))
    while backend.stats.generated_tokens < 5:  # decoding has begun
        await asyncio.sleep(0.001)
    state = {k: v + 0.3 * torch.randn_like(v) for k, v in model.state_dict().items()}
    assert await backend.aupdate_weights(state) == 1
    return (await task)[0]


async def test_partial_rollouts_continue_under_the_new_weights(tiny):
    model, tok = tiny
    partial = HFBackend(model, tok, allow_partial=True)
    c = await _update_mid_request(partial, model)
    await partial.aclose()
    assert c.finish_reason == "length" and len(c.token_ids) == 60  # never aborted by the version bump
    versions = c.versions
    assert versions == sorted(versions) and versions[0] == 0 and versions[-1] == 1  # both, in order
    assert c.token_versions is not None and len(c.token_versions) == len(c.token_ids)


async def test_without_partial_an_update_waits_for_the_request(tiny):
    model, tok = tiny
    backend = HFBackend(model, tok)
    c = await _update_mid_request(backend, model)
    await backend.aclose()
    assert c.token_versions is None and set(c.versions) == {0}  # sampled by version 0 alone


def test_overlap_halves_the_cpu_thread_pool_only_when_rollouts_overlap_on_cpu(monkeypatch):
    from agentrl.runtime import overlap_threads

    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert overlap_threads(True, "cpu") == 2
    assert overlap_threads(False, "cpu") is None and overlap_threads(True, "cuda:0") is None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert overlap_threads(True, "cpu") is None  # nothing to split


async def test_the_hf_backend_decodes_with_the_threads_it_is_given(tiny):
    model, tok = tiny
    backend = HFBackend(model, tok, seed=0)
    forward, seen = backend.model.forward, []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())  # inside the decoding thread
        return forward(*args, **kwargs)

    backend.model.forward = spy
    params = SamplingParams(max_new_tokens=2)
    try:
        backend.threads = 1
        await backend.generate([1, 2, 3], params)
        ones = len(seen)
        backend.threads = None
        await backend.generate([1, 2, 3], params)
    finally:
        await backend.aclose()
    assert ones and set(seen[:ones]) == {1} and set(seen[ones:]) == {torch.get_num_threads()}
