"""HTTP routes of the proxy (FastAPI) and a server thread for in-process use (tests, the training adapter).

Routes (``{session}``: letters, digits and ``._:-``, up to 128 characters):

    POST   /s/{session}/v1/chat/completions   OpenAI chat completions (tools, streaming)
    POST   /s/{session}/v1/completions        OpenAI completions (text or token-id prompt)
    GET    /s/{session}/v1/models             the served model
    GET    /s/{session}/trajectory            the session's record (samples as Trajectory dicts)
    POST   /s/{session}/reward                {"reward": float}
    DELETE /s/{session}                       forget the session
    GET    /health, /s/{session}/health       liveness (the second for clients that probe their base URL)
    GET    /stats                             calls, sessions, splits by reason, malformed tool calls

Every error, including validation and unknown routes, is an OpenAI error object (``protocol.error_body``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentrl.proxy.protocol import (
    ChatRequest,
    CompletionRequest,
    ProxyError,
    chat_chunks,
    completion_chunks,
    error_body,
    sse,
)
from agentrl.proxy.proxy import Proxy

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 30.0
"""Seconds for the server thread to start listening."""
DEFAULT_STOP_TIMEOUT_S = 10.0
"""Seconds for the server thread to finish its requests and exit."""
DEFAULT_KEEP_ALIVE_S = 75.0
"""Seconds an idle connection stays open. Longer than HTTP clients keep idle connections (httpx: 5 s), so a
client never reuses one the server is just closing (uvicorn's own default, 5 s, races with httpx's)."""
SESSION = Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="session id: one episode")


class RewardBody(BaseModel):
    reward: float


def create_app(proxy: Proxy) -> FastAPI:
    app = FastAPI(title="agentrl proxy", docs_url=None, redoc_url=None)

    @app.exception_handler(ProxyError)
    async def proxy_error(_: Request, exc: ProxyError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "path")]
        message = f"{'.'.join(where) or 'request'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message, param=".".join(where) or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), type=kind), status_code=exc.status_code)

    @app.post("/s/{session}/v1/chat/completions")
    async def chat(req: ChatRequest, session: str = SESSION) -> Response:
        return _reply(await proxy.chat(session, req), req, chat_chunks)

    @app.post("/s/{session}/v1/completions")
    async def complete(req: CompletionRequest, session: str = SESSION) -> Response:
        return _reply(await proxy.complete(session, req), req, completion_chunks)

    @app.get("/s/{session}/v1/models")
    async def models(session: str = SESSION) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": proxy.model_name, "object": "model", "created": 0,
                                            "owned_by": "agentrl"}]}

    @app.get("/s/{session}/trajectory")
    async def trajectory(session: str = SESSION) -> dict[str, Any]:
        return proxy.record(session)

    @app.post("/s/{session}/reward")
    async def reward(body: RewardBody, session: str = SESSION) -> dict[str, Any]:
        proxy.set_reward(session, body.reward)
        return {"session": session, "reward": body.reward}

    @app.delete("/s/{session}")
    async def forget(session: str = SESSION) -> dict[str, Any]:
        return proxy.close_session(session).summary()

    @app.get("/health")
    @app.get("/s/{session}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return proxy.summary()

    return app


def _reply(body: dict[str, Any], req: ChatRequest | CompletionRequest,
           chunks: Callable[..., list[dict[str, Any]]]) -> Response:
    """The response body as JSON, or as server-sent events when the request asked for a stream."""
    if not req.stream:
        return JSONResponse(body)
    include = bool((req.stream_options or {}).get("include_usage"))
    return StreamingResponse(iter([sse(chunks(body, include_usage=include))]), media_type="text/event-stream")


class ProxyServer:
    """Serves a :class:`Proxy` on 127.0.0.1 from a background thread with its own event loop.

        with ProxyServer(Proxy(backend, tokenizer)) as server:
            client = openai.OpenAI(base_url=server.base_url("episode-1"), api_key="unused")
    """

    def __init__(self, proxy: Proxy, *, port: int = 0) -> None:
        self.proxy = proxy
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ProxyServer is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def thread(self) -> threading.Thread | None:
        """The thread serving requests (None when stopped)."""
        return self._thread

    def base_url(self, session: str) -> str:
        """The OpenAI base URL of one session (an agent's ``base_url``)."""
        return f"{self.url}/s/{session}/v1"

    def start(self) -> ProxyServer:
        if self._server is not None:
            return self
        # proto IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every response waits ~40 ms for the client's delayed ACK (headers and body are two
        # writes).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(self.proxy), log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=int(DEFAULT_KEEP_ALIVE_S))
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                                        name="agentrl-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + DEFAULT_START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the proxy server did not start within {DEFAULT_START_TIMEOUT_S} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (requests in flight finish first); idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(DEFAULT_STOP_TIMEOUT_S)

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
