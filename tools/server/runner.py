"""The sandboxed child: isolates itself, then runs cells sent by its zygote.

A child is forked from the zygote (so numpy, sympy... are already imported), applies every isolation
layer, and waits on its control socket. Each cell arrives as a frame carrying fresh stdin/stdout/stderr
pipes; the child runs the code like ``python -c`` (in a fresh ``__main__`` module), answers with its
return code and exits (one-shot) or waits for the next cell (session, so variables persist).
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
from dataclasses import dataclass

from tools.server import protocol
from tools.server.isolation import landlock, privileges, rlimits, seccomp

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_CELL_FRAME_BYTES = 64 * 1024 * 1024


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
    os.environ.clear()
    os.environ.update(
        {
            "PATH": f"{plan.interpreter_bin}:{SANDBOX_PATH}",
            "HOME": plan.workdir,
            "TMPDIR": plan.workdir,
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
    )
    import tempfile

    tempfile.tempdir = plan.workdir
    sys.path[:] = [""] + [p for p in sys.path if p and any(p.startswith(r) for r in plan.read_paths)]
    sys.argv[:] = ["-c"]
    sys.dont_write_bytecode = True
    from tools.server.isolation import syscalls

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
    while True:
        try:
            message, fds = protocol.recv_frame(sock, MAX_CELL_FRAME_BYTES, max_fds=3)
        except (OSError, protocol.ProtocolError):
            os._exit(70)
        if message is None or len(fds) != 3:
            os._exit(0)
        _attach_stdio(fds)
        rlimits.lower_cpu(float(message.get("timeout", 1.0)), lock_hard=plan.oneshot)
        code, memory = run_cell(str(message.get("code", "")), module)
        _flush_stdio()
        _end_cell(plan)
        try:
            protocol.send_frame(sock, {"rc": code, "memory": memory})
        except OSError:
            os._exit(71)
        if plan.oneshot:
            os._exit(code & 0xFF)


def _attach_stdio(fds: list[int]) -> None:
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
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
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def run_cell(code: str, module: types.ModuleType) -> tuple[int, bool]:
    """Run ``code`` in ``module`` the way ``python -c`` would; returns (exit code, hit MemoryError)."""
    try:
        compiled = compile(code, "<string>", "exec")
        exec(compiled, module.__dict__)
    except SystemExit as exc:
        return _exit_code(exc), False
    except BaseException as exc:  # noqa: BLE001 - the code's own failure, reported like the interpreter does
        memory = isinstance(exc, MemoryError)
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        try:
            if isinstance(exc, SyntaxError):
                tb = None
            traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - printing may itself fail under a memory limit
            pass
        return 1, memory
    return 0, False


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
