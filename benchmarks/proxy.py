"""Proxy overhead: agent calls through the OpenAI proxy vs the same calls on the backend directly.

    python benchmarks/proxy.py [--sessions 32] [--rounds 20] [--turns 3] [--max-tokens 32] [--tool-ms 50] [--no-admission]

Both paths drive the same HFBackend (the tiny model) in the same process, with the same requests: each of
``--sessions`` concurrent sessions runs a ``--turns``-call conversation (system + user, then each turn's
answer and a tool message), every call with the same seed and token budget on both paths, so both sample
the same tokens.

- direct: the kit's own path, the chat-token bridge (EpisodeTokens) building prompt ids, then
  ``backend.generate``, as RolloutManager does;
- proxy: ``openai.AsyncOpenAI`` -> HTTP on loopback -> the proxy (render, place, generate, record, parse)
  in its server thread -> the same backend; sessions opened and closed around the episodes as the training
  adapter does.

Two scenarios. *Lockstep*: every session calls again the moment its answer arrives, so on the direct path all
32 calls of a turn reach the HF backend within its 2 ms gather window and decode as one batch; any skew the
proxy adds (32 responses and requests go through HTTP one by one) can push calls into a later batch, since
the HF backend admits requests only between batches. *Tool latency*: between calls each session waits a
seeded random time, uniform in [0, 2 x --tool-ms] ms and the same on both paths, as an agent running a tool
does; arrivals are then spread on both paths.

Rounds alternate which path goes first. Per round, the ratio of the mean per-call latency (proxy / direct,
latency = the model call, not the tool wait); printed per scenario: the means, the geometric mean of the
ratios with its standard error over rounds, the backend's batches (a turn split into two batches is what costs
most), the CPU time per call of the agents' thread (the openai client on the proxy path)
and of the proxy's server thread, and the machine load. Target: at most 10% extra latency at 32 concurrent
sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import threading
import time

import openai

from agentrl.inference.base import SamplingParams
from agentrl.inference.hf import HFBackend
from agentrl.proxy import Proxy, ProxyServer
from agentrl.rollout.bridge import ChatBridge, EpisodeTokens
from agentrl.tiny import load_tiny

SYSTEM = "Solve the task. You can run python."


def first_messages(session: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Task {session}: compute {session} * 7."}]


def tool_message(session: int, turn: int) -> dict[str, str]:
    return {"role": "tool", "content": f"Code execution result: {session * 7 + turn}\n"}


def seed(round_: int, session: int, turn: int) -> int:
    return (round_ * 1000 + session) * 10 + turn


async def tool_wait(tool_ms: float, round_: int, session: int, turn: int) -> None:
    """The agent's own work between two calls (a tool), the same on both paths."""
    if tool_ms > 0:
        await asyncio.sleep(random.Random(seed(round_, session, turn)).uniform(0, 2 * tool_ms) / 1e3)


async def direct_session(backend: HFBackend, bridge: ChatBridge, round_: int, session: int, turns: int,
                         max_tokens: int, tool_ms: float) -> tuple[list[float], int]:
    episode = EpisodeTokens(bridge, first_messages(session))
    latencies, tokens = [], 0
    for turn in range(turns):
        if turn:
            await tool_wait(tool_ms, round_, session, turn)
        t0 = time.perf_counter()
        if turn:
            episode.add_observation([tool_message(session, turn)])
        sampling = SamplingParams(max_new_tokens=max_tokens, seed=seed(round_, session, turn))
        completion = (await backend.generate(list(episode.token_ids), sampling))[0]
        episode.add_turn(completion.token_ids, completion.logprobs, policy_version=completion.version)
        latencies.append(time.perf_counter() - t0)
        tokens += len(completion.token_ids)
    return latencies, tokens


async def proxy_session(client: openai.AsyncOpenAI, round_: int, session: int, turns: int,
                        max_tokens: int, tool_ms: float) -> tuple[list[float], int]:
    messages: list[dict] = first_messages(session)
    latencies, tokens = [], 0
    for turn in range(turns):
        if turn:
            await tool_wait(tool_ms, round_, session, turn)
        t0 = time.perf_counter()
        if turn:
            messages.append(tool_message(session, turn))
        r = await client.chat.completions.create(model="policy", messages=messages, max_tokens=max_tokens,
                                                 seed=seed(round_, session, turn))
        messages.append(r.choices[0].message.model_dump(exclude_none=True))
        latencies.append(time.perf_counter() - t0)
        tokens += r.usage.completion_tokens
    return latencies, tokens


def thread_cpu_s(thread: threading.Thread | None) -> float:
    """CPU seconds a thread has used so far."""
    if thread is None or thread.ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


