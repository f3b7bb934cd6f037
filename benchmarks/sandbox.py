"""Benchmark the sandbox server against a subprocess-per-request baseline (what SandboxFusion does).

    python benchmarks/sandbox.py [--workers 2] [--requests 300] [--seconds 5]

Prints p50/p99 latency of ``print(1+1)`` and of ``import sympy; print(sympy.sqrt(8))`` sequentially,
and throughput at concurrency 1/8/32, for the server with every isolation layer on and for the
baseline (a fresh ``python -c`` per request, run from an asyncio pool of the same concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.client import SandboxClient  # noqa: E402
from tools.embedded import EmbeddedSandbox  # noqa: E402

SNIPPETS = {"print(1+1)": "print(1+1)", "sympy": "import sympy; print(sympy.sqrt(8))"}
EXPECTED = {"print(1+1)": "2\n", "sympy": "2*sqrt(2)\n"}
DEFAULT_BASELINE_TIMEOUT = 600.0
"""Seconds one baseline process may take (32 concurrent sympy imports on 2 busy cores take minutes)."""


async def baseline_run(code: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), DEFAULT_BASELINE_TIMEOUT)
    await proc.wait()
    return out.decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(run: Callable[[str], Awaitable[str]], code: str, expected: str, n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        out = await run(code)
        samples.append(time.perf_counter() - start)
        assert out == expected, out
    return statistics.median(samples) * 1000, percentile(samples, 0.99) * 1000


async def throughput(run: Callable[[str], Awaitable[str]], code: str, expected: str, concurrency: int,
                     seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            out = await run(code)
            assert out == expected, out
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    with EmbeddedSandbox(workers=args.workers, max_queue=1024) as server:
        async with SandboxClient(server.url, max_retries=10) as client:
            health = await client.health()
            layers = ", ".join(k for k, v in health["isolation"].items() if v)
            print(f"sandbox: {args.workers} workers, layers on: {layers}; weaker={health['weaker_isolation']}")

            async def sandbox_run(code: str) -> str:
                r = await client.run_code(code, run_timeout=30)
                assert r.run_result is not None, r
                return r.run_result.stdout

            for _ in range(20):
                await sandbox_run("print(1+1)")
            rows = []
            for name, code in SNIPPETS.items():
                n_base = args.requests if name == "print(1+1)" else max(10, args.requests // 15)
                s50, s99 = await latency(sandbox_run, code, EXPECTED[name], args.requests)
                b50, b99 = await latency(baseline_run, code, EXPECTED[name], n_base)
                rows.append((name, s50, s99, b50, b99))
            print(f"\n{'latency (sequential)':<22}{'sandbox p50':>12}{'p99':>9}{'baseline p50':>14}{'p99':>9}{'speed-up':>10}")
            for name, s50, s99, b50, b99 in rows:
                print(f"{name:<22}{s50:>10.1f}ms{s99:>7.1f}ms{b50:>12.1f}ms{b99:>7.1f}ms{b50 / s50:>9.1f}x")
            print(f"\n{'throughput runs/s':<22}{'sandbox':>10}{'baseline':>10}{'ratio':>8}")
            for name in SNIPPETS:
                for concurrency in (1, 8, 32):
                    s = await throughput(sandbox_run, SNIPPETS[name], EXPECTED[name], concurrency, args.seconds)
                    b = await throughput(baseline_run, SNIPPETS[name], EXPECTED[name], concurrency, args.seconds)
                    print(f"{name + ' c=' + str(concurrency):<22}{s:>10.1f}{b:>10.1f}{s / b:>7.1f}x")
    gc.collect()  # finalise the baseline's subprocess transports while the loop still runs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=300, help="sequential samples per latency row")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput cell")
    asyncio.run(main(parser.parse_args()))
