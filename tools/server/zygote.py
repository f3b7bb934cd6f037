"""The warm fork-server of one worker: a zygote that answers requests, and one forker per image.

Launched by the server as ``python -m tools.server.zygote CONFIG_JSON`` with a request pipe on stdin and
a reply pipe on stdout. The launcher enters new network/mount/pid namespaces and forks; the fork is
pid 1 of the new pid namespace and becomes the zygote (so if it dies, the kernel kills every child it
left). The zygote starts one forker per worker image (tools.server.forker: "full" imports the whole
preload list, "lean" only its standard-library part), keeps one pre-forked, fully isolated spare child
of each image waiting (so a request costs no fork on its critical path), and answers one request at a
time:

    {"op": "run", "image", "code", "stdin", "timeout", "language", "args", "files", "fetch",
     "fetch_limit", "memory", "session"?, "replay"?}                   ->  result frame (see _reply)
    {"op": "close", "session"}                                         ->  {"ok": true}

Every one-shot child and every session runs as its own unprivileged uid, so "kill everything this
request started" is one atomic kill(-1) as that uid (privileges.kill_uid), whatever the code forked,
setsid'ed or daemonised. Every child ends through :meth:`Zygote._teardown`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tools.server import procs, protocol, runner
from tools.server.forker import Forker, ForkerFailed
from tools.server.isolation import landlock, namespaces, privileges, rlimits, seccomp, syscalls
from tools.server.runner import ChildPlan

# No logging, threading, tempfile or random in this process: the forkers are forked from it, and every
# sandboxed child would run their at-fork handlers (~0.5 ms and ~170 copy-on-write faults per child,
# docs/sandbox.md). Messages go to stderr, which the server passes through.
WORKER_ID = -1
"""Set from the config in main(); prefixes our messages."""


def warn(message: str, *, exc: BaseException | None = None) -> None:
    """One line (and a traceback) on stderr."""
    text = f"zygote[{WORKER_ID}] WARNING {message}\n"
    if exc is not None:
        text += "".join(traceback.format_exception(exc))
    try:
        os.write(2, text.encode(errors="replace"))
    except OSError:
        pass

KILL_SIGNAL = signal.SIGKILL
"""What ends a child and everything it started (cannot be caught or ignored)."""
CPU_LIMIT_SIGNAL = signal.SIGXCPU
"""RLIMIT_CPU's signal: the CPU-time backstop of the wall-clock limit fired (reported as a time limit)."""
PARENT_DEATH_SIGNAL = signal.SIGKILL
"""Sent to the launcher when the server dies, and to the zygote when its launcher dies."""

DEFAULT_DRAIN_TIMEOUT = 2.0
"""Seconds to wait for a killed request's pipes to reach EOF."""
DEFAULT_REAP_TIMEOUT = 5.0
"""Seconds to wait for a killed child (and every process of its uid) to be gone before giving up on it."""
DEFAULT_READY_TIMEOUT = 10.0
"""Seconds a freshly forked child may take to isolate itself before it counts as failed."""
PROBE_TIMEOUT = 10.0
"""Seconds the start-up probe child may take."""
MAX_REPLY_FRAME_BYTES = 256 * 1024 * 1024
"""Largest reply a child may send (fetched files, base64); the server's fetch limit is far below."""
FULL = "full"
"""The image with every preloaded module; sessions, pytest and third-party imports run here."""


