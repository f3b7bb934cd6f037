"""OpenAICompletionsBackend against real HTTP servers on 127.0.0.1.

The server here is a STAND-IN FOR ``vllm serve``: a small FastAPI app that implements the token-in/token-out
part of vLLM's ``/v1/completions`` (token-id prompts, ``return_tokens_as_token_ids``, ``logprobs``, ``n``,
``seed``, stop ids/strings, ``top_k``), ``/health``, ``/v1/models`` and the dev endpoints used for weight
reloads (``/collective_rpc`` ``reload_weights``, ``/reset_prefix_cache``), sampling from the real tiny
model with the kit's HFBackend and answering with vLLM-shaped JSON. It runs under uvicorn on a free port,
so the client is tested over real sockets: parsing, load balancing, health checks, retries and errors.
tests/vllm/test_vllm_serve.py runs the same client against a real ``vllm serve`` (make test-vllm).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agentrl.inference.base import SamplingParams
from agentrl.inference.hf import HFBackend
from agentrl.inference.openai import (
    BackendUnavailableError,
    OpenAICompletionsBackend,
    ServerRequestError,
    parse_token,
)
from agentrl.rollout import RolloutConfig, RolloutManager
from agentrl.rollout.trajectory import TokenKind

MODEL_NAME = "tiny-policy"


def make_app(model, tokenizer):
    """The stand-in server's FastAPI app (see the module docstring)."""
    app = FastAPI()
    app.state.backend = HFBackend(model, tokenizer)
    app.state.fail_next = 0  # answer this many completions with 503 (a server under restart)
    app.state.requests = 0
    app.state.reloads = []

    @app.get("/health")
    async def health():
        return {}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        app.state.requests += 1
        if app.state.fail_next > 0:
            app.state.fail_next -= 1
            return JSONResponse({"error": {"message": "engine restarting", "code": 503}}, status_code=503)
        if body.get("model", MODEL_NAME) != MODEL_NAME:
            msg = f"The model `{body['model']}` does not exist."
            return JSONResponse({"error": {"message": msg, "type": "NotFoundError", "code": 404}}, status_code=404)
        prompt = body["prompt"]
        if not (isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)):
            return JSONResponse({"error": {"message": "this stand-in takes token-id prompts only"}}, status_code=400)
        sampling = SamplingParams(
            temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0), top_k=max(body.get("top_k", 0), 0),
            max_new_tokens=body.get("max_tokens", 16), n=body.get("n", 1), seed=body.get("seed"),
            stop=tuple(body.get("stop") or ()), stop_token_ids=tuple(body.get("stop_token_ids") or ()),
        )
        outs = await app.state.backend.generate(prompt, sampling)
        as_ids = body.get("return_tokens_as_token_ids", False)
        choices = []
        for i, c in enumerate(outs):
            tokens = [f"token_id:{t}" if as_ids else tokenizer.decode([t]) for t in c.token_ids]
            choice = {
                "index": i,
                "text": tokenizer.decode(c.token_ids),
                "finish_reason": c.finish_reason,
                "logprobs": {"tokens": tokens, "token_logprobs": c.logprobs, "text_offset": [],
                             "top_logprobs": [{tok: lp} for tok, lp in zip(tokens, c.logprobs, strict=True)]},
            }
            choices.append(choice)
        return {"id": "cmpl-standin", "object": "text_completion", "model": MODEL_NAME, "choices": choices,
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": sum(len(c.token_ids) for c in outs)}}

    @app.post("/collective_rpc")
    async def collective_rpc(request: Request):
        body = await request.json()
        if body.get("method") != "reload_weights":
            return JSONResponse({"error": f"unknown method {body.get('method')}"}, status_code=400)
        path = body["kwargs"]["weights_path"]
        await app.state.backend.aupdate_weights(path)
        app.state.reloads.append(path)
        return {"results": [None]}

    @app.post("/reset_prefix_cache")
    async def reset_prefix_cache():
        return {}

    return app


class Server:
    """uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "stand-in server did not start"
            time.sleep(0.01)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.backend.close()


def free_url() -> str:
    """A loopback url where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def tiny():
    from agentrl.tiny import load_tiny

    return load_tiny("tiny")


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


async def test_update_weights_reloads_every_server_and_bumps_the_version(tiny, servers, tmp_path):
    model, tok = tiny
    backend = OpenAICompletionsBackend([s.url for s in servers], model=MODEL_NAME)
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
