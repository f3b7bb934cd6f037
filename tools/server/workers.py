"""Server side of the zygotes: one asyncio handle per zygote process, and the pool that hands them out.

The pool never lets a request wait unboundedly: at most ``queue_limit`` requests wait, each at most
``queue_timeout`` seconds; beyond that the caller gets :class:`Overloaded` (HTTP 429).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from tools.server import images, protocol
from tools.server.settings import Settings
from tools.server.zygote import ZygoteConfig, config_json

log = logging.getLogger("tools.server.workers")
MIB = 1024 * 1024


class WorkerFailure(Exception):
    """The zygote died, hung or spoke nonsense; the worker is being restarted."""


class Overloaded(Exception):
    """No worker became free in time, or too many requests are already waiting."""


def zygote_config(settings: Settings, worker_id: int) -> ZygoteConfig:
    full = list(settings.preload)
    worker_images = {images.FULL: full}
    if settings.lean_image:
        worker_images[images.LEAN] = images.lean_preload(full)
    return ZygoteConfig(
        worker_id=worker_id,
        uid_base=settings.resolved_uid_base,
        sessions_per_worker=settings.sessions_per_worker,
        memory_bytes=settings.memory_mb * MIB,
        max_processes=settings.max_processes,
        file_size_bytes=settings.file_size_mb * MIB,
        open_files=settings.open_files,
        max_run_timeout=settings.max_run_timeout,
        tmpfs_bytes=settings.tmpfs_mb * MIB,
        output_limit_bytes=settings.output_limit_bytes,
        images=worker_images,
        use_namespaces="namespaces" not in settings.disabled_layers,
        use_seccomp="seccomp" not in settings.disabled_layers,
        use_landlock="landlock" not in settings.disabled_layers,
        use_uids="uids" not in settings.disabled_layers,
    )


def _child_env() -> dict[str, str]:
    """The zygote's environment: only what Python needs to find this package, never our secrets."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONPATH": package_root}
    return env


