"""envs/sandbox.py against real servers: the token from $AGENTRL_SANDBOX_TOKEN, episode-owned sessions,
and failed programs staying ordinary tool results (not outages) under SandboxFusion's semantics."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

import envs
from envs.sandbox import ENV_SANDBOX_TOKEN, ENV_SANDBOX_URL, close_shared_clients
from tools.embedded import EmbeddedSandbox

TOKEN = "episode-token-42"


@pytest.fixture(scope="module")
def token_server() -> EmbeddedSandbox:
    with EmbeddedSandbox(workers=1, token=TOKEN, preload="math", uid_base=1_350_000_000) as server:
        yield server


def _sessions(url: str) -> int:
    return int(httpx.get(f"{url}/health", timeout=10).json()["sessions"])


def _wait_for_sessions(url: str, count: int) -> int:
    """Poll /health until ``count`` sessions are open (deletion from synchronous code is asynchronous)."""
    deadline = time.monotonic() + 10
    while _sessions(url) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return _sessions(url)


async def _episode(url: str) -> dict:
    """One stateful episode (a tool call, then an answer); the info of its last step."""
    env = envs.make("agentrl/Arithmetic-v0", sandbox=url, stateful=True)
    try:
        await env.areset(seed=0)
        r = await env.astep("```python\nx = 6 * 7\nprint(x)\n```")
        if not (r.terminated or r.truncated):
            r = await env.astep(f"\\boxed{{{env.task.answer}}}")
        return r.info
    finally:
        env.close()
        await close_shared_clients()


async def test_token_from_the_environment_reaches_every_client(
    token_server: EmbeddedSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SANDBOX_TOKEN, TOKEN)
    info = await _episode(token_server.url)
    assert info["stop_reason"] == "stop" and info["tool_error"] is False and info["correct"] is True
    monkeypatch.delenv(ENV_SANDBOX_TOKEN)
    info = await _episode(token_server.url)
    assert info["stop_reason"] == "tool_error" and info["tool_error"] is True
    assert "401" in info["tool_error_message"] and ENV_SANDBOX_TOKEN in info["tool_error_message"]


async def test_failed_programs_are_tool_results_not_outages(sandbox_url: str) -> None:
    env = envs.make("agentrl/Arithmetic-v0", sandbox=sandbox_url, max_turns=6)
    try:
        await env.areset(seed=0)
        for code, needle in [("assert 1 == 2", "AssertionError"), ("import sys; sys.exit(3)", ""),
                             ("def (", "SyntaxError"), ("import os; os._exit(4)", "")]:
            r = await env.astep(f"```python\n{code}\n```")
            assert r.info["tool_error"] is False and not (r.terminated or r.truncated), r.info
            assert r.info["tool_calls"][0]["status"] == "error"
            assert needle in r.observation[0]["content"]
    finally:
        env.close()
        await close_shared_clients()


@pytest.mark.parametrize("how", ["end", "reset", "close"])
async def test_session_lives_as_long_as_its_episode(sandbox_url: str, how: str) -> None:
    before = _sessions(sandbox_url)
    env = envs.make("agentrl/Arithmetic-v0", sandbox=sandbox_url, stateful=True)
    try:
        await env.areset(seed=0)
        await env.astep("```python\nx = 1\n```")
        assert _sessions(sandbox_url) == before + 1
        if how == "end":
            assert (await env.astep("\\boxed{1}")).terminated
            assert _sessions(sandbox_url) == before  # deleted by the episode's end, not by a TTL
        else:  # abandoned mid-episode: deleted in the background, from synchronous code
            env.reset(seed=1) if how == "reset" else env.close()
            assert await asyncio.to_thread(_wait_for_sessions, sandbox_url, before) == before
    finally:
        env.close()
        await close_shared_clients()


def test_sync_episode_session_closed(sandbox_url: str) -> None:
    before = _sessions(sandbox_url)
    env = envs.make("agentrl/Arithmetic-v0", sandbox=sandbox_url, stateful=True)
    env.reset(seed=0)
    env.step("```python\nx = 1\n```")
    assert _sessions(sandbox_url) == before + 1
    env.close()  # from synchronous code: deleted on the background loop that opened it
    assert _wait_for_sessions(sandbox_url, before) == before


def test_url_list_builds_a_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from envs.sandbox import make_client, resolve_sandbox_url
    from tools.client import SandboxClient, SandboxPool

    monkeypatch.setenv(ENV_SANDBOX_URL, "http://127.0.0.1:1, http://127.0.0.1:2")
    monkeypatch.setenv(ENV_SANDBOX_TOKEN, "t")
    url = resolve_sandbox_url(None)
    pool = make_client(url, "t")
    assert isinstance(pool, SandboxPool) and pool.url == "http://127.0.0.1:1,http://127.0.0.1:2"
    assert all(m.client._http.headers["authorization"] == "Bearer t" for m in pool.members)
    assert isinstance(make_client("http://127.0.0.1:1"), SandboxClient)
