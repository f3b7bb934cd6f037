"""OpenAICompletionsBackend against real HTTP servers on 127.0.0.1 (stand-ins for ``vllm serve``: see
standin_server.py; tests/vllm/test_vllm_serve.py runs the same client against a real ``vllm serve``)."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
import torch
from standin_server import MODEL_NAME, Server, make_app

from agentrl.inference.base import SamplingParams
from agentrl.inference.openai import (
    BackendUnavailableError,
    OpenAICompletionsBackend,
    ServerRequestError,
    parse_token,
)
from agentrl.rollout import RolloutConfig, RolloutManager
from agentrl.rollout.trajectory import TokenKind


def free_url() -> str:
    """A loopback url where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def servers(tiny):
    model, tok = tiny
    pair = [Server(make_app(model, tok)), Server(make_app(model, tok))]
    yield pair
    for s in pair:
        s.stop()


@pytest.fixture(autouse=True)
def _reset_servers(request):
    if "servers" in request.fixturenames:
        for s in request.getfixturevalue("servers"):
            s.app.state.fail_next, s.app.state.requests = 0, 0


def recompute(model, prompt, completion, **sampling):
    from alp.logprobs import sampling_logprobs

    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        lp = sampling_logprobs(model(ids).logits, ids, **sampling)[0]
    return lp[len(prompt):]


async def test_token_ids_and_logprobs_round_trip(tiny, servers):
    model, tok = tiny
    backend = OpenAICompletionsBackend([servers[0].url], model=MODEL_NAME)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 12*34?"}], add_generation_prompt=True,
                                     tokenize=True, return_dict=False)
    sp = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, max_new_tokens=12, n=3, seed=7)
    outs = await backend.generate(prompt, sp)
    assert len(outs) == 3
    again = await backend.generate(prompt, sp)
    assert [c.token_ids for c in outs] == [c.token_ids for c in again]  # seeded: repeatable
    for c in outs:
        assert c.version == 0 and c.finish_reason in ("stop", "length") and len(c.token_ids) == len(c.logprobs)
        lp = recompute(model, prompt, c.token_ids, temperature=0.8, top_p=0.9, top_k=50)
        assert torch.allclose(lp, torch.tensor(c.logprobs), atol=1e-4)
    # stop ids end the completion and are kept
    stop_id = outs[0].token_ids[2]
    short = await backend.generate(prompt, sp.with_(n=1, stop_token_ids=(stop_id,)))
    assert short[0].token_ids[-1] == stop_id and short[0].finish_reason == "stop"
    assert backend.stats.requests == 7 and backend.stats.generated_tokens > 0
    await backend.aclose()


class CalcEnv:
    """Question 'a*b'; a ```python print(a*b)``` block gets the product back; \\boxed{} ends the episode."""

    max_turns = 3

    async def areset(self, *, seed=None, options=None):
        self.a, self.b, self.turn = 10 + seed, 20 + seed, 0
        self.task = {"question": f"{self.a}*{self.b}", "answer": str(self.a * self.b)}
        return ({"role": "user", "content": f"What is {self.a}*{self.b}?"},), {}

    async def astep(self, action):
        self.turn += 1
        info = {"stop_reason": None, "is_tool_call": False, "is_answer": False, "void_turn": False,
                "tool_error": False, "tool_calls": [], "reward_breakdown": {}, "correct": None}
        if box := re.search(r"\\boxed\{(\d+)\}", action):
            info.update(is_answer=True, stop_reason="stop", correct=box.group(1) == self.task["answer"])
            return (), float(info["correct"]), True, False, info
        info["void_turn"] = True
        if self.turn >= self.max_turns:
            info["stop_reason"] = "max_turns"
            return (), 0.0, False, True, info
        return ({"role": "user", "content": "Use python or answer."},), 0.0, False, False, info

    async def aclose(self):
        pass


async def test_rollouts_over_two_servers_meet_the_invariants(tiny, servers):
    model, tok = tiny
    backend = OpenAICompletionsBackend([s.url for s in servers], model=MODEL_NAME)
    calls = []
    inner_generate = backend.generate

    async def recording(prompt, sampling):
        out = await inner_generate(prompt, sampling)
        calls.append((tuple(prompt), out[0].token_ids))
        return out

    backend.generate = recording
    cfg = RolloutConfig(n_samples=3, max_turns=2, max_new_tokens=16, temperature=0.9, top_p=0.95, top_k=40,
                        mask_void_turns=False)  # the untrained model's turns are void: keep them in the loss
    batch = await RolloutManager(backend, tok, CalcEnv, cfg).run([1, 2])
    assert len(batch.trajectories) == 6
    returned: dict[tuple, list] = {}
    for prompt, ids in calls:
        returned.setdefault(prompt, []).append(ids)
    for traj in batch.trajectories:
        spans = [(a, b) for kind, a, b in traj.spans() if kind in (TokenKind.SAMPLED, TokenKind.MASKED)]
        assert len(spans) == traj.num_turns
        for a, b in spans:  # each sampled span is exactly what a server returned for that prefix
            assert traj.token_ids[a:b] in returned[tuple(traj.token_ids[:a])]
        assert traj.loss_mask == [int(k == TokenKind.SAMPLED) for k in traj.token_kinds]
        ids = torch.tensor([traj.token_ids])
        from alp.logprobs import sampling_logprobs

        with torch.no_grad():
            lp = sampling_logprobs(model(ids).logits, ids, temperature=0.9, top_p=0.95, top_k=40)[0]
        mask = torch.tensor(traj.loss_mask, dtype=torch.bool)
        assert mask.any()
        assert torch.allclose(lp[mask], torch.tensor(traj.behavior_logprobs)[mask], atol=1e-4)
    assert all(s.app.state.requests > 0 for s in servers), "load balancing sent nothing to one server"
    assert sum(s.requests for s in backend.servers) == len(calls)
    await backend.aclose()


