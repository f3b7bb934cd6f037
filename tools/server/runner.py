"""The sandboxed child: isolates itself, then runs cells sent by its zygote.

A child is forked from the zygote (so the preloaded libraries are already imported), applies every
isolation layer, tells the zygote it is ready (one byte), and waits on its control socket. Each cell
arrives as a frame carrying fresh stdin/stdout/stderr pipes. The child writes the request's ``files``,
runs the code by language, reads back ``fetch_files``, answers with the exit code and exits (one-shot)
or waits for the next cell (session, so variables persist).

- ``python``: like ``python -c`` in a fresh ``__main__`` module (sys.argv = ["-c", *args]).
- ``pytest``: the code is written to ``test_solution.py`` in the work dir and run by ``pytest.main``
  in this process; the exit code is pytest's (0 all passed, 1 failures, 2 interrupted, 5 none collected).
  Installed plugins are not auto-loaded (``-p NAME`` in ``args`` loads one).
- ``bash``: ``bash -c CODE bash ARGS...`` spawned (vfork + exec) from this process, so it inherits
  every layer (uid, seccomp, Landlock, rlimits, namespaces).

Everything here runs after fork in the child; it never returns to the zygote's code.
"""

from __future__ import annotations

import builtins
import io
import os
import signal
import socket
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tools.server import procs, protocol, workfiles
from tools.server.isolation import landlock, privileges, rlimits, seccomp, syscalls

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_CELL_FRAME_BYTES = 64 * 1024 * 1024
READY = b"R"
"""First byte a child sends: every layer is in place and it waits for a cell."""
SETUP_FAILED = b"E"
"""First byte of a child whose isolation failed; an error message follows."""
MAX_SETUP_ERROR_BYTES = 2000
EXIT_SETUP_FAILED = 70
EXIT_PROTOCOL = 71
PYTEST_FILE = "test_solution.py"
LANGUAGES: tuple[str, ...] = ("python", "pytest", "bash")
"""Languages a child can run (the API also accepts ``python3`` for ``python``)."""


@dataclass(frozen=True)
class ChildPlan:
    """What the zygote decided for one child (all layers it may apply)."""

    uid: int | None
    """Unprivileged uid/gid to switch to; None keeps the current ids (weaker mode)."""
    workdir: str
    limits: rlimits.Limits
    landlock_abi: int
    read_paths: tuple[str, ...]
    seccomp_filter: seccomp.PreparedFilter | None
    interpreter_bin: str
    landlock_ruleset: int | None
    """A ruleset fd the zygote built once (write beneath its work-dir parent); None = build our own."""
    oneshot: bool
    kill_own_tree: bool
    """After a session cell, kill(-1) the uid's leftovers (only when the uid is unique to this child)."""


@dataclass(frozen=True)
class Cell:
    """One unit of work from the zygote (see the zygote's ``run`` request)."""

    code: str
    timeout: float
    language: str = "python"
    args: tuple[str, ...] = ()
    files: dict[str, str | None] | None = None
    fetch: tuple[str, ...] = ()
    fetch_limit: int = 0
    memory: int | None = None

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Cell:
        return cls(
            code=str(message.get("code", "")),
            timeout=float(message.get("timeout", 1.0)),
            language=str(message.get("language", "python")),
            args=tuple(str(a) for a in message.get("args") or ()),
            files=message.get("files") or None,
            fetch=tuple(str(p) for p in message.get("fetch") or ()),
            fetch_limit=int(message.get("fetch_limit", 0)),
            memory=message.get("memory"),
        )


