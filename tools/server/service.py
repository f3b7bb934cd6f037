"""The sandbox service: starts the workers, runs requests on them, maps replies to the API.

Routes stay thin; everything with side effects (processes, queues, sessions, metrics) lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from tools.schema import RunCodeResponse, RunResult
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
        self.pool = Pool(self.workers, settings.queue_limit, settings.queue_timeout)
        self.sessions = SessionRegistry(self.workers, settings.max_sessions, settings.sessions_per_worker)
        self.metrics = Metrics(
            queue_depth=lambda: self.pool.waiting,
            active_sessions=lambda: len(self.sessions),
            busy_workers=lambda: self.pool.busy,
        )
        self.layers: dict[str, bool] = {}
        self.report: dict[str, Any] = {}
        self.started = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        reports = await asyncio.gather(*(w.start() for w in self.workers))
        self.report = reports[0]
        self.layers = {name: all(r["layers"].get(name, False) for r in reports) for name in LAYERS}
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
                    await self.delete_session(session.session_id)

    # ---- requests ------------------------------------------------------------------------------------
    async def run(self, code: str, run_timeout: float, stdin: str | None, session_id: str | None) -> RunCodeResponse:
        """Raises Overloaded (429) or TooManySessions (429); everything else becomes a response."""
        start = time.monotonic()
        session: Session | None = None
        if session_id is not None:
            session = self.sessions.get_or_create(session_id)
        worker = await self.pool.acquire(session.worker if session is not None else None)
        try:
            message: dict[str, Any] = {"op": "run", "code": code, "stdin": stdin or "", "timeout": run_timeout}
            budget = run_timeout + self.settings.grace
            if session is not None:
                message["session"] = session.session_id
                if session.needs_replay():
                    if session.journal is None:
                        return self._sandbox_error("session state was lost and its journal is too large to replay")
                    message["replay"] = session.journal
                    budget += run_timeout * len(session.journal)
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
        response = self._response(reply)
        if session is not None:
            session.last_used = time.monotonic()
            session.generation = worker.generation if reply.get("session_alive") else None
            if response.run_result is not None and response.run_result.status in ("Finished", "Error"):
                session.record(code, self.settings.max_journal_bytes)
            response.session_id = session.session_id
        return response

    async def delete_session(self, session_id: str) -> bool:
        session = self.sessions.remove(session_id)
        if session is None:
            return False
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
        self.metrics.requests.inc(status="SandboxError")
        return RunCodeResponse(status="SandboxError", message=message)

    def _response(self, reply: dict[str, Any]) -> RunCodeResponse:
        signal_number = reply.get("signal")
        rc = reply.get("rc")
        if rc is None and signal_number is not None:
            rc = -int(signal_number)
        if reply.get("timed_out") or _cpu_kill(reply):
            status = "TimeLimitExceeded"
            self.metrics.timeouts.inc()
        elif reply.get("memory"):
            status = "MemoryLimitExceeded"
        elif rc == 0:
            status = "Finished"
        else:
            status = "Error"
        elapsed = float(reply.get("elapsed") or 0.0)
        self.metrics.execution.observe(elapsed)
        result = RunResult(
            status=status,
            execution_time=round(elapsed, 6),
            return_code=rc,
            stdout=str(reply.get("stdout", "")),
            stderr=str(reply.get("stderr", "")),
        )
        outcome = "Success" if status == "Finished" else "Failed"
        self.metrics.requests.inc(status=outcome, run_status=status)
        message = "" if outcome == "Success" else _explain(status, rc)
        return RunCodeResponse(status=outcome, message=message, run_result=result, truncated=bool(reply.get("truncated")))

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
            "errors": self.report.get("errors", []),
        }


def _cpu_kill(reply: dict[str, Any]) -> bool:
    """SIGXCPU (24) is RLIMIT_CPU's signal: the CPU-time backstop of the wall-clock limit fired."""
    return reply.get("rc") is None and reply.get("signal") == 24


def _explain(status: str, rc: int | None) -> str:
    if status == "TimeLimitExceeded":
        return "the code exceeded its time limit"
    if status == "MemoryLimitExceeded":
        return "the code exceeded its memory limit"
    if rc is not None and rc < 0:
        return f"the code was killed by signal {-rc}"
    return f"the code exited with status {rc}"


__all__ = ["Sandbox", "IsolationMissing", "Overloaded", "TooManySessions"]
