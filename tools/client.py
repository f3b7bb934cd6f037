"""Clients for the sandbox server: :class:`SandboxClient` (async) and :class:`SyncSandboxClient`.

One client holds one httpx connection pool and is safe for many concurrent coroutines. Every call has
an explicit timeout; 429, 503 and connection failures are retried a bounded number of times with
exponential backoff (honouring Retry-After), then raise an error from :mod:`tools.errors`.
"""

from __future__ import annotations

import asyncio
import enum
import random
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import httpx

from tools.errors import SandboxHTTPError, SandboxOverloaded, SandboxTimeout, SandboxUnavailable
from tools.schema import RunCodeResponse

DEFAULT_TIMEOUT = 60.0
"""Seconds for a whole request beyond the snippet's own run_timeout (connect, queue, transfer)."""
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF = 0.25
"""First retry delay in seconds; doubles per attempt, with jitter, capped by DEFAULT_MAX_BACKOFF."""
DEFAULT_MAX_BACKOFF = 5.0
DEFAULT_MAX_CONNECTIONS = 256
RETRY_STATUSES = frozenset({429, 503})

T = TypeVar("T")


class ClientState(enum.Enum):
    UNOPENED = 1
    OPEN = 2
    CLOSED = 3


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
        """Close the connection pool; idempotent."""
        if self._state is not ClientState.CLOSED:
            self._state = ClientState.CLOSED
            await self._http.aclose()

    async def run_code(
        self,
        code: str,
        *,
        run_timeout: float = 3.0,
        stdin: str | None = None,
        session_id: str | None = None,
        language: str = "python",
    ) -> RunCodeResponse:
        """Run a snippet. A failing snippet is a response (status "Failed"), never an exception."""
        body: dict[str, Any] = {"code": code, "language": language, "run_timeout": run_timeout}
        if stdin is not None:
            body["stdin"] = stdin
        if session_id is not None:
            body["session_id"] = session_id
        response = await self._request("POST", "/run_code", json=body, timeout=self.timeout + run_timeout)
        return RunCodeResponse.model_validate(response.json())

    async def health(self) -> dict[str, Any]:
        response = await self._request("GET", "/health", timeout=self.timeout)
        return response.json()

    async def delete_session(self, session_id: str) -> None:
        """Forget a session and kill its process; unknown sessions are ignored."""
        try:
            await self._request("DELETE", f"/sessions/{session_id}", timeout=self.timeout)
        except SandboxHTTPError as exc:
            if exc.status_code != 404:
                raise

    async def _request(self, method: str, path: str, *, timeout: float, **kwargs: Any) -> httpx.Response:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("SandboxClient is closed; create a new one")
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await self._http.request(method, path, timeout=httpx.Timeout(timeout, connect=DEFAULT_CONNECT_TIMEOUT), **kwargs)
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

    def run_code(
        self,
        code: str,
        *,
        run_timeout: float = 3.0,
        stdin: str | None = None,
        session_id: str | None = None,
        language: str = "python",
    ) -> RunCodeResponse:
        return self._call(
            self._client.run_code(code, run_timeout=run_timeout, stdin=stdin, session_id=session_id, language=language)
        )

    def health(self) -> dict[str, Any]:
        return self._call(self._client.health())

    def delete_session(self, session_id: str) -> None:
        self._call(self._client.delete_session(session_id))

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


__all__ = ["SandboxClient", "SyncSandboxClient", "DEFAULT_TIMEOUT", "DEFAULT_MAX_RETRIES"]