def start(sock: socket.socket, plan: ChildPlan) -> None:
    """The forked child's whole life: isolate, say ready, serve cells, exit. Never returns."""
    try:
        isolate(sock.fileno(), plan)
    except BaseException as exc:  # noqa: BLE001 - report and die; the zygote answers with a runner error
        try:
            sock.sendall(SETUP_FAILED + f"sandbox child setup failed: {exc!r}".encode()[:MAX_SETUP_ERROR_BYTES])
        except OSError:
            pass
        os._exit(EXIT_SETUP_FAILED)
    try:
        sock.sendall(READY)
        serve(sock, plan)
    except BaseException:  # noqa: BLE001 - the zygote sees the socket close and reports how we ended
        os._exit(EXIT_PROTOCOL)
    os._exit(0)


def prepare_image(interpreter_bin: str, read_paths: tuple[str, ...]) -> None:
    """Once, in the zygote after its imports: what every child shares (a scrubbed environment, sys.path
    without the project tree, no bytecode writing). Done here, each child skips ~80 copy-on-write faults."""
    os.environ.clear()
    os.environ.update(
        {
            "PATH": f"{interpreter_bin}:{SANDBOX_PATH}",
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )
    sys.path[:] = [""] + [p for p in sys.path if p and any(p.startswith(r) for r in read_paths)]
    sys.argv[:] = ["-c"]
    sys.dont_write_bytecode = True
    _new_stdio()  # a one-shot child's first (only) cell uses these, on fds 0-2 it points at its pipes


def isolate(sock_fd: int, plan: ChildPlan) -> None:
    """Apply the layers in the order they depend on each other; raises if one that was planned fails."""
    signal.set_wakeup_fd(-1)  # the zygote's SIGCHLD wake-up pipe is not ours
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    keep = sorted(fd for fd in (sock_fd, plan.landlock_ruleset) if fd is not None)
    low = 3
    for fd in keep:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.chdir(plan.workdir)
    rlimits.apply(plan.limits)
    if os.getuid() == 0:  # the zygote already emptied the bounding set (it is inherited)
        if plan.uid is not None:
            privileges.become(plan.uid, plan.uid)
        else:
            privileges.clear_capabilities()
    # The rest of the environment, sys.path and the like were set once in the zygote (prepare_image).
    os.environ["HOME"] = os.environ["TMPDIR"] = plan.workdir
    if "tempfile" in sys.modules:  # imported by the image (sympy does): it cached the zygote's temp dir
        sys.modules["tempfile"].tempdir = plan.workdir
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    if plan.landlock_ruleset is not None:
        landlock.enforce(plan.landlock_ruleset)
        os.close(plan.landlock_ruleset)
    elif plan.landlock_abi:
        landlock.restrict(plan.read_paths, [plan.workdir], plan.landlock_abi)
    if plan.seccomp_filter is not None:
        seccomp.install(plan.seccomp_filter)


def serve(sock: socket.socket, plan: ChildPlan) -> None:
    """Run cells until the zygote closes the socket (sessions) or after the first one (one-shot)."""
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    first = True
    while True:
        try:
            message, fds = protocol.recv_frame(sock, MAX_CELL_FRAME_BYTES, max_fds=3)
        except (OSError, protocol.ProtocolError):
            os._exit(EXIT_PROTOCOL)
        if message is None or len(fds) != 3:
            os._exit(0)
        _attach_stdio(fds, fresh_streams=not first)
        first = False
        cell = Cell.from_message(message)
        rlimits.lower_cpu(cell.timeout, lock_hard=plan.oneshot)
        rlimits.set_memory(cell.memory, lock_hard=plan.oneshot)
        reply = run(cell, module, plan)
        try:
            protocol.send_frame(sock, reply)
        except OSError:
            os._exit(EXIT_PROTOCOL)
        if plan.oneshot:
            os._exit(int(reply.get("rc") or 0) & 0xFF)


def run(cell: Cell, module: types.ModuleType, plan: ChildPlan) -> dict[str, Any]:
    """Files in, code, files out; the reply frame for the zygote."""
    if cell.files:
        try:
            workfiles.write_files(plan.workdir, cell.files)
        except (workfiles.PathRefused, OSError, ValueError) as exc:
            _end_cell(plan)
            return {"refused": f"files: {exc}"}
    code, memory = RUNNERS.get(cell.language, run_python)(cell, module)
    _flush_stdio()
    _end_cell(plan)
    reply: dict[str, Any] = {"rc": code, "memory": memory}
    if cell.fetch:
        reply["files"], reply["notes"] = workfiles.fetch_files(plan.workdir, list(cell.fetch), cell.fetch_limit)
    return reply


def _attach_stdio(fds: list[int], *, fresh_streams: bool) -> None:
    """Point fds 0-2 at the cell's pipes. The first cell uses the stream objects the image made
    (prepare_image), which saves every one-shot child creating its own; a session's later cells get new
    ones (the old stdin may hold read-ahead from the previous cell's input)."""
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    if fresh_streams:
        _new_stdio()


def _new_stdio() -> None:
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _end_cell(plan: ChildPlan) -> None:
    """Cell over: kill what it started, then let go of its pipes so the zygote sees EOF at once."""
    if plan.kill_own_tree and not plan.oneshot:
        try:
            os.kill(-1, signal.SIGKILL)  # every process of this uid but us; see privileges.kill_uid
        except OSError:
            pass
    procs.reap_exited()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def run_python(cell: Cell, module: types.ModuleType) -> tuple[int, bool]:
    sys.argv[:] = ["-c", *cell.args]
    return run_cell(cell.code, module)


def run_pytest(cell: Cell, module: types.ModuleType) -> tuple[int, bool]:
    """The code as a test module under pytest, in this process (pytest is preloaded in the full image)."""
    fd = os.open(PYTEST_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(cell.code)
    sys.modules.pop(PYTEST_FILE[:-3], None)  # a session's earlier cell imported the previous version
    sys.argv[:] = ["pytest", PYTEST_FILE, *cell.args]
    # Installed plugins load only when named (-p NAME in args): they may live where the sandbox cannot
    # read (an editable install), and a plugin is code the request did not send.
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        import pytest

        return int(pytest.main([PYTEST_FILE, "-p", "no:cacheprovider", *cell.args])), False
    except SystemExit as exc:
        return _exit_code(exc), False
    except BaseException as exc:  # noqa: BLE001 - pytest itself failed on this code: report it like python does
        _print_exception(exc)
        return 1, isinstance(exc, MemoryError)


def run_bash(cell: Cell, module: types.ModuleType) -> tuple[int, bool]:
    """``bash -c CODE bash ARGS...`` with our stdio, work dir and environment; its exit code (-N: signal N)."""
    bash = find_program("bash")
    if bash is None:
        print("bash: not found in the sandbox", file=sys.stderr)
        return 127, False
    pid = os.posix_spawn(bash, [bash, "-c", cell.code, "bash", *cell.args], dict(os.environ))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), False


def find_program(program: str) -> str | None:
    for directory in SANDBOX_PATH.split(":"):
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK):
            return path
    return None


RUNNERS: dict[str, Callable[[Cell, types.ModuleType], tuple[int, bool]]] = {
    "python": run_python,
    "pytest": run_pytest,
    "bash": run_bash,
}


def run_cell(code: str, module: types.ModuleType) -> tuple[int, bool]:
    """Run ``code`` in ``module`` the way ``python -c`` would; returns (exit code, hit MemoryError)."""
    try:
        compiled = compile(code, "<string>", "exec")
        exec(compiled, module.__dict__)
    except SystemExit as exc:
        return _exit_code(exc), False
    except BaseException as exc:  # noqa: BLE001 - the code's own failure, reported like the interpreter does
        _print_exception(exc)
        return 1, isinstance(exc, MemoryError)
    return 0, False


def _print_exception(exc: BaseException) -> None:
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    try:
        if isinstance(exc, SyntaxError):
            tb = None
        traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - printing may itself fail under a memory limit
        pass


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    try:
        print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001
        pass
    return 1
