"""The sandbox service: starts the workers, runs requests on them, maps replies to the API.

Routes stay thin; everything with side effects (processes, queues, sessions, metrics) lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tools.schema import RunCodeResponse, RunResult
from tools.server import images
from tools.server.isolation import LAYERS
from tools.server.metrics import Metrics
from tools.server.sessions import Session, SessionRegistry, TooManySessions
from tools.server.settings import Settings
from tools.server.workers import Overloaded, Pool, Worker, WorkerFailure

log = logging.getLogger("tools.server.service")

DEFAULT_REAPER_INTERVAL = 5.0
"""Seconds between sweeps for idle sessions."""
DEFAULT_RESTART_BACKOFF = 1.0
"""Seconds between attempts to restart a crashed worker."""


class IsolationMissing(RuntimeError):
    """A required isolation layer is unavailable and weaker isolation was not allowed."""


class Sandbox:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers = [Worker(i, settings) for i in range(settings.workers)]
        for worker in self.workers:
            worker.on_death = lambda w: self._spawn(self._restart(w))
        self.pool = Pool(self.workers, settings.queue_limit, settings.queue_timeout)
        self.sessions = SessionRegistry(self.workers, settings.max_sessions, settings.sessions_per_worker)
        self.metrics = Metrics(
            queue_depth=lambda: self.pool.waiting,
            active_sessions=lambda: len(self.sessions),
            busy_workers=lambda: self.pool.busy,
        )
        self.layers: dict[str, bool] = {}
        self.languages: set[str] = set()
        """Runners available here (pytest needs the package, bash its binary); from the start-up probe."""
        self.report: dict[str, Any] = {}
        self.started = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        reports = await asyncio.gather(*(w.start() for w in self.workers))
        self.report = reports[0]
        self.layers = {name: all(r["layers"].get(name, False) for r in reports) for name in LAYERS}
        self.languages = set(self.report.get("languages", ["python"]))
        missing = [name for name, ok in self.layers.items() if not ok]
        if missing and not self.settings.allow_weaker_isolation:
            await self.stop()
            errors = "; ".join(self.report.get("errors", [])) or "none reported"
            raise IsolationMissing(
                f"isolation layers unavailable: {', '.join(missing)} (details: {errors}). Run as root on a "
                "kernel with namespaces, seccomp and Landlock, or pass --allow-weaker-isolation to accept it."
            )
        if missing:
            log.warning("running with weaker isolation; missing layers: %s", ", ".join(missing))
        self.started = True
        self._spawn(self._reap_idle_sessions())

    async def stop(self) -> None:
        self.started = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, worker: Worker) -> None:
        """Bring a crashed worker back; its sessions will replay their journals on their next request."""
        if worker.index in self.pool.restarting:
            return  # a failed request and the worker's death watch can both ask; one restart is enough
        self.pool.restarting.add(worker.index)
        self.metrics.worker_restarts.inc()
        try:
            while self.started:
                try:
                    await worker.kill()
                    await worker.start()
                    break
                except WorkerFailure:
                    log.exception("restarting worker %d failed; retrying", worker.index)
                    await asyncio.sleep(DEFAULT_RESTART_BACKOFF)
        finally:
            self.pool.restarting.discard(worker.index)
        self.pool.wake(worker)

    async def _reap_idle_sessions(self) -> None:
        while True:
            await asyncio.sleep(min(DEFAULT_REAPER_INTERVAL, self.settings.session_idle_timeout))
            for session in self.sessions.idle(self.settings.session_idle_timeout):
                with contextlib.suppress(Overloaded, WorkerFailure):
                    await self.delete_session(session.session_id, reason="idle")

    # ---- requests ------------------------------------------------------------------------------------
    async def run(self, job: Job) -> RunCodeResponse:
        """Raises Overloaded or TooManySessions (429) and FilesRefused (400); all else becomes a response."""
        start = time.monotonic()
        session: Session | None = None
        if job.session_id is not None:
            session = self.sessions.get_or_create(job.session_id)
            if session.new:
                self.metrics.sessions_opened.inc()
        image = images.image_for(job.language, job.code, session=session is not None,
                                 lean_available=self.settings.lean_image)
        worker = await self.pool.acquire(session.worker if session is not None else None)
        try:
            message: dict[str, Any] = {"op": "run", "image": image, **job.cell(self.settings.fetch_limit_bytes),
                                       "stdin": job.stdin or "", "timeout": job.run_timeout}
            budget = job.run_timeout + self.settings.grace
            if session is not None:
                message["session"] = session.session_id
                if session.needs_replay():
                    if session.journal is None:
                        return self._sandbox_error("session state was lost and its journal is too large to replay")
                    message["replay"] = session.journal
                    budget += job.run_timeout * len(session.journal)
            reply = await worker.call(message, budget)
        except WorkerFailure as exc:
            log.warning("%s", exc)
            self._spawn(self._restart(worker))
            worker = None  # type: ignore[assignment]
            return self._sandbox_error(f"sandbox worker failed and is restarting: {exc}")
        except asyncio.CancelledError:
            if not worker.alive:  # cancelled mid-call: Worker.call killed the zygote, bring it back
                self._spawn(self._restart(worker))
                worker = None  # type: ignore[assignment]
            raise
        finally:
            if worker is not None:
                self.pool.release(worker)
            self.metrics.latency.observe(time.monotonic() - start)
        if "error" in reply:
            return self._sandbox_error(str(reply["error"]))
        if session is not None:
            session.last_used = time.monotonic()
            session.generation = worker.generation if reply.get("session_alive") else None
        if reply.get("refused"):
            self.metrics.rejected.inc(reason="files")
            raise FilesRefused(str(reply["refused"]))
        response = self._response(reply)
        if session is not None:
            if response.run_result is not None and response.run_result.status == "Finished":
                # Only cells that ran to their end: a replayed time-out would time out again.
                session.record(job.journal_entry(), self.settings.max_journal_bytes)
            response.session_id = session.session_id
        return response

    async def delete_session(self, session_id: str, reason: str = "client") -> bool:
        session = self.sessions.remove(session_id)
        if session is None:
            return False
        self.metrics.sessions_closed.inc(reason=reason)
        if session.generation == session.worker.generation:
            worker = await self.pool.acquire(session.worker)
            try:
                await worker.call({"op": "close", "session": session_id}, self.settings.grace)
            except WorkerFailure:
                self._spawn(self._restart(worker))
                return True
            self.pool.release(worker)
        return True

    def _sandbox_error(self, message: str) -> RunCodeResponse:
        self.metrics.requests.inc(status="SandboxError", run_status="Error")
        return RunCodeResponse(status="SandboxError", message=message,
                               run_result=RunResult(status="Error", stderr=message))

    def _response(self, reply: dict[str, Any]) -> RunCodeResponse:
        """SandboxFusion's semantics: Finished whatever the exit code; Success only for exit code 0."""
        if reply.get("runner_error"):
            return self._sandbox_error(str(reply["runner_error"]))
        rc = reply.get("rc")
        status: str
        if reply.get("timed_out"):
            status, rc = "TimeLimitExceeded", None
            self.metrics.timeouts.inc()
        elif reply.get("memory"):
            status = "MemoryLimitExceeded"
        else:
            status = "Finished"
        elapsed = float(reply.get("elapsed") or 0.0)
        self.metrics.execution.observe(elapsed)
        result = RunResult(
            status=status,  # type: ignore[arg-type]
            execution_time=round(elapsed, 6),
            return_code=rc,
            stdout=str(reply.get("stdout", "")),
            stderr=str(reply.get("stderr", "")),
        )
        outcome = "Success" if status == "Finished" and rc == 0 else "Failed"
        self.metrics.requests.inc(status=outcome, run_status=status)
        notes = [str(n) for n in reply.get("notes") or ()]
        message = "; ".join(([] if outcome == "Success" else [_explain(status, rc)]) + notes)
        return RunCodeResponse(status=outcome, message=message, run_result=result,  # type: ignore[arg-type]
                               files=reply.get("files") or {}, truncated=bool(reply.get("truncated")))

    def health(self) -> dict[str, Any]:
        missing = [name for name, ok in self.layers.items() if not ok]
        alive = sum(1 for w in self.workers if w.alive)
        return {
            "status": "ok" if self.started and alive == len(self.workers) else "degraded",
            "isolation": self.layers,
            "weaker_isolation": bool(missing),
            "allow_weaker_isolation": self.settings.allow_weaker_isolation,
            "missing_layers": missing,
            "landlock_abi": self.report.get("landlock_abi", 0),
            "workers": {"total": len(self.workers), "alive": alive, "busy": self.pool.busy},
            "queue_depth": self.pool.waiting,
            "sessions": len(self.sessions),
            "preloaded": self.report.get("preloaded", []),
            "languages": sorted(self.languages),
            "lean_image": self.settings.lean_image,
            "errors": self.report.get("errors", []),
        }