async def run_round(kind: str, round_: int, args: argparse.Namespace, tool_ms: float, backend: HFBackend,
                    bridge: ChatBridge, server: ProxyServer, client: openai.AsyncOpenAI) -> tuple[float, int]:
    if kind == "direct":
        jobs = [direct_session(backend, bridge, round_, s, args.turns, args.max_tokens, tool_ms)
                for s in range(args.sessions)]
        results = await asyncio.gather(*jobs)
    else:  # sessions opened and closed around the episodes, as the training adapter (AgentEnv) does; one
        # connection pool for all of them, as an agent process holds (a client's TLS setup costs more than a call)
        names = [f"t{tool_ms:g}-r{round_}-s{s}" for s in range(args.sessions)]
        for name in names:
            server.proxy.open_session(name)
        clients = [client.with_options(base_url=server.base_url(name)) for name in names]
        results = await asyncio.gather(*(proxy_session(c, round_, s, args.turns, args.max_tokens, tool_ms)
                                         for s, c in enumerate(clients)))
        for name in names:
            server.proxy.close_session(name)
    latencies = [x for lat, _ in results for x in lat]
    return statistics.fmean(latencies), sum(t for _, t in results)


async def scenario(args: argparse.Namespace, tool_ms: float, backend: HFBackend, bridge: ChatBridge,
                   server: ProxyServer, client: openai.AsyncOpenAI) -> None:
    load_before = os.getloadavg()
    for kind in ("direct", "proxy"):  # warm-up: jinja, tokenizer caches, HTTP connections
        await run_round(kind, -1, args, tool_ms, backend, bridge, server, client)
    means: dict[str, list[float]] = {"direct": [], "proxy": []}
    tokens: dict[str, int] = {"direct": 0, "proxy": 0}
    cpu: dict[tuple[str, str], float] = {(k, t): 0.0 for k in means for t in ("agents", "server", "backend", "batches")}
    agents = threading.main_thread()
    for r in range(args.rounds):
        for kind in (("direct", "proxy") if r % 2 == 0 else ("proxy", "direct")):
            before = thread_cpu_s(agents), thread_cpu_s(server.thread), backend.stats.busy_s, backend.stats.batches
            mean, n = await run_round(kind, r, args, tool_ms, backend, bridge, server, client)
            cpu[kind, "agents"] += thread_cpu_s(agents) - before[0]
            cpu[kind, "server"] += thread_cpu_s(server.thread) - before[1]
            cpu[kind, "backend"] += backend.stats.busy_s - before[2]
            cpu[kind, "batches"] += backend.stats.batches - before[3]
            means[kind].append(mean)
            tokens[kind] += n
    load_after = os.getloadavg()
    calls = args.rounds * args.sessions * args.turns
    # Per round log(proxy / direct); their mean and its standard error, back as a ratio (a geometric mean: one
    # round slowed by a load spike on this shared machine does not dominate it as it would an arithmetic mean)
    logs = [math.log(p / d) for p, d in zip(means["proxy"], means["direct"], strict=True)]
    ratio = math.exp(statistics.fmean(logs))
    se = ratio * statistics.stdev(logs) / len(logs) ** 0.5 if len(logs) > 1 else float("nan")
    name = f"tool latency U[0, {2 * tool_ms:g}] ms" if tool_ms > 0 else "lockstep"
    print(f"{name}: {args.sessions} concurrent sessions x {args.turns} calls x {args.rounds} rounds (interleaved)")
    print(f"  sampled tokens: direct {tokens['direct']}, proxy {tokens['proxy']}")
    print(f"  mean latency per call: direct {statistics.fmean(means['direct']) * 1e3:.1f} ms, proxy "
          f"{statistics.fmean(means['proxy']) * 1e3:.1f} ms")
    print(f"  proxy / direct (geometric mean over rounds): {ratio:.3f} +- {se:.3f} (SE, {len(logs)} rounds) -> "
          f"{(ratio - 1) * 100:+.1f}% latency (target <= +10%)")
    print(f"  CPU per call: agents' thread direct {cpu['direct', 'agents'] / calls * 1e3:.2f} ms, proxy "
          f"{cpu['proxy', 'agents'] / calls * 1e3:.2f} ms (the openai client); proxy server thread "
          f"{cpu['proxy', 'server'] / calls * 1e3:.2f} ms")
    print(f"  backend: busy {cpu['direct', 'backend']:.1f} s in {cpu['direct', 'batches']:.0f} batches direct, "
          f"{cpu['proxy', 'backend']:.1f} s in {cpu['proxy', 'batches']:.0f} batches proxy")
    print(f"  load average (1/5/15 min): before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")


async def main_async(args: argparse.Namespace) -> None:
    model, tokenizer = load_tiny("tiny")
    backend = HFBackend(model, tokenizer, seed=0)
    bridge = ChatBridge(tokenizer)
    proxy = Proxy(backend, tokenizer, **({"admission": None} if args.no_admission else {}))
    server = ProxyServer(proxy).start()
    print(f"proxy overhead: tiny model on HFBackend, max_tokens={args.max_tokens}, {os.cpu_count()} CPUs, "
          f"admission {'off' if args.no_admission else 'on'}")
    client = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0)  # pool: 100 keep-alive
    try:
        for tool_ms in (0.0, args.tool_ms):
            await scenario(args, tool_ms, backend, bridge, server, client)
    finally:
        await client.close()
        server.stop()
        await backend.aclose()
    splits = {k: v for k, v in proxy.stats.items() if k.startswith("split/")}
    print(f"proxy sessions: {proxy.stats['sessions']}, calls {proxy.stats['calls']}, splits {splits or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--tool-ms", type=float, default=50.0, help="mean tool wait between calls, ms")
    parser.add_argument("--no-admission", action="store_true", help="the proxy sends each call on at once")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