class Worker:
    """One zygote process (with a forker per image): runs one request at a time."""

    def __init__(self, index: int, settings: Settings) -> None:
        self.index = index
        self.settings = settings
        self.config = zygote_config(settings, index)
        self.generation = 0
        """Bumped on every (re)start; sessions remember the generation that holds their state."""
        self.proc: asyncio.subprocess.Process | None = None
        self.report: dict[str, Any] = {}
        self.busy = False
        self.idle_since = 0.0
        """When the worker last went idle; the pool prefers the longest-idle worker, whose zygote has had
        the most time to tear the last child down and fork the next spare."""
        self.alive = False
        self.sessions = 0
        self.waiters: collections.deque[asyncio.Future[Worker]] = collections.deque()
        """Requests for a session that lives in this worker, first come first served."""
        self.on_death: Callable[[Worker], None] | None = None
        """Called when the zygote dies on its own (the service restarts the worker)."""
        self._watcher: asyncio.Task[None] | None = None

    @property
    def images(self) -> list[str]:
        return list(self.config.images)

    async def start(self) -> dict[str, Any]:
        self.generation += 1
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.server.zygote", config_json(self.config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_child_env(),
            limit=protocol.DEFAULT_MAX_FRAME_BYTES,
        )
        try:
            ready = await asyncio.wait_for(self._read(), self.settings.worker_start_timeout)
        except (TimeoutError, WorkerFailure) as exc:
            await self.kill()
            raise WorkerFailure(f"worker {self.index} did not start: {exc!r}") from exc
        if not ready.get("ready"):
            await self.kill()
            raise WorkerFailure(f"worker {self.index} failed to start: {ready}")
        self.report = ready
        self.alive = True
        self._watcher = asyncio.get_running_loop().create_task(self._watch(self.proc, self.generation))
        return ready

    async def _watch(self, proc: asyncio.subprocess.Process, generation: int) -> None:
        """Notice a zygote that died between requests, so the worker restarts before anyone is sent to it."""
        await proc.wait()
        if self.alive and self.generation == generation:
            log.warning("worker %d exited with status %s; restarting it", self.index, proc.returncode)
            self.alive = False
            if self.on_death is not None:
                self.on_death(self)

    async def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            header = await self.proc.stdout.readexactly(protocol.HEADER.size)
            (size,) = protocol.HEADER.unpack(header)
            if size > protocol.DEFAULT_MAX_FRAME_BYTES:
                raise WorkerFailure(f"oversized frame {size}")
            return protocol.decode(await self.proc.stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError) as exc:
            raise WorkerFailure(f"worker {self.index} stream broke: {exc!r}") from exc

    async def call(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request/reply; any failure kills the zygote (the caller restarts it)."""
        if not self.alive or self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            raise WorkerFailure(f"worker {self.index} is not running")
        try:
            self.proc.stdin.write(protocol.encode(message))
            await asyncio.wait_for(self.proc.stdin.drain(), timeout)
            return await asyncio.wait_for(self._read(), timeout)
        except (TimeoutError, ConnectionError, WorkerFailure) as exc:
            await self.kill()
            raise WorkerFailure(f"worker {self.index} failed: {exc!r}") from exc
        except asyncio.CancelledError:
            # The reply would arrive out of step with the next request: this zygote cannot be reused.
            await self.kill()
            raise

    async def kill(self) -> None:
        self.alive = False
        if self._watcher is not None and self._watcher is not asyncio.current_task():
            self._watcher.cancel()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()  # the zygote has PDEATHSIG, and its pid namespace dies with it
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), self.settings.shutdown_timeout)

    async def stop(self) -> None:
        """Graceful: close the request pipe, the zygote finishes and exits; kill if it lingers."""
        self.alive = False
        if self._watcher is not None:
            self._watcher.cancel()
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), self.settings.shutdown_timeout)
        except TimeoutError:
            await self.kill()


class Pool:
    """Hands out idle workers; session requests wait for their own worker, others for any."""

    def __init__(self, workers: list[Worker], queue_limit: int, queue_timeout: float) -> None:
        self.workers = workers
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout
        self.any_waiters: collections.deque[asyncio.Future[Worker]] = collections.deque()
        self.restarting: set[int] = set()

    @property
    def waiting(self) -> int:
        return sum(1 for f in self.any_waiters if not f.done()) + sum(
            1 for w in self.workers for f in w.waiters if not f.done()
        )

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.busy)

    def _idle(self, worker: Worker) -> bool:
        return not worker.busy and worker.alive and worker.index not in self.restarting

    async def acquire(self, worker: Worker | None = None) -> Worker:
        """Take ``worker`` (or any) when idle; raises Overloaded when the queue is full or too slow."""
        if worker is None:
            idle = [w for w in self.workers if self._idle(w) and not w.waiters]
            if idle:
                candidate = min(idle, key=lambda w: w.idle_since)
                candidate.busy = True
                return candidate
        elif self._idle(worker) and not worker.waiters:
            worker.busy = True
            return worker
        if self.waiting >= self.queue_limit:
            raise Overloaded(f"{self.waiting} requests already waiting")
        future: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        (worker.waiters if worker is not None else self.any_waiters).append(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.queue_timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if future.done() and not future.cancelled():
                self.release(future.result())  # handed to us just as we gave up: pass it on
            else:
                future.cancel()
            if isinstance(exc, asyncio.TimeoutError):
                raise Overloaded(f"no worker free within {self.queue_timeout}s") from exc
            raise

    def release(self, worker: Worker) -> None:
        """Give the worker to the next waiter for it, else to the next waiter for any, else mark idle."""
        if not worker.alive or worker.index in self.restarting:
            worker.busy = False
            return
        for queue in (worker.waiters, self.any_waiters):
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(worker)
                    return
        worker.busy = False
        worker.idle_since = time.monotonic()

    def wake(self, worker: Worker) -> None:
        """A (re)started worker is idle: serve whoever waits."""
        worker.busy = True
        self.release(worker)
