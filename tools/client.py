"""Clients for the sandbox server: :class:`SandboxClient` (async), :class:`SyncSandboxClient`, and
:class:`SandboxPool` (several servers behind the async client's interface).

One client holds one httpx connection pool and is safe for many concurrent coroutines. Every call has
an explicit timeout (the client's default, or ``timeout=`` per call; None waits forever); 429, 503 and
connection failures are retried a bounded number of times with exponential backoff (honouring
Retry-After), then raise an error from :mod:`tools.errors`. A client remembers the sessions it opened
and closes those still open when it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import httpx

from tools.errors import (
    SandboxAuthError,
    SandboxClientError,
    SandboxHTTPError,
    SandboxOverloaded,
    SandboxTimeout,
    SandboxUnavailable,
)
from tools.schema import RunCodeResponse

log = logging.getLogger("tools.client")

DEFAULT_TIMEOUT = 60.0
"""Seconds for a whole request beyond the snippet's own run_timeout (connect, queue, transfer)."""
DEFAULT_RUN_TIMEOUT = 3.0
"""Seconds the snippet itself may run (the server's wall-clock limit for it)."""
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF = 0.25
"""First retry delay in seconds; doubles per attempt, with jitter, capped by DEFAULT_MAX_BACKOFF."""
DEFAULT_MAX_BACKOFF = 5.0
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_CLOSE_SESSIONS_TIMEOUT = 5.0
"""Seconds a closing client spends deleting the sessions it left open (the server's idle TTL reaps the rest)."""
DEFAULT_POOL_MEMBER_RETRIES = 1
"""Connection retries on one pool member before the pool fails over to another."""
DEFAULT_HEALTH_INTERVAL = 2.0
"""Seconds between /health probes of a pool member that failed (re-admitted once it answers)."""
DEFAULT_HEALTH_TIMEOUT = 2.0
DEFAULT_MAX_JOURNAL_BYTES = 4 * 1024 * 1024
"""Cells (code and files) a pool keeps per session to replay it elsewhere; beyond it, it cannot move."""
RETRY_STATUSES = frozenset({429, 503})

T = TypeVar("T")


class _UseClientDefault:
    """Type of USE_CLIENT_DEFAULT: "no timeout given", as opposed to ``timeout=None`` (no limit)."""

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT = _UseClientDefault()
TimeoutArg = float | None | _UseClientDefault


class ClientState(enum.Enum):
    UNOPENED = 1
    OPEN = 2
    CLOSED = 3


def run_code_body(
    code: str,
    *,
    run_timeout: float,
    stdin: str | None,
    session_id: str | None,
    language: str,
    files: dict[str, str | None] | None,
    fetch_files: Sequence[str] | None,
    args: Sequence[str] | None,
    memory_limit_mb: int | None,
) -> dict[str, Any]:
    """The JSON body of POST /run_code (SandboxFusion's field names)."""
    body: dict[str, Any] = {"code": code, "language": language, "run_timeout": run_timeout}
    optional = {"stdin": stdin, "session_id": session_id, "memory_limit_MB": memory_limit_mb}
    body.update({k: v for k, v in optional.items() if v is not None})
    if files:
        body["files"] = files
    if fetch_files:
        body["fetch_files"] = list(fetch_files)
    if args:
        body["args"] = list(args)
    return body


