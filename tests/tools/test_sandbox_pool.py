"""A sandbox pool over two real servers on loopback: one is killed mid-episode, the episode finishes on
the other (its session replayed there), and the killed server is re-admitted once it is back."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx

import envs
from envs.sandbox import close_shared_clients
from tools.client import SandboxPool
from tools.embedded import EmbeddedSandbox

OPTIONS = {"workers": 1, "preload": "math", "max_sessions": 4}


def _sessions(url: str) -> int:
    return int(httpx.get(f"{url}/health", timeout=10).json()["sessions"])


async def test_episode_survives_the_death_of_its_server() -> None:
    a = EmbeddedSandbox(uid_base=1_450_000_000, **OPTIONS).start()
    b = EmbeddedSandbox(uid_base=1_460_000_000, **OPTIONS).start()
    try:
        env = envs.make("agentrl/Arithmetic-v0", sandbox=f"{a.url},{b.url}", stateful=True, max_turns=4)
        await env.areset(seed=0)
        r = await env.astep("```python\nx = 21\nopen('note.txt', 'w').write('kept')\n```")
        assert r.info["tool_calls"][0]["status"] == "ok"
        home, other = (a, b) if _sessions(a.url) == 1 else (b, a)
        assert _sessions(home.url) == 1 and _sessions(other.url) == 0
        assert home.process is not None
        os.kill(home.process.pid, signal.SIGKILL)  # mid-episode, without warning
        home.process.wait(30)
        r = await env.astep("```python\nprint(x * 2, open('note.txt').read())\n```")
        assert r.info["tool_error"] is False, r.info
        assert r.observation[0]["content"] == "Code execution result: 42 kept\n"
        assert _sessions(other.url) == 1  # replayed there under the same session id
        r = await env.astep(f"\\boxed{{{env.task.answer}}}")
        assert r.terminated and r.info["correct"] is True
        assert _sessions(other.url) == 0  # closed with the episode, on the server that held it last
        env.close()
        await close_shared_clients()
    finally:
        a.stop()
        b.stop()


async def test_pool_readmits_a_server_that_comes_back() -> None:
    a = EmbeddedSandbox(uid_base=1_470_000_000, **OPTIONS).start()
    port = a.port
    b = EmbeddedSandbox(uid_base=1_480_000_000, **OPTIONS).start()
    try:
        async with SandboxPool([a.url, b.url], health_interval=0.2) as pool:
            a.stop()
            outs = [await pool.run_code(f"print({i})") for i in range(4)]
            assert [o.run_result.stdout for o in outs] == [f"{i}\n" for i in range(4)]
            assert [m.healthy for m in pool.members] == [False, True]
            a = EmbeddedSandbox(port=port, uid_base=1_470_000_000, **OPTIONS).start()
            deadline = time.monotonic() + 30
            while not pool.members[0].healthy and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert pool.members[0].healthy
            outs = await asyncio.gather(*(pool.run_code("print(1)") for _ in range(8)))
            assert all(o.status == "Success" for o in outs)
            assert pool.members[0].client.url == a.url
    finally:
        a.stop()
        b.stop()