@dataclass
class ZygoteConfig:
    worker_id: int
    uid_base: int
    sessions_per_worker: int
    memory_bytes: int
    max_processes: int
    file_size_bytes: int
    open_files: int
    max_run_timeout: float
    tmpfs_bytes: int
    output_limit_bytes: int
    images: dict[str, list[str]] = field(default_factory=lambda: {FULL: []})
    """Image name -> modules its forker preloads; "full" first (tools.server.images)."""
    use_namespaces: bool = True
    use_seccomp: bool = True
    use_landlock: bool = True
    use_uids: bool = True
    """Run each child as its own unprivileged uid (root only); off = all children share our uid."""

    def oneshot_slot(self, image: str) -> int:
        """Each image has its own one-shot uid (its spare must survive a kill(-1) of the other's)."""
        return list(self.images).index(image)

    def uid_for(self, slot: int) -> int:
        """Slots 0/1: the one-shot uids of the images; SESSION_SLOT.. the session uids of this worker."""
        return self.uid_base + self.worker_id * (self.sessions_per_worker + SESSION_SLOT) + slot


SESSION_SLOT = 2
"""First uid slot of a worker's sessions (0 and 1 are the one-shot uids of its at most two images)."""


@dataclass
class Child:
    pid: int
    sock: socket.socket
    uid: int | None
    slot: int
    workdir: str
    image: str
    ready: bool = False
    status: int | None = None
    """Wait status once reaped."""


@dataclass
class CellResult:
    rc: int | None = None
    memory: bool = False
    timed_out: bool = False
    ended: bool = False
    """The child ended (exited or was killed) without answering; its wait status gives rc."""
    runner_error: str | None = None
    """The sandbox failed before the code could run (a child that did not start): not the code's fault."""
    refused: str | None = None
    """The child refused the request's files (a path through a link, say): the client's fault."""
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    elapsed: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def child_lost(self) -> bool:
        return self.timed_out or self.ended or self.runner_error is not None