class SandboxClient:
    """Async client. Use as ``async with SandboxClient(url) as sandbox: await sandbox.run_code(...)``."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.open_sessions: set[str] = set()
        """Sessions this client ran code in and has not deleted (closed with the client)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=DEFAULT_CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=DEFAULT_MAX_CONNECTIONS, max_keepalive_connections=64),
        )
        self._state = ClientState.OPEN

    def __repr__(self) -> str:
        return f"SandboxClient(url={self.url!r}, state={self._state.name})"

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Delete the sessions this client left open (best effort, bounded), close the pool; idempotent."""
        if self._state is ClientState.CLOSED:
            return
        if self.open_sessions:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self.delete_session(s) for s in list(self.open_sessions)), return_exceptions=True),
                    DEFAULT_CLOSE_SESSIONS_TIMEOUT,
                )
        self._state = ClientState.CLOSED
        await self._http.aclose()

    async def run_code(
        self,
        code: str,
        *,
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
        stdin: str | None = None,
        session_id: str | None = None,
        language: str = "python",
        files: dict[str, str | None] | None = None,
        fetch_files: Sequence[str] | None = None,
        args: Sequence[str] | None = None,
        memory_limit_mb: int | None = None,
        timeout: TimeoutArg = USE_CLIENT_DEFAULT,
    ) -> RunCodeResponse:
        """Run a snippet. A failing snippet is a response (status "Failed"), never an exception.

        ``files``: path -> base64 contents written first; ``fetch_files``: paths returned (base64) in the
        response's ``files``. ``timeout``: seconds for the whole call (default: the client's timeout plus
        ``run_timeout``; None: no limit).
        """
        body = run_code_body(code, run_timeout=run_timeout, stdin=stdin, session_id=session_id, language=language,
                             files=files, fetch_files=fetch_files, args=args, memory_limit_mb=memory_limit_mb)
        limit = self.timeout + run_timeout if isinstance(timeout, _UseClientDefault) else timeout
        response = await self._request("POST", "/run_code", json=body, timeout=limit)
        result = RunCodeResponse.model_validate_json(response.content)
        if session_id is not None:
            self.open_sessions.add(session_id)
        return result

    async def health(self, *, timeout: TimeoutArg = USE_CLIENT_DEFAULT) -> dict[str, Any]:
        response = await self._request("GET", "/health", timeout=self._limit(timeout))
        return response.json()

    async def delete_session(self, session_id: str, *, timeout: TimeoutArg = USE_CLIENT_DEFAULT) -> None:
        """Forget a session and kill its process; unknown sessions are ignored."""
        try:
            await self._request("DELETE", f"/sessions/{session_id}", timeout=self._limit(timeout))
        except SandboxHTTPError as exc:
            if exc.status_code != 404:
                raise
        self.open_sessions.discard(session_id)

    def _limit(self, timeout: TimeoutArg) -> float | None:
        return self.timeout if isinstance(timeout, _UseClientDefault) else timeout

    async def _request(self, method: str, path: str, *, timeout: float | None, **kwargs: Any) -> httpx.Response:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("SandboxClient is closed; create a new one")
        attempt = 0
        limits = httpx.Timeout(timeout, connect=DEFAULT_CONNECT_TIMEOUT)
        while True:
            retry_after: float | None = None
            try:
                response = await self._http.request(method, path, timeout=limits, **kwargs)
            except httpx.TimeoutException as exc:
                raise SandboxTimeout(f"{method} {self.url}{path}: no answer within {timeout}s ({exc!r})") from exc
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if attempt >= self.max_retries:
                    raise SandboxUnavailable(
                        f"{method} {self.url}{path}: cannot reach the sandbox after {attempt + 1} attempts: {exc!r}"
                    ) from exc
            else:
                if response.status_code < 300:
                    return response
                if response.status_code == 401:
                    raise SandboxAuthError(self.url, response.text)
                if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                    if response.status_code == 429:
                        raise SandboxOverloaded(
                            f"sandbox still overloaded after {attempt + 1} attempts", _retry_after(response)
                        )
                    raise SandboxHTTPError(response.status_code, response.text)
                retry_after = _retry_after(response)
            delay = min(DEFAULT_MAX_BACKOFF, DEFAULT_BACKOFF * 2**attempt) * (0.5 + random.random())
            await asyncio.sleep(max(delay, retry_after or 0.0))
            attempt += 1


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


# ---- several servers ------------------------------------------------------------------------------------
class SessionLost(SandboxUnavailable):
    """A pooled session's server died and the session could not be rebuilt on another one."""


@dataclass
class _Member:
    client: SandboxClient
    healthy: bool = True
    inflight: int = 0


@dataclass
class _PooledSession:
    member: _Member
    journal: list[dict[str, Any]] | None = field(default_factory=list)
    """Cells that ran to their end (code, language, args, files); None once over the journal limit."""
    journal_bytes: int = 0


