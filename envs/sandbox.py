"""Which sandbox a tool env talks to, shared clients, episode sessions, and a background loop for
synchronous ``step``.

Resolution order for the sandbox URL: the env's ``sandbox`` argument, else ``$AGENTRL_SANDBOX_URL``,
else an embedded sandbox started once per process (``tools.embedded.shared_sandbox_url``). Nothing is
resolved or started until the first tool call, so building or checking an env is free. A URL may be a
comma-separated list of servers: the envs then share a ``tools.client.SandboxPool`` over them. Every
client created here sends the bearer token in ``$AGENTRL_SANDBOX_TOKEN`` (if set).

Async clients are bound to an event loop (httpx pools are), so one client is shared per (loop, URL,
token): many env instances running concurrently in one loop share one client.

A stateful env's sandbox session belongs to its episode (:class:`EpisodeSession`): deleted when the
episode ends, and when the env is reset or closed with the episode unfinished; a client that vanishes
without either leaves it to the server's idle TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

ENV_SANDBOX_URL = "AGENTRL_SANDBOX_URL"
"""One server URL, or several separated by commas (a pool)."""
ENV_SANDBOX_TOKEN = "AGENTRL_SANDBOX_TOKEN"
"""Bearer token for every sandbox client the envs create (the training config's ``sandbox.token``)."""
DEFAULT_SESSION_CLOSE_TIMEOUT = 5.0
"""Seconds to wait for the server to delete an episode's session."""

T = TypeVar("T")

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


def resolve_sandbox_url(url: str | None = None) -> str:
    """The explicit URL, else $AGENTRL_SANDBOX_URL, else the per-process embedded sandbox (started now)."""
    if url:
        return url
    from_env = os.environ.get(ENV_SANDBOX_URL)
    if from_env:
        return from_env
    from tools.embedded import shared_sandbox_url

    return shared_sandbox_url()


def sandbox_token() -> str | None:
    """The token from $AGENTRL_SANDBOX_TOKEN (None when unset or empty)."""
    return os.environ.get(ENV_SANDBOX_TOKEN) or None


def make_client(url: str, token: str | None = None) -> Any:
    """A ``SandboxClient`` for one URL, a ``SandboxPool`` for a comma-separated list of them."""
    from tools.client import SandboxClient, SandboxPool

    urls = [u.strip() for u in url.split(",") if u.strip()]
    if len(urls) > 1:
        return SandboxPool(urls, token=token)
    return SandboxClient(urls[0] if urls else url, token=token)


def shared_client(url: str) -> Any:
    """The client for ``url`` (and $AGENTRL_SANDBOX_TOKEN) in the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    token = sandbox_token()
    key = f"{url}\0{token or ''}"
    with _clients_lock:
        per_loop = _clients.setdefault(loop, {})
        client = per_loop.get(key)
        if client is None:
            client = per_loop[key] = make_client(url, token)
    return client


async def close_shared_clients() -> None:
    """Close the shared clients of the running loop (tests and clean shutdowns)."""
    loop = asyncio.get_running_loop()
    with _clients_lock:
        per_loop = _clients.pop(loop, {})
    for client in per_loop.values():
        await client.aclose()


def infrastructure_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the tool's service failed", not "the model did something wrong"."""
    from .errors import ToolUnavailable

    try:
        from tools.errors import SandboxClientError
    except ImportError:  # the sandbox package is optional for envs without the python tool
        return (ToolUnavailable,)
    return (ToolUnavailable, SandboxClientError)


@dataclass
class EpisodeSession:
    """A sandbox session owned by one episode, remembered with the client and loop that opened it."""

    session_id: str
    client: Any
    loop: asyncio.AbstractEventLoop

    async def aclose(self) -> None:
        """Delete it on the server (bounded by DEFAULT_SESSION_CLOSE_TIMEOUT)."""
        await asyncio.wait_for(self.client.delete_session(self.session_id), DEFAULT_SESSION_CLOSE_TIMEOUT)

    def close_soon(self) -> None:
        """From synchronous code (``env.reset``/``env.close`` mid-episode): delete it on the loop that opened
        it, without waiting. A loop that is gone leaves the session to the server's idle TTL."""
        if self.loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            task = self.loop.create_task(self._quiet_close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        elif self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._quiet_close(), self.loop)

    async def _quiet_close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the TTL reaps what this misses
            await self.aclose()


_closing: set[asyncio.Task[None]] = set()


class _BackgroundLoop:
    """One daemon thread running an event loop; synchronous ``env.step`` submits its coroutine here.

    This keeps a single async code path (``astep``) and works even when the caller is itself inside a
    running loop (a notebook), where ``asyncio.run`` would fail.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="envs-sync-step", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._ensure()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError("synchronous env.step called from inside its own event loop; use astep")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


background_loop = _BackgroundLoop()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    return background_loop.run(coro)