class Zygote:
    def __init__(
        self, config: ZygoteConfig, ns: namespaces.NamespaceReport, mount_errors: list[str], private_tmp: bool
    ) -> None:
        self.config = config
        self.ns = ns
        self.mount_errors = mount_errors
        self.root = os.getuid() == 0 and not ns.user
        self.landlock_abi = landlock.abi_version() if config.use_landlock else 0
        self.seccomp_filter = (
            seccomp.PreparedFilter(seccomp.compile_program()) if config.use_seccomp and seccomp.supported() else None
        )
        self.read_paths = tuple(
            p for p in (*landlock.SYSTEM_READ_PATHS, *landlock.interpreter_paths()) if os.path.exists(p)
        )
        self.interpreter_bin = os.path.dirname(sys.executable)
        self.forkers = {name: Forker(name, preload) for name, preload in config.images.items()}
        self.spares: dict[str, Child] = {}
        """One pre-forked, isolated child per image, waiting for the next one-shot request."""
        self.sessions: dict[str, Child] = {}
        self.children: dict[int, Child] = {}
        """Every child we forked and have not reaped yet, by pid."""
        self.counter = 0
        self.unique_uids = self.root and config.use_uids  # as root each child gets its own uid
        self.base = "/tmp" if private_tmp else _private_dir("/tmp/agentrl-sandbox-")
        """Parent of the work dirs: our private tmpfs, or a private directory of the host's /tmp."""
        # Children may not create anything in the base itself, only in their own 0700 work dir.
        os.chmod(self.base, 0o711)
        self.landlock_ruleset: int | None = None
        if self.landlock_abi and self.unique_uids:
            # One ruleset for all children: write beneath the base, where each work dir is 0700 and owned
            # by its own uid, so the uid keeps children out of each other's dirs. Saves ~1 ms per child.
            self.landlock_ruleset = landlock.create_ruleset(self.read_paths, [self.base], self.landlock_abi)
        self.deferred: list[Callable[[], None]] = []
        """Work done after the reply is written: tearing the answered child down, forking the next spare."""
        # SIGCHLD writes to this pipe, so waiting for a child is a select with a deadline, never a sleep.
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)

    def start_forkers(self) -> dict[str, dict[str, Any]]:
        """Start each image's forker (it imports the image's modules); their reports by image."""
        return {name: forker.start(self._plan_for) for name, forker in self.forkers.items()}

    @property
    def watched(self) -> list[int]:
        """Descriptors that say a child or orphan may have ended: the SIGCHLD pipe and the forkers."""
        return [self.wake_r, *(f.sock.fileno() for f in self.forkers.values() if f.sock is not None)]

    # ---- children ---------------------------------------------------------------------------------
    def _plan(self, uid: int | None, workdir: str, oneshot: bool) -> ChildPlan:
        limits = rlimits.Limits(
            memory_bytes=self.config.memory_bytes,
            max_processes=self.config.max_processes,
            file_size_bytes=self.config.file_size_bytes,
            open_files=self.config.open_files,
            cpu_seconds=self.config.max_run_timeout + 1 if oneshot else 24 * 3600,
        )
        return ChildPlan(
            uid=uid,
            workdir=workdir,
            limits=limits,
            landlock_abi=self.landlock_abi,
            read_paths=self.read_paths,
            seccomp_filter=self.seccomp_filter,
            landlock_ruleset=self.landlock_ruleset,
            interpreter_bin=self.interpreter_bin,
            oneshot=oneshot,
            kill_own_tree=self.unique_uids,
        )

    def _plan_for(self, order: dict[str, Any]) -> ChildPlan:
        """The plan of a child the forker is about to fork (runs in the forker)."""
        return self._plan(order["uid"], order["workdir"], bool(order["oneshot"]))

    def _fork_child(self, slot: int, oneshot: bool, image: str = FULL) -> Child:
        uid = self.config.uid_for(slot) if self.unique_uids else None
        self.counter += 1
        workdir = f"{self.base}/{'run' if oneshot else 'session'}-{self.counter}"
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = self.forkers[image].fork({"uid": uid, "workdir": workdir, "oneshot": oneshot}, child_sock)
        finally:
            child_sock.close()
        parent_sock.setblocking(False)
        child = Child(pid=pid, sock=parent_sock, uid=uid, slot=slot, workdir=workdir, image=image)
        self.children[pid] = child
        return child

    def _ensure_spares(self) -> None:
        for image in self.forkers:
            if image not in self.spares:
                self.spares[image] = self._fork_child(self.config.oneshot_slot(image), oneshot=True, image=image)

    def _take_spare(self, image: str) -> Child:
        if image not in self.spares:
            self.spares[image] = self._fork_child(self.config.oneshot_slot(image), oneshot=True, image=image)
        return self.spares.pop(image)

    def _teardown(self, child: Child) -> int | None:
        """The one way a child ends: kill it and everything it started, reap it, remove its work dir and
        forget it. Returns its wait status (None if it could not be reaped in time). Idempotent."""
        self._kill_tree(child)
        child.sock.close()
        deadline = time.monotonic() + DEFAULT_REAP_TIMEOUT
        self._wait_until(lambda: child.status is not None, deadline)
        if child.uid is not None and self.ns.pid:
            # Everything of its uid is killed; wait until the last of it is reaped, so the next child of
            # this uid never coexists with a remnant of the previous one.
            self._wait_until(lambda: not procs.uid_processes(child.uid), deadline)  # type: ignore[arg-type]
        if child.status is None:
            warn(f"child {child.pid} of uid {child.uid} not reaped within {DEFAULT_REAP_TIMEOUT}s")
        shutil.rmtree(child.workdir, ignore_errors=True)
        if self.spares.get(child.image) is child:
            del self.spares[child.image]
        for sid, held in list(self.sessions.items()):
            if held is child:
                del self.sessions[sid]
        return child.status

    def _kill_tree(self, child: Child) -> None:
        if child.uid is not None:
            privileges.kill_uid(child.uid, KILL_SIGNAL)
            # Switching uids cleared our parent-death signal (prctl(2)); arm it again.
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL)
            return
        if child.status is None:
            try:
                os.kill(child.pid, KILL_SIGNAL)
            except ProcessLookupError:
                pass
        # Weaker mode (one shared uid): we are a child subreaper, so everything the child started is below
        # it or, orphaned, below us. Kill those, sparing the forkers and the live spares and sessions.
        keep = {c.pid for c in (*self.sessions.values(), *self.spares.values()) if c is not child}
        keep |= {f.pid for f in self.forkers.values()}
        for _ in range(5):
            victims = procs.descendants(child.pid, set()) + procs.descendants(os.getpid(), keep)
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, KILL_SIGNAL)
                except OSError:
                    pass
            self._wait_until(lambda: False, time.monotonic() + 0.01)

    def _wait_until(self, done: Callable[[], bool], deadline: float) -> None:
        """Reap what has exited until ``done()`` or the deadline; woken by SIGCHLD, never busy-waiting."""
        while True:
            self._reap_dead()
            if done():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # SIGCHLD wakes us; the short cap covers remnants reaped elsewhere (orphans of other parents).
            if self.wake_r in select.select(self.watched, [], [], min(remaining, 0.005))[0]:
                _drain(self.wake_r)

    def _reap_dead(self) -> None:
        """Collect every ended child: the forkers report theirs, and as pid 1 (or subreaper) we reap the
        code's orphans ourselves. A spare or session child that died while idle is torn down here (the
        next request forks or replays a new one). Raises ForkerFailed if a forker itself died."""
        ended: list[tuple[int, int]] = []
        for forker in self.forkers.values():
            forker.poll()
            ended += forker.exits
            forker.exits = []
        for pid, status in procs.reap_exited():
            if any(f.pid == pid for f in self.forkers.values()):
                raise ForkerFailed(f"a forker exited with status {status}")
            ended.append((pid, status))  # an orphan, or a child whose forker died before reaping it
        for pid, status in ended:
            child = self.children.pop(pid, None)
            if child is None:
                continue
            child.status = status
            if child in self.spares.values() or child in self.sessions.values():
                self._teardown(child)

    # ---- one cell ------------------------------------------------------------------------------------
    def _wait_ready(self, child: Child, deadline: float) -> str | None:
        """None once the child said it is isolated; else why it is not (a runner failure)."""
        if child.ready:
            return None
        fd = child.sock.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return f"sandbox child did not finish isolating itself within {DEFAULT_READY_TIMEOUT}s"
            try:
                data = child.sock.recv(runner.MAX_SETUP_ERROR_BYTES + 1)
            except BlockingIOError:
                continue
            except OSError as exc:
                return f"sandbox child failed during set-up: {exc!r}"
            if data == runner.READY:
                child.ready = True
                return None
            if data.startswith(runner.SETUP_FAILED):
                return data[1:].decode("utf-8", errors="replace")
            return f"sandbox child failed during set-up ({data[:100]!r})"

    def _run_cell(self, child: Child, cell: dict[str, Any], stdin: bytes, timeout: float, capture: bool) -> CellResult:
        result = CellResult()
        start = time.monotonic()
        problem = self._wait_ready(child, start + DEFAULT_READY_TIMEOUT)
        if problem is not None:
            result.runner_error = problem
            return result
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            protocol.send_frame(child.sock, cell, [in_r, out_w, err_w])
        except OSError as exc:
            result.runner_error = f"could not hand the code to the sandbox child: {exc!r}"
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        start = time.monotonic()
        os.set_blocking(in_w, False)
        limit = self.config.output_limit_bytes if capture else 0
        outs = {out_r: bytearray(), err_r: bytearray()}
        pending_in = memoryview(stdin)
        if not pending_in or result.runner_error:
            os.close(in_w)
            in_w = -1
        deadline = start + timeout
        open_fds = {out_r, err_r}
        sock_fd = child.sock.fileno()
        reader = protocol.FrameReader(MAX_REPLY_FRAME_BYTES)
        done = result.runner_error is not None
        while not done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.timed_out = True
                break
            rlist = [*open_fds, sock_fd]
            wlist = [in_w] if in_w >= 0 else []
            readable, writable, _ = select.select(rlist, wlist, [], remaining)
            if writable:
                try:
                    n = os.write(in_w, pending_in[: 1 << 16])
                    pending_in = pending_in[n:]
                except OSError:
                    pending_in = memoryview(b"")
                if not pending_in:
                    os.close(in_w)
                    in_w = -1
            for fd in readable:
                if fd == sock_fd:
                    done = self._read_reply(child, reader, result)
                elif not self._read_some(fd, outs[fd], limit, result):
                    open_fds.discard(fd)
        result.elapsed = time.monotonic() - start
        if in_w >= 0:
            os.close(in_w)
        if result.child_lost or child.slot < SESSION_SLOT:
            # Nothing a one-shot request started outlives it; a lost session child goes with its leftovers.
            self._kill_tree(child)
        self._drain(open_fds, outs, limit, result)
        for fd in (out_r, err_r):
            os.close(fd)
        result.stdout, result.stderr = bytes(outs[out_r]), bytes(outs[err_r])
        if result.ended or result.timed_out:
            status = self._teardown(child)
            if result.ended and status is None:
                result.runner_error = "the sandbox child ended and could not be reaped"
            elif result.ended and os.waitstatus_to_exitcode(status) == -CPU_LIMIT_SIGNAL:
                result.timed_out = True
            elif result.ended:
                result.rc = os.waitstatus_to_exitcode(status)
        return result

    @staticmethod
    def _read_reply(child: Child, reader: protocol.FrameReader, result: CellResult) -> bool:
        """Read what the child sent; True once its reply is complete or it is gone."""
        try:
            chunk = child.sock.recv(1 << 20)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            result.ended = True  # it exited (os._exit, a signal) without answering: its status tells
            return True
        try:
            message = reader.feed(chunk)
        except protocol.ProtocolError:
            result.ended = True  # garbage on the control socket: the code wrote to it; end it like a crash
            return True
        if message is None:
            return False
        if "refused" in message:
            result.refused = str(message["refused"])
            return True
        if not isinstance(message.get("rc"), int):
            result.ended = True
            return True
        result.rc = int(message["rc"])
        result.memory = bool(message.get("memory"))
        files = message.get("files")
        if isinstance(files, dict):
            result.files = {str(k): str(v) for k, v in files.items()}
        result.notes = [str(n) for n in message.get("notes") or ()]
        return True

    @staticmethod
    def _read_some(fd: int, buf: bytearray, limit: int, result: CellResult) -> bool:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            return False
        if not chunk:
            return False
        room = limit - len(buf)
        if len(chunk) > room:
            result.truncated = result.truncated or limit > 0
            chunk = chunk[: max(room, 0)]
        buf += chunk
        return True

    def _drain(self, open_fds: set[int], outs: dict[int, bytearray], limit: int, result: CellResult) -> None:
        deadline = time.monotonic() + DEFAULT_DRAIN_TIMEOUT
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            readable, _, _ = select.select(list(open_fds), [], [], remaining)
            for fd in readable:
                if not self._read_some(fd, outs[fd], limit, result):
                    open_fds.discard(fd)

    # ---- requests ------------------------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "run":
            return self._handle_run(request)
        if op == "close":
            child = self.sessions.get(str(request.get("session")))
            if child is not None:
                self._teardown(child)
            return {"ok": True, "sessions": len(self.sessions)}
        return {"error": f"unknown op {op!r}"}

    def _handle_run(self, request: dict[str, Any]) -> dict[str, Any]:
        stdin = str(request.get("stdin") or "").encode()
        timeout = min(float(request.get("timeout", 1.0)), self.config.max_run_timeout)
        cell = {key: request[key] for key in CELL_KEYS if key in request}
        cell["timeout"] = timeout
        sid = request.get("session")
        if sid is not None:
            return self._handle_session_run(str(sid), cell, stdin, timeout, request.get("replay") or [])
        image = str(request.get("image", FULL))
        if image not in self.forkers:
            return {"error": f"unknown image {image!r}; this worker has {sorted(self.forkers)}"}
        child = self._take_spare(image)
        result = self._run_cell(child, cell, stdin, timeout, capture=True)
        if child.status is None:  # answered: tear it down after the reply, then fork the next spare
            self.deferred.append(lambda: self._teardown(child))
        self.deferred.append(self._ensure_spares)
        return self._reply(result)

    def _handle_session_run(
        self, sid: str, cell: dict[str, Any], stdin: bytes, timeout: float, replay: list[dict[str, Any]]
    ) -> dict[str, Any]:
        child = self.sessions.get(sid)
        replayed = 0
        if child is None:
            used = {c.slot for c in self.sessions.values()}
            free = [s for s in range(SESSION_SLOT, SESSION_SLOT + self.config.sessions_per_worker) if s not in used]
            if not free:
                return {"error": "no free session slot in this worker", "session_alive": False}
            child = self._fork_child(free[0], oneshot=False, image=FULL)
            self.sessions[sid] = child
            for entry in replay:
                replay_cell = {key: entry[key] for key in CELL_KEYS if key in entry} | {"timeout": timeout}
                res = self._run_cell(child, replay_cell, b"", timeout, capture=False)
                if res.child_lost or res.refused:
                    self._teardown(child)
                    return {"error": "session replay failed: a journaled cell did not finish", "session_alive": False}
                replayed += 1
        result = self._run_cell(child, cell, stdin, timeout, capture=True)
        if result.child_lost and child.status is None:
            self._teardown(child)
        reply = self._reply(result)
        reply.update(session_alive=not result.child_lost, replayed=replayed)
        return reply

    @staticmethod
    def _reply(result: CellResult) -> dict[str, Any]:
        return {
            "rc": result.rc,
            "memory": result.memory,
            "timed_out": result.timed_out,
            "runner_error": result.runner_error,
            "refused": result.refused,
            "stdout": result.stdout.decode("utf-8", errors="replace"),
            "stderr": result.stderr.decode("utf-8", errors="replace"),
            "truncated": result.truncated,
            "elapsed": result.elapsed,
            "files": result.files,
            "notes": result.notes,
        }

    # ---- start-up probe ------------------------------------------------------------------------------
    def _landlock_probe_dir(self) -> str:
        """A directory that file permissions let the child list but Landlock must not: the project tree,
        else (a checkout under /tmp sits beneath the children's write base) a system directory outside
        the allowed paths; "" when none exists (the probe then tries a write beside its work dir)."""
        allowed = (*self.read_paths, self.base)

        def outside(path: str) -> bool:
            return not any(path == a or path.startswith(a.rstrip("/") + "/") for a in allowed)

        project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for path in (project, "/var", "/opt", "/srv", "/home", "/mnt"):
            mode = os.stat(path).st_mode if os.path.isdir(path) else 0
            if outside(path) and mode & stat.S_IROTH and mode & stat.S_IXOTH:
                return path
        return ""

    def languages(self) -> list[str]:
        """The languages this image can run: pytest needs the package, bash its binary."""
        found = ["python"]
        if importlib.util.find_spec("pytest") is not None:
            found.append("pytest")
        if runner.find_program("bash") is not None:
            found.append("bash")
        return found

    def probe(self) -> dict[str, Any]:
        """Run the probe snippet in a real child and combine its findings with the zygote's own."""
        child = self._take_spare(FULL)
        hidden = self._landlock_probe_dir()
        code = f"HIDDEN = {hidden!r}\n" + PROBE_CODE
        result = self._run_cell(child, {"code": code, "timeout": PROBE_TIMEOUT}, b"", PROBE_TIMEOUT, capture=True)
        self._teardown(child)
        try:
            found = json.loads(result.stdout.decode())
        except ValueError:
            found = {}
        layers = {
            "network_namespace": self.ns.network and bool(found.get("no_network")),
            "mount_namespace": self.ns.mount and not self.mount_errors and bool(found.get("private_tmp")),
            "pid_namespace": self.ns.pid and bool(found.get("pid_namespace")),
            "unprivileged_uid": bool(found.get("unprivileged_uid")),
            "seccomp": self.seccomp_filter is not None and bool(found.get("seccomp")),
            "landlock": self.landlock_abi > 0 and bool(found.get("landlock")),
            "rlimits": bool(found.get("rlimits")),
            "kill_by_uid": self.unique_uids and bool(found.get("unprivileged_uid")),
        }
        errors = list(self.ns.errors) + list(self.mount_errors)
        if not found:
            errors.append(
                f"probe child failed: {result.runner_error or ''} rc={result.rc} stderr={result.stderr[-2000:]!r}"
            )
        return {
            "layers": layers,
            "landlock_abi": self.landlock_abi,
            "user_namespace": self.ns.user,
            "languages": self.languages(),
            "errors": errors,
        }

    def shutdown(self) -> None:
        for child in [*self.sessions.values(), *self.spares.values()]:
            try:
                self._teardown(child)
            except ForkerFailed:
                pass
        for forker in self.forkers.values():
            forker.close()  # it sees end of file and exits
        if self.base != "/tmp":
            shutil.rmtree(self.base, ignore_errors=True)