class SandboxPool:
    """Several sandbox servers behind :class:`SandboxClient`'s interface.

    Stateless calls go to the healthy server with the fewest calls in flight. A session is pinned to one
    server; the pool keeps the session's finished cells, and when that server stops answering it
    replays them (output discarded) on another server under the same session id, then runs the new
    cell there. A server that failed is probed on /health every ``health_interval`` seconds and takes
    new work again once it answers.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_POOL_MEMBER_RETRIES,
        health_interval: float = DEFAULT_HEALTH_INTERVAL,
        max_journal_bytes: int = DEFAULT_MAX_JOURNAL_BYTES,
    ) -> None:
        urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        if not urls:
            raise ValueError("SandboxPool needs at least one server URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"SandboxPool got the same URL twice: {urls}")
        self.members = [_Member(SandboxClient(u, token=token, timeout=timeout, max_retries=max_retries)) for u in urls]
        self.url = ",".join(urls)
        """The servers, comma-separated (the form $AGENTRL_SANDBOX_URL takes)."""
        self.timeout = timeout
        self.health_interval = health_interval
        self.max_journal_bytes = max_journal_bytes
        self.sessions: dict[str, _PooledSession] = {}
        self._turn = itertools.count()
        self._prober: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        up = sum(m.healthy for m in self.members)
        return f"SandboxPool({up}/{len(self.members)} healthy: {self.url})"

    @property
    def open_sessions(self) -> set[str]:
        return set(self.sessions)

    async def __aenter__(self) -> SandboxPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._prober
        await asyncio.gather(*(m.client.aclose() for m in self.members), return_exceptions=True)
        self.sessions.clear()

    # ---- choosing a server ------------------------------------------------------------------------------
    def _pick(self, exclude: set[int]) -> _Member:
        turn = next(self._turn)
        candidates = [(m.inflight, (i - turn) % len(self.members), m) for i, m in enumerate(self.members)
                      if m.healthy and i not in exclude]
        if not candidates:
            down = [m.client.url for i, m in enumerate(self.members) if not m.healthy or i in exclude]
            raise SandboxUnavailable(f"no sandbox server is answering (tried {', '.join(down)})")
        return min(candidates, key=lambda c: (c[0], c[1]))[2]

    def _mark_down(self, member: _Member, exc: BaseException) -> None:
        if member.healthy:
            log.warning("sandbox server %s failed (%s); using the others until it answers /health", member.client.url, exc)
        member.healthy = False
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_down_members())

    async def _probe_down_members(self) -> None:
        while not self._closed and any(not m.healthy for m in self.members):
            await asyncio.sleep(self.health_interval)
            for member in [m for m in self.members if not m.healthy]:
                try:
                    await member.client.health(timeout=DEFAULT_HEALTH_TIMEOUT)
                except SandboxClientError:
                    continue
                log.warning("sandbox server %s answers again; re-admitted", member.client.url)
                member.healthy = True

    async def _on(self, member: _Member, **call: Any) -> RunCodeResponse:
        member.inflight += 1
        try:
            return await member.client.run_code(**call)
        finally:
            member.inflight -= 1

    # ---- calls ---------------------------------------------------------------------------------------------
    async def run_code(self, code: str, *, session_id: str | None = None, **kwargs: Any) -> RunCodeResponse:
        """Same arguments as :meth:`SandboxClient.run_code`; fails over to another server when one dies."""
        if session_id is not None:
            return await self._run_in_session(code, session_id, **kwargs)
        tried: set[int] = set()
        while True:
            member = self._pick(tried)
            try:
                return await self._on(member, code=code, **kwargs)
            except (SandboxUnavailable, SandboxOverloaded) as exc:
                tried.add(self.members.index(member))
                if isinstance(exc, SandboxUnavailable):
                    self._mark_down(member, exc)
                if len(tried) == len(self.members):
                    raise

    async def _run_in_session(self, code: str, session_id: str, **kwargs: Any) -> RunCodeResponse:
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = _PooledSession(self._pick(set()))
        tried: set[int] = set()
        moved = False
        while True:
            member = session.member
            try:
                if moved:
                    await self._replay(session_id, session)
                response = await self._on(member, code=code, session_id=session_id, **kwargs)
                break
            except SessionLost:
                self.sessions.pop(session_id, None)
                raise
            except SandboxUnavailable as exc:
                tried.add(self.members.index(member))
                self._mark_down(member, exc)
                session.member, moved = self._pick(tried), True
        if response.run_result is not None and response.run_result.status == "Finished":
            self._record(session, code, kwargs)
        return response

    async def _replay(self, session_id: str, session: _PooledSession) -> None:
        """Rebuild the session on its new server from its journal (output discarded)."""
        if session.journal is None:
            raise SessionLost(f"session {session_id!r} lost its server and is too large to replay")
        log.warning("moving session %s to %s (%d cells replayed)", session_id, session.member.client.url,
                    len(session.journal))
        for cell in session.journal:
            response = await self._on(session.member, session_id=session_id, **cell)
            if response.run_result is None or response.run_result.status != "Finished":
                raise SessionLost(f"session {session_id!r} could not be rebuilt on {session.member.client.url}: "
                                  f"{response.message}")

    def _record(self, session: _PooledSession, code: str, kwargs: dict[str, Any]) -> None:
        if session.journal is None:
            return
        cell = {"code": code} | {k: kwargs[k] for k in ("language", "files", "args", "run_timeout") if k in kwargs}
        session.journal_bytes += len(code.encode()) + sum(len(v or "") for v in (cell.get("files") or {}).values())
        if session.journal_bytes > self.max_journal_bytes:
            session.journal = None
        else:
            session.journal.append(cell)

    async def health(self, *, timeout: TimeoutArg = USE_CLIENT_DEFAULT) -> dict[str, Any]:
        """Each server's /health (or its error), by URL; ``status`` is "ok" when every server is."""
        async def one(member: _Member) -> dict[str, Any]:
            try:
                return await member.client.health(timeout=timeout)
            except SandboxClientError as exc:
                return {"status": "unreachable", "error": str(exc)}

        answers = await asyncio.gather(*(one(m) for m in self.members))
        servers = {m.client.url: a for m, a in zip(self.members, answers, strict=True)}
        ok = all(a.get("status") == "ok" for a in answers)
        return {"status": "ok" if ok else "degraded", "servers": servers}

    async def delete_session(self, session_id: str, *, timeout: TimeoutArg = USE_CLIENT_DEFAULT) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        try:
            await session.member.client.delete_session(session_id, timeout=timeout)
        except SandboxUnavailable:
            pass  # its server is gone, and the session with it


