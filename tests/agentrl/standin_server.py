"""A STAND-IN FOR ``vllm serve`` on 127.0.0.1, for tests without vLLM (the real server is used by
tests/vllm, ``make test-vllm``).

A small FastAPI app that implements the token-in/token-out part of vLLM's ``/v1/completions`` (token-id
prompts, ``return_tokens_as_token_ids``, ``logprobs``, ``n``, ``seed``, stop ids/strings, ``top_k``),
``/health``, ``/v1/models`` and the dev endpoints used for weight reloads (``/collective_rpc``
``reload_weights``, ``/reset_prefix_cache``), sampling from the real tiny model with the kit's HFBackend and
answering with vLLM-shaped JSON. It runs under uvicorn on a loopback port, so clients are tested over real
sockets: parsing, load balancing, health checks, retries, weight reloads and errors.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agentrl.inference.base import SamplingParams
from agentrl.inference.hf import HFBackend

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
        if body.get("method") == "reload_weights":
            path = body["kwargs"]["weights_path"]
            await app.state.backend.aupdate_weights(path)
        elif body.get("method") == "agentrl_load_files":  # the kit's worker extension: a list of files
            files = body["args"][0]
            path = str(Path(files[0]).parent)
            for f in files:
                await app.state.backend.aupdate_weights(f)
        else:
            return JSONResponse({"error": f"unknown method {body.get('method')}"}, status_code=400)
        app.state.reloads.append(path)
        return {"results": [None]}

    @app.post("/reset_prefix_cache")
    async def reset_prefix_cache():
        return {}

    return app


class Server:
    """uvicorn in a thread on 127.0.0.1 (a free port, or ``port`` to come back where a stopped one was)."""

    def __init__(self, app, port: int = 0):
        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
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
