"""Bounded load and soak on loopback: concurrency with nonces, sequential soak with leak checks,
worker crash recovery with session replay."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import httpx
import pytest

from tools.client import SandboxClient, SyncSandboxClient
from tools.embedded import EmbeddedSandbox
from tools.errors import SandboxOverloaded


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def _zombies_under(pid: int) -> int:
    count = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            stack += _children(current)
        except OSError:
            continue
        count += state == "Z"
    return count


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


async def test_64_concurrent_with_nonces(sandbox_url: str) -> None:
    async with SandboxClient(sandbox_url, max_retries=0) as client:

        async def one(i: int) -> str:
            nonce = f"{i}-{uuid.uuid4().hex}"
            try:
                r = await client.run_code(f"import sympy\nprint('{nonce}', sympy.Integer({i}) ** 2)")
            except SandboxOverloaded:
                return "429"
            assert r.run_result is not None and r.run_result.stdout == f"{nonce} {i * i}\n", r
            return "ok"

        outcomes = await asyncio.gather(*(one(i) for i in range(64)))
    assert outcomes.count("ok") >= 1 and set(outcomes) <= {"ok", "429"}


def test_overload_answers_429_not_hang() -> None:
    with EmbeddedSandbox(workers=1, max_queue=1, queue_timeout=30, preload="math", uid_base=1_500_000_000) as s:

        async def flood() -> list[str]:
            async with SandboxClient(s.url, max_retries=0) as client:

                async def one() -> str:
                    try:
                        await client.run_code("import time; time.sleep(1)", run_timeout=5)
                        return "ok"
                    except SandboxOverloaded as exc:
                        assert exc.retry_after == 1.0
                        return "429"

                start = time.monotonic()
                results = await asyncio.gather(*(one() for _ in range(6)))
                assert time.monotonic() - start < 10
                return results

        results = asyncio.run(flood())
        assert results.count("429") >= 3 and "ok" in results


def _soak(sandbox: EmbeddedSandbox, n: int) -> None:
    assert sandbox.process is not None
    pid = sandbox.process.pid
    with SyncSandboxClient(sandbox.url) as client:
        for i in range(50):  # warm up pools and caches before the baseline
            client.run_code(f"print({i})")
        fds0, rss0 = len(os.listdir(f"/proc/{pid}/fd")), _rss_kib(pid)
        for i in range(n):
            r = client.run_code(f"print({i} * 3)")
            assert r.run_result is not None and r.run_result.stdout == f"{i * 3}\n"
        time.sleep(0.5)
        fds1, rss1 = len(os.listdir(f"/proc/{pid}/fd")), _rss_kib(pid)
    assert _zombies_under(pid) == 0
    assert fds1 - fds0 <= 5, (fds0, fds1)
    assert rss1 - rss0 < 20 * 1024, (rss0, rss1)


def test_soak_300_sequential(sandbox: EmbeddedSandbox) -> None:
    _soak(sandbox, 300)


@pytest.mark.slow
def test_soak_2000_sequential(sandbox: EmbeddedSandbox) -> None:
    _soak(sandbox, 2000)


def _restarts(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("sandbox_worker_restarts_total")))


def test_crashed_worker_is_restarted_and_session_replayed() -> None:
    with EmbeddedSandbox(workers=1, preload="math", uid_base=1_600_000_000, session_idle_timeout=30) as s:
        assert s.process is not None
        with SyncSandboxClient(s.url) as client:
            sid = f"crash-{uuid.uuid4().hex}"
            client.run_code("total = 40", session_id=sid)
            client.run_code("total += 2", session_id=sid)
            zygotes = _children(s.process.pid)
            assert len(zygotes) == 1  # the worker's zygote launcher
            for zygote in zygotes:
                os.kill(zygote, signal.SIGKILL)
            # The server notices the dead zygotes by itself (no request needed) and restarts the worker.
            deadline = time.monotonic() + 60
            while (_restarts(s.url) < 1 or client.health()["status"] != "ok") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _restarts(s.url) >= 1 and client.health()["status"] == "ok"
            r = client.run_code("print('after crash')")
            assert r.run_result is not None and r.run_result.stdout == "after crash\n", r
            r = client.run_code("print(total)", session_id=sid)  # rebuilt from the journal in the new zygote
            assert r.run_result is not None and r.run_result.stdout == "42\n", r
            assert client.health()["sessions"] == 1
    with EmbeddedSandbox(workers=1, preload="math", uid_base=1_600_000_000, session_idle_timeout=2) as s:
        with SyncSandboxClient(s.url) as client:
            client.run_code("x = 1", session_id="idle")
            deadline = time.monotonic() + 10
            while client.health()["sessions"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.health()["sessions"] == 0  # closed after the idle timeout
            metrics = httpx.get(f"{s.url}/metrics", timeout=10).text
            assert 'sandbox_sessions_closed_total{reason="idle"} 1.0' in metrics
            assert "sandbox_sessions_opened_total 1.0" in metrics
