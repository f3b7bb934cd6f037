"""A small process pool with hard per-call timeouts for answer checking.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one stuck task. Sympy simplification
can run for minutes on a hostile answer, and math-verify's own timeouts use ``signal.alarm``, which
only works in a process's main thread. Here each call owns an idle worker; past its deadline the
worker is killed and replaced, and the call reports a timeout.

Workers are plain subprocesses (``python -m envs.verify.pool``) speaking length-prefixed pickles over
stdin/stdout: unlike multiprocessing's spawn they never re-import the caller's ``__main__`` (a user
script without an ``if __name__ == "__main__"`` guard still works), and they are safe beside threads
and torch. Each caps its address space and imports its libraries before the first call, so the import
never counts against a deadline.

Model text is parsed only inside these workers: the trainer's process never hands it to sympy.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

DEFAULT_WORKERS = max(1, min(4, (os.cpu_count() or 1)))
DEFAULT_MEMORY_MB = 2048
"""Address-space cap per worker (RLIMIT_AS), MiB."""
DEFAULT_START_TIMEOUT = 60.0
"""Seconds a new worker may take to import sympy / math-verify."""

_HEADER = struct.Struct("<I")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class VerifierTimeout(TimeoutError):
    pass


class WorkerCrashed(RuntimeError):
    pass


def _write(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise EOFError("worker pipe closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read(stream: IO[bytes]) -> Any:
    (size,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    return pickle.loads(_read_exact(stream, size))


def _serve(memory_mb: int | None) -> None:
    """Worker main loop (runs in the subprocess)."""
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    inp = sys.stdin.buffer
    if memory_mb:
        try:
            import resource

            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    from envs.verify import worker

    worker.warm_up()
    _write(out, ("ready", None))
    while True:
        try:
            message = _read(inp)
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        name, args = message
        try:
            _write(out, ("ok", worker.FUNCTIONS[name](*args)))
        except MemoryError:
            _write(out, ("error", "MemoryError"))
        except Exception as e:  # noqa: BLE001 - any failure in a check is reported, the worker lives on
            _write(out, ("error", f"{type(e).__name__}: {e}"[:500]))


def _wait_readable(stream: IO[bytes], timeout: float) -> bool:
    ready, _, _ = select.select([stream], [], [], max(0.0, timeout))
    return bool(ready)


class _Worker:
    def __init__(self, memory_mb: int | None, start_timeout: float):
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "envs.verify.pool", str(memory_mb or 0)]
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0, env=env
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        deadline = time.monotonic() + start_timeout
        try:
            if not _wait_readable(self.stdout, deadline - time.monotonic()):
                raise WorkerCrashed(f"verifier worker did not start within {start_timeout} s")
            _read(self.stdout)
        except EOFError:
            self.kill()
            raise WorkerCrashed("verifier worker died while starting (is envs importable?)") from None
        except WorkerCrashed:
            self.kill()
            raise

    def request(self, name: str, args: tuple, timeout: float) -> Any:
        _write(self.stdin, (name, args))
        if not _wait_readable(self.stdout, timeout):
            raise VerifierTimeout(f"{name} took longer than {timeout} s")
        return _read(self.stdout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass


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
            return _Worker(self.memory_mb, self.start_timeout)
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
            status, value = worker.request(name, args, timeout)
            healthy = True
        except VerifierTimeout:  # a TimeoutError is an OSError: keep it apart from a broken pipe
            raise
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
                _write(w.stdin, None)
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


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MEMORY_MB)