CELL_KEYS = ("code", "language", "args", "files", "fetch", "fetch_limit", "memory")
"""The parts of a run request that travel on to the child (and into a session's journal)."""


PROBE_CODE = r"""
import json, os, resource, socket, errno
found = {}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1).close()
    found["no_network"] = False
except OSError:
    found["no_network"] = [n for _, n in socket.if_nameindex()] == ["lo"]
found["unprivileged_uid"] = os.getuid() != 0 and os.geteuid() != 0 and os.getgid() != 0
status = open("/proc/self/status").read()
found["seccomp"] = "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status
# Landlock: the project dir is readable by permissions but outside the allowed paths; else the probe
# writes next to its work dir, which Landlock (not the directory mode) refuses when ruled per child.
try:
    if HIDDEN:
        os.listdir(HIDDEN)
    else:
        open(os.path.join(os.path.dirname(os.getcwd()), f".landlock-probe-{os.getpid()}"), "w").close()
    found["landlock"] = False
except PermissionError:
    found["landlock"] = True
except OSError:
    found["landlock"] = False
status_caps = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith("Cap"))
found["unprivileged_uid"] = found["unprivileged_uid"] and status_caps.get("CapEff", "").strip("0\n") == ""
found["private_tmp"] = not os.path.exists("/tmp/.X11-unix") and os.statvfs("/tmp").f_blocks > 0
found["pid_namespace"] = len([p for p in os.listdir("/proc") if p.isdigit()]) < 16 and os.path.exists("/proc/1")
found["rlimits"] = resource.getrlimit(resource.RLIMIT_NPROC)[1] != resource.RLIM_INFINITY and \
    resource.getrlimit(resource.RLIMIT_AS)[1] != resource.RLIM_INFINITY
print(json.dumps(found))
"""


