"""Forkers: one process per worker image that holds the image's preloaded modules and forks the sandboxed
children when the zygote asks.

Why a separate process: after a fork, every page the forking process writes is copied (copy-on-write)
while the child lives. A zygote that handled requests *and* forked paid ~270 such faults per request
(~0.7 ms of CPU on the measured VM, docs/sandbox.md), although its request handling alone costs ~0.1 ms.
The forker does nothing but fork, so it writes almost nothing; the zygote shares no memory with the
children and takes no faults. The forker reaps its children and reports their exit statuses to the
zygote, which stays the children's owner in every other respect (uids, work dirs, teardown).

Messages are JSON over a SOCK_SEQPACKET socketpair (one message per packet):

    zygote -> forker   {"uid", "workdir", "oneshot"} + the child's control socket (SCM_RIGHTS)
    forker -> zygote   {"ready", "preloaded", "preload_failed"}    once, after preloading
                       {"pid"}                                      the reply to each fork order
                       {"exit", "status"}                           whenever a child has been reaped
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from tools.server import procs, runner
from tools.server.isolation import syscalls

MAX_PACKET_BYTES = 64 * 1024
DEFAULT_START_TIMEOUT = 120.0
"""Seconds a forker may take to import its image."""
DEFAULT_FORK_TIMEOUT = 10.0
"""Seconds a forker may take to answer a fork order."""
PARENT_DEATH_SIGNAL = signal.SIGKILL


class ForkerFailed(RuntimeError):
    """The forker died or stopped answering; the zygote cannot make children of that image any more."""


class Forker:
    """The zygote's handle on one forker process."""

    def __init__(self, image: str, preload: list[str]) -> None:
        self.image = image
        self.preload = preload
        self.pid = 0
        self.sock: socket.socket | None = None
        self.exits: list[tuple[int, int]] = []
        """(pid, wait status) reported but not yet taken by the zygote."""

    def start(self, plan_for: Callable[[dict[str, Any]], runner.ChildPlan]) -> dict[str, Any]:
        """Fork the forker (it imports the image), wait until it is ready; its report."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the forker: never returns
            ours.close()
            try:
                _serve(theirs, self.preload, plan_for)
            except BaseException:  # noqa: BLE001 - the zygote sees the socket close and gives up on us
                pass
            os._exit(1)
        theirs.close()
        self.pid, self.sock = pid, ours
        report = self._next(("ready",), DEFAULT_START_TIMEOUT)
        ours.setblocking(False)
        return report

    def fork(self, order: dict[str, Any], child_sock: socket.socket) -> int:
        """Have the forker fork a child that serves ``child_sock``; its pid."""
        assert self.sock is not None
        try:
            socket.send_fds(self.sock, [json.dumps(order).encode()], [child_sock.fileno()])
        except OSError as exc:
            raise ForkerFailed(f"{self.image} forker is gone: {exc!r}") from exc
        return int(self._next(("pid",), DEFAULT_FORK_TIMEOUT)["pid"])

    def poll(self) -> None:
        """Collect the exit reports that have arrived (non-blocking)."""
        while self._receive() is not None:
            pass

    def _next(self, keys: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """Wait for the next message holding one of ``keys`` (exit reports met on the way are kept)."""
        assert self.sock is not None
        fd = self.sock.fileno()
        while True:
            if not select.select([fd], [], [], timeout)[0]:
                raise ForkerFailed(f"{self.image} forker did not answer within {timeout}s")
            message = self._receive()
            if message is not None and any(key in message for key in keys):
                return message

    def _receive(self) -> dict[str, Any] | None:
        """One message if one is waiting (exit reports are also kept in ``exits``); None if none is."""
        assert self.sock is not None
        try:
            packet = self.sock.recv(MAX_PACKET_BYTES)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise ForkerFailed(f"{self.image} forker is gone: {exc!r}") from exc
        if not packet:
            raise ForkerFailed(f"{self.image} forker exited")
        message = json.loads(packet)
        if "exit" in message:
            self.exits.append((int(message["exit"]), int(message["status"])))
        return message

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


# ---- inside the forker ---------------------------------------------------------------------------------
def preload_modules(modules: list[str]) -> list[str]:
    """Import ``modules`` (pytest with its built-in plugins); the ones that failed, with why."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional library must not stop the sandbox
            failed.append(f"{name}: {exc}")
    if "pytest" in modules and "pytest" in sys.modules:
        # pytest imports its built-in plugins on the first pytest.main: take them into the image too.
        import _pytest.config

        failed += preload_modules([f"_pytest.{plugin}" for plugin in _pytest.config.default_plugins])
    return failed


def _serve(sock: socket.socket, preload: list[str], plan_for: Callable[[dict[str, Any]], runner.ChildPlan]) -> None:
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL)
    failed = preload_modules(preload)
    gc.collect()
    gc.freeze()  # keep the preloaded heap out of the children's collections: fewer copy-on-write faults
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    sock.send(json.dumps({"ready": True, "preloaded": [m for m in preload if m in sys.modules],
                          "preload_failed": failed}).encode())
    while True:
        readable = select.select([sock, wake_r], [], [])[0]
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
        _report_exits(sock)
        if sock not in readable:
            continue
        packet, fds, _, _ = socket.recv_fds(sock, MAX_PACKET_BYTES, 1)
        if not packet:
            return  # the zygote is gone
        order = json.loads(packet)
        child_sock = socket.socket(fileno=fds[0])
        pid = os.fork()
        if pid == 0:  # the sandboxed child: never returns
            sock.close()
            runner.start(child_sock, plan_for(order))
        child_sock.close()
        sock.send(json.dumps({"pid": pid}).encode())


def _report_exits(sock: socket.socket) -> None:
    for pid, status in procs.reap_exited():
        sock.send(json.dumps({"exit": pid, "status": status}).encode())
