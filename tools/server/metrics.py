"""Prometheus text-format metrics, kept in-process (no client library needed).

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text 0.0.4).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + body + "}"


@dataclass
class Counter:
    name: str
    help: str
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(k)} {v}" for k, v in sorted(self.values.items())] or [f"{self.name} 0"]
        return lines


@dataclass
class Gauge:
    name: str
    help: str
    read: Callable[[], float]

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {self.read()}"]


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.n}')
        lines += [f"{self.name}_sum {self.total}", f"{self.name}_count {self.n}"]
        return lines


class Metrics:
    """The sandbox's metrics; gauges read live values through callables set by the app."""

    def __init__(self, queue_depth: Callable[[], float], active_sessions: Callable[[], float],
                 busy_workers: Callable[[], float]) -> None:
        self.requests = Counter("sandbox_requests_total", "run_code requests by outcome")
        self.timeouts = Counter("sandbox_timeouts_total", "snippets stopped by the time limit")
        self.rejected = Counter("sandbox_rejected_total", "requests refused before running, by reason")
        self.worker_restarts = Counter("sandbox_worker_restarts_total", "zygotes restarted after a crash")
        self.sessions_opened = Counter("sandbox_sessions_opened_total", "stateful sessions created")
        self.sessions_closed = Counter(
            "sandbox_sessions_closed_total", "sessions closed, by reason (client: DELETE, idle: TTL reaper)"
        )
        self.latency = Histogram("sandbox_request_seconds", "run_code latency (queue + run), seconds")
        self.execution = Histogram("sandbox_execution_seconds", "snippet wall-clock time in the sandbox")
        self.gauges = [
            Gauge("sandbox_queue_depth", "requests waiting for a worker", queue_depth),
            Gauge("sandbox_active_sessions", "open stateful sessions", active_sessions),
            Gauge("sandbox_busy_workers", "workers running a snippet", busy_workers),
        ]

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.requests, self.timeouts, self.rejected, self.worker_restarts, self.sessions_opened,
                       self.sessions_closed, self.latency, self.execution, *self.gauges):
            lines += metric.render()
        return "\n".join(lines) + "\n"