async def test_a_down_server_is_skipped_and_probed(servers):
    dead = free_url()
    backend = OpenAICompletionsBackend([dead, servers[0].url], model=MODEL_NAME, health_interval_s=0.2,
                                       backoff_s=0.01)
    sp = SamplingParams(max_new_tokens=4, seed=1)
    outs = await asyncio.gather(*(backend.generate([5, 6, 7], sp) for _ in range(6)))
    assert all(len(o[0].token_ids) >= 1 for o in outs)
    down = backend.servers[0]
    assert not down.healthy and "Connect" in down.last_error
    assert await backend.check_health() == {dead: False, servers[0].url: True}
    await backend.aclose()


async def test_retries_on_503_then_succeed_and_bounded(servers):
    servers[0].app.state.fail_next = 2
    backend = OpenAICompletionsBackend([servers[0].url], model=MODEL_NAME, max_retries=2, backoff_s=0.01,
                                       health_interval_s=0.0)
    out = await backend.generate([5, 6, 7], SamplingParams(max_new_tokens=3, seed=3))
    assert len(out[0].token_ids) >= 1 and servers[0].app.state.requests == 3
    servers[0].app.state.fail_next = 10
    strict = OpenAICompletionsBackend([servers[0].url], model=MODEL_NAME, max_retries=1, backoff_s=0.01,
                                      health_interval_s=0.0)
    with pytest.raises(BackendUnavailableError, match=r"after 2 attempts.*503 engine restarting"):
        await strict.generate([5, 6, 7], SamplingParams(max_new_tokens=3))
    await backend.aclose()
    await strict.aclose()


async def test_client_errors_are_not_retried_and_say_why(servers):
    backend = OpenAICompletionsBackend([s.url for s in servers], model="no-such-model", max_retries=3)
    with pytest.raises(ServerRequestError, match="404 The model `no-such-model` does not exist"):
        await backend.generate([5, 6], SamplingParams(max_new_tokens=2))
    assert sum(s.app.state.requests for s in servers) == 1
    nowhere = OpenAICompletionsBackend([free_url()], max_retries=1, backoff_s=0.01)
    with pytest.raises(BackendUnavailableError, match="ConnectError"):
        await nowhere.generate([5, 6], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="at least one server"):
        OpenAICompletionsBackend([])
    with pytest.raises(ValueError, match="not spelled as an id"):
        parse_token("hello")
    assert parse_token("token_id:42") == 42
    await backend.aclose()
    await nowhere.aclose()


@pytest.mark.parametrize("weight_sync", ["vllm", "buckets"])
async def test_update_weights_reloads_every_server_and_bumps_the_version(tiny, servers, tmp_path, weight_sync):
    model, tok = tiny
    backend = OpenAICompletionsBackend([s.url for s in servers], model=MODEL_NAME, weight_sync=weight_sync)
    sp = SamplingParams(max_new_tokens=8, seed=11, n=2)
    before = await backend.generate([5, 6, 7, 8], sp)
    new = _perturbed_copy(model)
    new.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(TypeError, match="cannot receive a state dict"):
        backend.update_weights(new.state_dict())
    assert await backend.aupdate_weights(tmp_path / "ckpt") == 1
    assert all(s.app.state.reloads[-1] == str((tmp_path / "ckpt").resolve()) for s in servers)
    after = await backend.generate([5, 6, 7, 8], sp)
    assert all(c.version == 1 for c in after)
    assert [c.token_ids for c in after] != [c.token_ids for c in before] or \
        [c.logprobs for c in after] != [c.logprobs for c in before]
    lp = recompute(new, [5, 6, 7, 8], after[0].token_ids, temperature=1.0)
    assert torch.allclose(lp, torch.tensor(after[0].logprobs), atol=1e-4)
    # restore the servers' weights for the other tests
    model.save_pretrained(tmp_path / "orig")
    await backend.aupdate_weights(tmp_path / "orig")
    await backend.aclose()


def _perturbed_copy(model):
    import copy

    new = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return new


async def test_update_waits_for_requests_in_flight(servers, tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path / "same")
    backend = OpenAICompletionsBackend([servers[0].url], model=MODEL_NAME)
    sp = SamplingParams(max_new_tokens=24, seed=5)
    running = [asyncio.create_task(backend.generate([5, 6, 7], sp)) for _ in range(4)]
    await asyncio.sleep(0.05)
    version = await backend.aupdate_weights(tmp_path / "same")
    late = await backend.generate([5, 6, 7], sp)
    early = await asyncio.gather(*running)
    assert all(c[0].version == version - 1 for c in early) and late[0].version == version
    await backend.aclose()
