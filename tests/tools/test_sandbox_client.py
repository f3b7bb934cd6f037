"""SandboxClient retries and errors, against an in-memory transport (no server needed)."""

from __future__ import annotations

import httpx
import pytest

import tools.client as client_module
from tools.client import SandboxClient, SyncSandboxClient
from tools.errors import SandboxHTTPError, SandboxOverloaded, SandboxTimeout, SandboxUnavailable

OK_BODY = {"status": "Success", "message": "", "run_result": {"status": "Finished", "execution_time": 0.01,
                                                             "return_code": 0, "stdout": "2\n", "stderr": ""}}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "DEFAULT_BACKOFF", 0.001)


def _client(handler, max_retries: int = 3) -> SandboxClient:  # noqa: ANN001
    c = SandboxClient("http://sandbox.test", max_retries=max_retries, token="tok")
    c._http = httpx.AsyncClient(base_url="http://sandbox.test", transport=httpx.MockTransport(handler),
                                headers={"Authorization": "Bearer tok"})
    return c


async def test_retries_429_then_succeeds() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "busy"})
        return httpx.Response(200, json=OK_BODY)

    async with _client(handler) as c:
        r = await c.run_code("print(1+1)", run_timeout=2.0, session_id="s", stdin="x")
    assert r.run_result is not None and r.run_result.stdout == "2\n"
    assert len(calls) == 3 and calls[0].headers["authorization"] == "Bearer tok"
    body = httpx.Request("POST", "/", content=calls[0].content).read()
    assert b'"session_id":"s"' in body.replace(b" ", b"") and b'"run_timeout":2.0' in body.replace(b" ", b"")


async def test_overloaded_after_retries() -> None:
    count = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "busy"})

    async with _client(handler, max_retries=2) as c:
        with pytest.raises(SandboxOverloaded):
            await c.run_code("print(1)")
    assert count == 3


async def test_unavailable_after_connection_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with _client(handler, max_retries=1) as c:
        with pytest.raises(SandboxUnavailable):
            await c.health()


async def test_other_status_is_http_error_without_retry() -> None:
    count = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(500, text="boom")

    async with _client(handler) as c:
        with pytest.raises(SandboxHTTPError) as err:
            await c.run_code("print(1)")
    assert err.value.status_code == 500 and "boom" in err.value.body and count == 1


async def test_timeout_is_sandbox_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with _client(handler) as c:
        with pytest.raises(SandboxTimeout):
            await c.run_code("print(1)")


async def test_delete_session_ignores_404_and_closed_client_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "no session"})

    c = _client(handler)
    await c.delete_session("gone")
    await c.aclose()
    await c.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await c.health()


def test_sync_client_unreachable() -> None:
    with SyncSandboxClient("http://127.0.0.1:9", max_retries=0, timeout=2) as c, pytest.raises(SandboxUnavailable):
        c.health()
