"""Which sandbox a tool env talks to, shared clients, and a background loop for synchronous ``step``.

Resolution order for the sandbox URL: the env's ``sandbox`` argument, else ``$AGENTRL_SANDBOX_URL``,
else an embedded sandbox started once per process (``tools.embedded.shared_sandbox_url``). Nothing is
resolved or started until the first tool call, so building or checking an env is free.

Async clients are bound to an event loop (httpx pools are), so one client is shared per (loop, URL):
many env instances running concurrently in one loop share one ``SandboxClient``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

ENV_SANDBOX_URL = "AGENTRL_SANDBOX_URL"

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


def shared_client(url: str) -> Any:
    """The ``tools.client.SandboxClient`` for ``url`` in the running event loop (created on first use)."""
    from tools.client import SandboxClient

    loop = asyncio.get_running_loop()
    with _clients_lock:
        per_loop = _clients.setdefault(loop, {})
        client = per_loop.get(url)
        if client is None:
            client = per_loop[url] = SandboxClient(url)
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