def _explain(status: str, rc: int | None) -> str:
    if status == "TimeLimitExceeded":
        return "the code exceeded its time limit"
    if status == "MemoryLimitExceeded":
        return "the code exceeded its memory limit"
    if rc is not None and rc < 0:
        return f"the code was killed by signal {-rc}"
    return f"the code exited with status {rc}"


class FilesRefused(ValueError):
    """The sandboxed child refused the request's ``files`` (a path through a symbolic link, say)."""


@dataclass(frozen=True)
class Job:
    """One validated /run_code request (the router builds it; the language is canonical)."""

    code: str
    language: str
    run_timeout: float
    stdin: str | None = None
    session_id: str | None = None
    args: tuple[str, ...] = ()
    files: dict[str, str | None] = field(default_factory=dict)
    fetch_files: tuple[str, ...] = ()
    memory_bytes: int | None = None

    def cell(self, fetch_limit: int) -> dict[str, Any]:
        """The fields the child needs (see tools.server.zygote.CELL_KEYS)."""
        cell: dict[str, Any] = {"code": self.code, "language": self.language}
        if self.args:
            cell["args"] = list(self.args)
        if self.files:
            cell["files"] = self.files
        if self.fetch_files:
            cell["fetch"], cell["fetch_limit"] = list(self.fetch_files), fetch_limit
        if self.memory_bytes is not None:
            cell["memory"] = self.memory_bytes
        return cell

    def journal_entry(self) -> dict[str, Any]:
        """What replaying this cell into a rebuilt session needs (files included, nothing fetched)."""
        return self.cell(0) | {"fetch": []}


__all__ = ["FilesRefused", "IsolationMissing", "Job", "Overloaded", "Sandbox", "TooManySessions"]