def _private_dir(prefix: str) -> str:
    """A new 0700 directory ``prefix`` + random suffix (tempfile.mkdtemp without importing tempfile)."""
    while True:
        path = prefix + os.urandom(6).hex()
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def _drain(fd: int) -> None:
    """Empty a non-blocking pipe."""
    while True:
        try:
            if not os.read(fd, 512):
                return
        except BlockingIOError:
            return


def serve_forever(
    config: ZygoteConfig, req_fd: int, rep_fd: int, ns: namespaces.NamespaceReport, lifeline: int | None = None
) -> None:
    """Set the namespace up, preload, probe, then serve until the request pipe or ``lifeline`` (a pipe whose
    writer is our launcher) reaches end of file."""
    mount_errors: list[str] = []
    private_tmp = False
    if ns.mount:
        expose = landlock.interpreter_paths()
        private_tmp, mount_errors = namespaces.setup_mounts(
            tmp_size_bytes=config.tmpfs_bytes, expose=expose, pid_namespace=ns.pid
        )
    if not private_tmp:
        mount_errors.append("no private tmpfs: work dirs live in a private directory of the host's /tmp")
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)  # orphans of our children come to us, not to init
    # We never execve, so an empty bounding set costs us nothing; children inherit it (no caps via exec).
    privileges.drop_bounding_set()
    zygote = Zygote(config, ns, mount_errors, private_tmp)
    runner.prepare_image(zygote.interpreter_bin, zygote.read_paths)  # inherited by the forkers
    forkers = zygote.start_forkers()
    report = zygote.probe()
    report["preload_failed"] = [f for r in forkers.values() for f in r.get("preload_failed", [])]
    report["preloaded"] = forkers[FULL].get("preloaded", [])
    report["images"] = {name: r.get("preloaded", []) for name, r in forkers.items()}
    protocol.write_frame_fd(rep_fd, {"ready": True, **report})
    try:
        _loop(zygote, req_fd, rep_fd, lifeline)
    finally:
        zygote.shutdown()


