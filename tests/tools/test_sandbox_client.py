"""SandboxClient (retries, errors, per-call timeouts) and SandboxPool (balancing, failover, session replay,
re-admission) against in-memory transports; the pool over real servers is in test_sandbox_pool.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import tools.client as client_module
from tools.client import USE_CLIENT_DEFAULT, SandboxClient, SandboxPool, SessionLost, SyncSandboxClient
from tools.errors import (
    SandboxAuthError,
    SandboxHTTPError,
    SandboxOverloaded,
    SandboxTimeout,
    SandboxUnavailable,
)

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
    posts = [c for c in calls if c.method == "POST"]
    assert len(posts) == 3 and calls[0].headers["authorization"] == "Bearer tok"
    # Closing the client deleted the session it had opened.
    assert [(c.method, c.url.path) for c in calls[3:]] == [("DELETE", "/sessions/s")]
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


async def test_per_call_timeout_overrides_the_client_default() -> None:
    seen: list[dict[str, float | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=OK_BODY)

    async with _client(handler) as c:
        c.timeout = 60.0
        await c.run_code("print(1)", run_timeout=2.0)  # default: client timeout + run_timeout
        await c.run_code("print(1)", run_timeout=2.0, timeout=7.5)
        await c.run_code("print(1)", run_timeout=2.0, timeout=None)  # no limit
        await c.run_code("print(1)", run_timeout=2.0, timeout=USE_CLIENT_DEFAULT)
    assert [t["read"] for t in seen] == [62.0, 7.5, None, 62.0]
    assert all(t["connect"] == client_module.DEFAULT_CONNECT_TIMEOUT for t in seen)


async def test_401_is_a_clear_auth_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "missing or wrong bearer token"})

    async with _client(handler) as c:
        with pytest.raises(SandboxAuthError) as err:
            await c.run_code("print(1)")
    assert err.value.status_code == 401 and "AGENTRL_SANDBOX_TOKEN" in str(err.value)
    assert isinstance(err.value, SandboxHTTPError)


def _server(name: str, log: list[tuple[str, str, dict]], alive: dict[str, bool]):  # noqa: ANN202
    """A fake server (MockTransport; the real two-server test is in test_sandbox_pool.py): it remembers
    each session's variables by replaying nothing itself, so a replay is visible in ``log``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if not alive[name]:
            raise httpx.ConnectError("refused", request=request)
        body = json.loads(request.content or b"{}")
        log.append((name, request.method + " " + request.url.path, body))
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        if request.method == "DELETE":
            return httpx.Response(204)
        out = OK_BODY | {"run_result": OK_BODY["run_result"] | {"stdout": f"{name}:{body['code']}\n"}}
        return httpx.Response(200, json=out)

    return handler


def _pool(alive: dict[str, bool], log: list, **kw) -> SandboxPool:  # noqa: ANN001
    pool = SandboxPool([f"http://{n}.test" for n in alive], max_retries=0, **kw)
    for member, name in zip(pool.members, alive, strict=True):
        member.client._http = httpx.AsyncClient(base_url=f"http://{name}.test",
                                                transport=httpx.MockTransport(_server(name, log, alive)))
    return pool


async def test_pool_balances_and_fails_over_stateless_calls() -> None:
    alive, log = {"a": True, "b": True}, []
    async with _pool(alive, log, health_interval=0.05) as pool:
        outs = await asyncio.gather(*(pool.run_code(f"{i}") for i in range(8)))
        servers = [o.run_result.stdout.split(":")[0] for o in outs]
        assert servers.count("a") == 4 and servers.count("b") == 4
        alive["a"] = False
        outs = [await pool.run_code(f"x{i}") for i in range(4)]
        assert all(o.run_result.stdout.startswith("b:") for o in outs)
        assert [m.healthy for m in pool.members] == [False, True]
        alive["a"] = True  # re-admitted by the health probe
        for _ in range(100):
            if pool.members[0].healthy:
                break
            await asyncio.sleep(0.02)
        assert pool.members[0].healthy
        alive["a"] = alive["b"] = False
        with pytest.raises(SandboxUnavailable):
            await pool.run_code("nobody")


async def test_pool_replays_a_session_on_another_server() -> None:
    alive, log = {"a": True, "b": True}, []
    async with _pool(alive, log, health_interval=60) as pool:
        await pool.run_code("x = 1", session_id="s", files={"f.txt": "aGk="})
        home = pool.sessions["s"].member.client.url[7]
        await pool.run_code("x += 1", session_id="s")
        alive[home] = False
        r = await pool.run_code("print(x)", session_id="s")
        other = "b" if home == "a" else "a"
        assert r.run_result.stdout == f"{other}:print(x)\n"
        moved = [(path, body.get("code"), body.get("files")) for name, path, body in log if name == other]
        assert moved == [("POST /run_code", "x = 1", {"f.txt": "aGk="}), ("POST /run_code", "x += 1", None),
                         ("POST /run_code", "print(x)", None)]
        await pool.delete_session("s")
        assert log[-1][:2] == (other, "DELETE /sessions/s")


async def test_pool_session_too_large_to_replay_is_lost() -> None:
    alive, log = {"a": True, "b": True}, []
    async with _pool(alive, log, max_journal_bytes=10) as pool:
        await pool.run_code("x = 'a long cell'", session_id="s")
        alive[pool.sessions["s"].member.client.url[7]] = False
        with pytest.raises(SessionLost):
            await pool.run_code("print(x)", session_id="s")
        assert "s" not in pool.sessions


def test_pool_rejects_bad_url_lists() -> None:
    with pytest.raises(ValueError):
        SandboxPool([])
    with pytest.raises(ValueError):
        SandboxPool(["http://a", "http://a/"])
