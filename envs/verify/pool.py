"""A small process pool with hard per-call timeouts for answer checking.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one stuck task. Sympy simplification
can run for minutes on a hostile answer, and math-verify's own timeouts use ``signal.alarm``, which
only works in a process's main thread. Here each call owns an idle worker; past its deadline the
worker is killed and replaced, and the call reports a timeout. Workers are started with ``spawn``
(safe beside threads and torch), cap their address space, and import their libraries before the first
call so the import never counts against a deadline.

Model text is parsed only inside these workers: the trainer's process never hands it to sympy.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

DEFAULT_WORKERS = max(1, min(4, (os.cpu_count() or 1)))
DEFAULT_MEMORY_MB = 2048
"""Address-space cap per worker (RLIMIT_AS), MiB."""
DEFAULT_START_TIMEOUT = 60.0
"""Seconds a new worker may take to import sympy / math-verify."""


class VerifierTimeout(TimeoutError):
    pass


class WorkerCrashed(RuntimeError):
    pass


def _worker_main(conn: Connection, memory_mb: int | None) -> None:
    if memory_mb:
        try:
            import resource

            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    from . import worker

    worker.warm_up()
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        name, args = message
        try:
            conn.send(("ok", worker.FUNCTIONS[name](*args)))
        except MemoryError:
            conn.send(("error", "MemoryError"))
        except Exception as e:  # noqa: BLE001 - any failure in a check is reported, the worker lives on
            conn.send(("error", f"{type(e).__name__}: {e}"[:500]))


class _Worker:
    def __init__(self, ctx: Any, memory_mb: int | None, start_timeout: float):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, memory_mb), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(start_timeout):
            self.kill()
            raise WorkerCrashed(f"verifier worker did not start within {start_timeout} s")
        try:
            self.conn.recv()
        except EOFError:
            self.kill()
            raise WorkerCrashed("verifier worker died while starting") from None

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class VerifierPool:
    """``call(name, args, timeout)`` runs ``worker.FUNCTIONS[name](*args)`` in a worker process.

    Thread-safe: up to ``workers`` calls run at once, the rest wait for a free worker.
    """

    def __init__(
        self,
        workers: int = DEFAULT_WORKERS,
        *,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.size = workers
        self.memory_mb = memory_mb
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._idle: list[_Worker] = []
        self._live = 0
        self._cond = threading.Condition()
        self._closed = False

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("verifier pool is closed")
                if self._idle:
                    return self._idle.pop()
                if self._live < self.size:
                    self._live += 1
                    break
                self._cond.wait()
        try:
            return _Worker(self._ctx, self.memory_mb, self.start_timeout)
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._cond:
            if healthy and not self._closed:
                self._idle.append(worker)
            else:
                self._live -= 1
                if healthy:
                    worker.kill()
            self._cond.notify()

    def call(self, name: str, args: tuple, timeout: float) -> Any:
        worker = self._acquire()
        healthy = False
        try:
            worker.conn.send((name, args))
            if not worker.conn.poll(timeout):
                raise VerifierTimeout(f"{name} took longer than {timeout} s")
            status, value = worker.conn.recv()
            healthy = True
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as e:
            raise WorkerCrashed(f"verifier worker died during {name}: {type(e).__name__}") from None
        finally:
            self._release(worker, healthy)
        if status == "error":
            raise WorkerCrashed(value)
        return value

    def warm(self) -> None:
        """Start all workers now (they start lazily otherwise)."""
        workers = [self._acquire() for _ in range(self.size)]
        for w in workers:
            self._release(w, True)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for w in idle:
            try:
                w.conn.send(None)
            except OSError:
                pass
            w.kill()


_default: VerifierPool | None = None
_default_lock = threading.Lock()


def default_pool() -> VerifierPool:
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = VerifierPool()
            atexit.register(_default.close)
        return _default


def set_default_pool(pool: VerifierPool | None) -> None:
    """Swap the process-wide pool (e.g. a bigger one for evaluation); the old one is closed."""
    global _default
    with _default_lock:
        old, _default = _default, pool
    if old is not None and old is not pool:
        old.close()