def _loop(zygote: Zygote, req_fd: int, rep_fd: int, lifeline: int | None) -> None:
    zygote._ensure_spares()
    watched = [req_fd, *zygote.watched] + ([lifeline] if lifeline is not None else [])
    while True:
        ready = select.select(watched, [], [])[0]
        if lifeline in ready:
            return  # our launcher is gone (only end of file ever arrives on this pipe)
        if zygote.wake_r in ready:
            _drain(zygote.wake_r)
        zygote._reap_dead()  # SIGCHLD woke us: children and adopted orphans never linger as zombies
        if req_fd not in ready:
            continue
        request = protocol.read_frame_fd(req_fd)
        if request is None:
            return
        try:
            reply = zygote.handle(request)
        except ForkerFailed as exc:  # this worker cannot make children any more: exit, the server restarts it
            protocol.write_frame_fd(rep_fd, {"error": f"zygote: {exc}"})
            raise
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the worker down
            warn("zygote request failed", exc=exc)
            reply = {"error": f"zygote: {exc!r}"}
        protocol.write_frame_fd(rep_fd, reply)
        deferred, zygote.deferred = zygote.deferred, []
        for task in deferred:
            task()


def main(argv: list[str]) -> int:
    global WORKER_ID
    config = ZygoteConfig(**json.loads(argv[0]))
    WORKER_ID = config.worker_id
    # Our protocol pipes move to high descriptors; 0 and 1 become /dev/null so nothing can write on them.
    req_fd, rep_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL)
    if os.getppid() == 1:
        return 1  # the server is already gone
    if config.use_namespaces:
        ns = namespaces.enter(want_user=os.getuid() != 0)
    else:
        ns = namespaces.NamespaceReport(errors=["namespaces disabled by configuration"])
    if not ns.pid:
        serve_forever(config, req_fd, rep_fd, ns)
        return 0
    # The zygote (pid 1 below) may not learn of our death by signal alone: a uid switch clears its
    # parent-death signal. It also watches this pipe, whose only writer is us.
    lifeline_r, lifeline_w = os.pipe()
    pid = os.fork()  # the first fork after unshare(CLONE_NEWPID) is pid 1 of the new namespace
    if pid == 0:
        try:
            os.close(lifeline_w)
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            serve_forever(config, req_fd, rep_fd, ns, lifeline_r)
        except BaseException as exc:  # noqa: BLE001
            warn("zygote crashed", exc=exc)
            os._exit(1)
        os._exit(0)
    os.close(lifeline_r)
    os.close(req_fd)
    os.close(rep_fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def config_json(config: ZygoteConfig) -> str:
    return json.dumps(asdict(config))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