# ---- synchronous wrapper ---------------------------------------------------------------------------------
class SyncSandboxClient:
    """Synchronous wrapper: the async client runs on a private event loop in a background thread."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sandbox-client", daemon=True)
        self._thread.start()
        self._client: SandboxClient = self._call(self._make(url, token, timeout, max_retries))
        self.url = self._client.url

    @staticmethod
    async def _make(url: str, token: str | None, timeout: float, max_retries: int) -> SandboxClient:
        return SandboxClient(url, token=token, timeout=timeout, max_retries=max_retries)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("SyncSandboxClient is closed; create a new one")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncSandboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_code(self, code: str, **kwargs: Any) -> RunCodeResponse:
        """Same arguments as :meth:`SandboxClient.run_code`."""
        return self._call(self._client.run_code(code, **kwargs))

    def health(self, *, timeout: TimeoutArg = USE_CLIENT_DEFAULT) -> dict[str, Any]:
        return self._call(self._client.health(timeout=timeout))

    def delete_session(self, session_id: str, *, timeout: TimeoutArg = USE_CLIENT_DEFAULT) -> None:
        self._call(self._client.delete_session(session_id, timeout=timeout))

    def aclose(self) -> None:
        """Same as :meth:`close` (named like the async client's method)."""
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "USE_CLIENT_DEFAULT",
    "SandboxClient",
    "SandboxPool",
    "SessionLost",
    "SyncSandboxClient",
]
