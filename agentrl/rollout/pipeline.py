"""Each training step's trajectories, synchronous or overlapped with the learner's update.

Synchronous (``run.async=false``): a step samples its own tasks with the current policy, then the learner
trains on them while generation waits.

Overlapped (``run.async=true``): a producer keeps episodes running while the learner updates (``RolloutManager
.stream``). The step's tasks are fed in order; group g belongs to step s = start + g // tasks_per_step and
starts only once the policy version is at least s - max_staleness (AReaL's bound: generation runs at most
``max_staleness`` versions ahead of the learner). A step takes finished groups as they come and admits a
trajectory only if its oldest sampled token is at most ``max_staleness`` versions old (``admit``; a group that
finished late for its step can still be too old). With partial rollouts (``rollout.partial``) a weight update
lands while episodes decode, so one episode's tokens may carry several versions; each token keeps its own
version and behaviour logprob, and the learner's ratio uses each token's own.

Metrics of each step (besides the manager's ``rollout/*``): the staleness of the admitted sampled tokens
(``rollout/staleness_mean``, ``_max``, and ``rollout/tokens_at_lag/<d>``: tokens sampled d versions before
the one that trains on them), ``rollout/versions_per_episode``, ``rollout/stale_rejected``, and the
generator's idle share of the step (``perf/generator_idle_share``: no generate call outstanding).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

from agentrl.rollout.manager import RolloutBatch, RolloutManager, admit
from agentrl.rollout.trajectory import Trajectory

__all__ = ["RolloutPipeline", "staleness_metrics"]


def staleness_metrics(trajectories: list[Trajectory], version: int) -> dict[str, float]:
    """How old the sampled tokens are when the learner at ``version`` trains on them."""
    lags = Counter(version - v for t in trajectories if t.excluded is None for v in t.policy_versions)
    n = sum(lags.values())
    out = {"rollout/staleness_mean": sum(d * c for d, c in lags.items()) / n if n else 0.0,
           "rollout/staleness_max": float(max(lags, default=0))}
    for d, count in sorted(lags.items()):
        out[f"rollout/tokens_at_lag/{d}"] = float(count)
    versions = [len(set(t.policy_versions)) for t in trajectories if t.policy_versions]
    out["rollout/versions_per_episode"] = sum(versions) / len(versions) if versions else 0.0
    return out


class RolloutPipeline:
    """The trajectories and rollout metrics of each step (see the module docstring)."""

    def __init__(self, manager: RolloutManager, seeds_of_step: Callable[[int], list[int]], *, start_step: int,
                 overlap: bool, max_staleness: int) -> None:
        if overlap and max_staleness < 1:
            raise ValueError(f"max_staleness={max_staleness}: overlapped rollouts need a bound >= 1")
        self.manager = manager
        self.seeds_of_step = seeds_of_step
        self.start_step = start_step
        self.overlap = overlap
        self.max_staleness = max_staleness
        self.tasks_per_step = len(seeds_of_step(start_step))
        self._version_changed: asyncio.Condition | None = None
        self._stream: AsyncIterator[RolloutBatch] | None = None
        self._last_collect = time.perf_counter()
        self._last_busy = manager.generator_busy_s()

    @property
    def version(self) -> int:
        return self.manager.backend.version

    async def collect(self, step: int) -> tuple[list[Trajectory], dict[str, float]]:
        if not self.overlap:
            batch = await self.manager.run(self.seeds_of_step(step))
            trajectories, metrics = batch.trajectories, dict(batch.metrics)
        else:
            trajectories, metrics = await self._take_groups()
        metrics.update(staleness_metrics(trajectories, self.version))
        now, busy = time.perf_counter(), self.manager.generator_busy_s()
        metrics["perf/generator_idle_share"] = max(0.0, 1.0 - (busy - self._last_busy) / max(now - self._last_collect,
                                                                                          1e-9))
        self._last_collect, self._last_busy = now, busy
        return trajectories, metrics

    async def weights_updated(self) -> None:
        """Call after each weight update: groups waiting for the staleness bound may start."""
        if self._version_changed is not None:
            async with self._version_changed:
                self._version_changed.notify_all()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()  # type: ignore[attr-defined]

    # -- overlapped --------------------------------------------------------------------------------
    async def _take_groups(self) -> tuple[list[Trajectory], dict[str, float]]:
        if self._stream is None:
            self._version_changed = asyncio.Condition()
            seeds = (s for step in range(self.start_step, 1 << 30) for s in self.seeds_of_step(step))
            self._stream = self.manager.stream(seeds, gate=self._gate,
                                               max_buffered=(self.max_staleness + 1) * self.tasks_per_step)
        t0, kept, stale = time.perf_counter(), [], 0
        while len({t.group_id for t in kept}) < self.tasks_per_step:
            group = await self._stream.__anext__()
            admitted, rejected = admit(group.trajectories, self.version, self.max_staleness)
            kept += admitted
            stale += len(rejected)
        metrics = self.manager.summarize(kept, time.perf_counter() - t0)
        metrics["rollout/stale_rejected"] = float(stale)
        return kept, metrics

    async def _gate(self, group: int) -> None:
        """Group ``group`` starts once the learner is at most max_staleness versions behind its step."""
        step = self.start_step + group // self.tasks_per_step
        assert self._version_changed is not None
        async with self._version_changed:
            await self._version_changed.wait_for(lambda: self.version >= step - self.max_staleness)
