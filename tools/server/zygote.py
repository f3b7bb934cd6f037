"""The warm fork-server: one per worker, with the common libraries already imported.

Launched by the server as ``python -m tools.server.zygote CONFIG_JSON`` with a request pipe on stdin and a
reply pipe on stdout. The launcher enters new network/mount/pid namespaces and forks; the fork is pid 1
of the new pid namespace and becomes the zygote (so if it dies, the kernel kills every child it left).
The zygote imports the preload list, keeps one pre-forked, fully isolated spare child waiting (so a
request costs no fork on its critical path), and answers one request at a time:

    {"op": "run", "code", "stdin", "timeout", "session"?, "replay"?}  ->  result frame
    {"op": "close", "session"}                                         ->  {"ok": true}

Every one-shot child and every session runs as its own unprivileged uid, so "kill everything this
request started" is one atomic kill(-1) as that uid (privileges.kill_uid), whatever the code forked,
setsid'ed or daemonised.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tools.server import protocol
from tools.server.isolation import landlock, namespaces, privileges, rlimits, seccomp, syscalls
from tools.server.runner import ChildPlan, isolate, serve

log = logging.getLogger("tools.server.zygote")

DEFAULT_DRAIN_TIMEOUT = 2.0
"""Seconds to wait for a killed request's pipes to reach EOF."""
DEFAULT_REAP_TIMEOUT = 5.0
"""Seconds to wait for a killed child to be reaped before giving up on it."""
PROBE_TIMEOUT = 10.0
"""Seconds the start-up probe child may take."""
EXIT_POLL_INTERVAL = 0.002
"""Seconds between reaping attempts while an answered child finishes exiting and no request waits."""

# Thread pools of numerical libraries would count against RLIMIT_NPROC; one thread each.
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


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
    preload: list[str] = field(default_factory=list)
    use_namespaces: bool = True
    use_seccomp: bool = True
    use_landlock: bool = True
    use_uids: bool = True
    """Run each child as its own unprivileged uid (root only); off = all children share our uid."""

    def uid_for(self, slot: int) -> int:
        """Slot 0 is the one-shot uid, 1..sessions_per_worker the session uids of this worker."""
        return self.uid_base + self.worker_id * (self.sessions_per_worker + 1) + slot


@dataclass
class Child:
    pid: int
    sock: socket.socket
    uid: int | None
    slot: int
    workdir: str
    journal_len: int = 0


@dataclass
class CellResult:
    rc: int | None = None
    memory: bool = False
    timed_out: bool = False
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    crashed: bool = False
    elapsed: float = 0.0


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
        self.spare: Child | None = None
        self.sessions: dict[str, Child] = {}
        self.counter = 0
        self.unique_uids = self.root and config.use_uids  # as root each child gets its own uid
        self.base = "/tmp" if private_tmp else tempfile.mkdtemp(prefix="agentrl-sandbox-")
        """Parent of the work dirs: our private tmpfs, or a private directory of the host's /tmp."""
        # Children may not create anything in the base itself, only in their own 0700 work dir.
        os.chmod(self.base, 0o711)
        self.landlock_ruleset: int | None = None
        if self.landlock_abi and self.unique_uids:
            # One ruleset for all children: write beneath the base, where each work dir is 0700 and owned
            # by its own uid, so the uid keeps children out of each other's dirs. Saves ~1 ms per child.
            self.landlock_ruleset = landlock.create_ruleset(self.read_paths, [self.base], self.landlock_abi)
        self.exiting: set[int] = set()
        """Children that answered and are exiting; reaped while we wait for the next request."""
        self.deferred: list[Callable[[], None]] = []
        """Work done after the reply is written: reaping, removing work dirs, forking the next spare."""

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

    def _fork_child(self, slot: int, oneshot: bool) -> Child:
        uid = self.config.uid_for(slot) if self.unique_uids else None
        self.counter += 1
        workdir = f"{self.base}/{'run' if oneshot else 'session'}-{self.counter}"
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
        plan = self._plan(uid, workdir, oneshot)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # child: never returns
            try:
                parent_sock.close()
                isolate(child_sock.fileno(), plan)
                serve(child_sock, plan)
            except BaseException as exc:  # noqa: BLE001 - report and die; the zygote sees a crashed child
                try:
                    os.write(2, f"sandbox child setup failed: {exc!r}\n".encode())
                except OSError:
                    pass
            os._exit(70)
        child_sock.close()
        return Child(pid=pid, sock=parent_sock, uid=uid, slot=slot, workdir=workdir)

    def _ensure_spare(self) -> None:
        if self.spare is None:
            self.spare = self._fork_child(0, oneshot=True)

    def _destroy(self, child: Child) -> None:
        """Kill the child and everything it started, reap, remove its work dir."""
        self._kill_tree(child)
        child.sock.close()
        self._reap(child.pid)
        shutil.rmtree(child.workdir, ignore_errors=True)

    def _kill_tree(self, child: Child) -> None:
        if child.uid is not None:
            privileges.kill_uid(child.uid, signal.SIGKILL)
            return
        # Weaker mode (one shared uid): we are a child subreaper, so everything the child started stays in
        # our process tree. Kill the descendants of ours that are not a live spare or session.
        keep = {c.pid for c in self.sessions.values() if c is not child}
        if self.spare is not None and self.spare is not child:
            keep.add(self.spare.pid)
        for _ in range(5):
            victims = _descendants(os.getpid(), keep)
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def _reap(self, pid: int) -> int | None:
        """Wait for ``pid`` (already killed or exiting); returns its wait status."""
        deadline = time.monotonic() + DEFAULT_REAP_TIMEOUT
        status: int | None = None
        while time.monotonic() < deadline:
            try:
                got, st = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if got == pid:
                status = st
                break
            time.sleep(0.001)
        self._reap_orphans()
        return status

    def _reap_orphans(self) -> None:
        """As pid 1 we inherit every orphan; collect the dead ones (never our live spare or sessions)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exiting.discard(pid)
            if self.spare is not None and pid == self.spare.pid:
                self.spare.sock.close()
                shutil.rmtree(self.spare.workdir, ignore_errors=True)
                self.spare = None
            for sid, child in list(self.sessions.items()):
                if child.pid == pid:
                    self._forget_session(sid)

    def _forget_session(self, sid: str) -> None:
        child = self.sessions.pop(sid)
        child.sock.close()
        shutil.rmtree(child.workdir, ignore_errors=True)

    # ---- one cell ------------------------------------------------------------------------------------
    def _run_cell(self, child: Child, code: str, stdin: bytes, timeout: float, capture: bool) -> CellResult:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        result = CellResult()
        start = time.monotonic()
        try:
            protocol.send_frame(child.sock, {"code": code, "timeout": timeout}, [in_r, out_w, err_w])
        except OSError:
            result.crashed = True
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        os.set_blocking(in_w, False)
        limit = self.config.output_limit_bytes if capture else 0
        outs = {out_r: bytearray(), err_r: bytearray()}
        pending_in = memoryview(stdin)
        if not pending_in:
            os.close(in_w)
            in_w = -1
        deadline = start + timeout
        open_fds = {out_r, err_r}
        sock_fd = child.sock.fileno()
        done = result.crashed
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
                    done = True
                    self._read_done(child, result)
                elif not self._read_some(fd, outs[fd], limit, result):
                    open_fds.discard(fd)
        result.elapsed = time.monotonic() - start
        if in_w >= 0:
            os.close(in_w)
        if result.timed_out or result.crashed or child.slot == 0:
            self._kill_tree(child)
        self._drain(open_fds, outs, limit, result)
        for fd in (out_r, err_r):
            os.close(fd)
        result.stdout, result.stderr = bytes(outs[out_r]), bytes(outs[err_r])
        return result

    def _read_done(self, child: Child, result: CellResult) -> None:
        try:
            message, _ = protocol.recv_frame(child.sock, 4096)
        except (OSError, protocol.ProtocolError):
            message = None
        if message is None or not isinstance(message.get("rc"), int):
            result.crashed = True
            return
        result.rc = int(message["rc"])
        result.memory = bool(message.get("memory"))

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
            sid = str(request.get("session"))
            child = self.sessions.pop(sid, None)
            if child is not None:
                self._destroy(child)
            return {"ok": True, "sessions": len(self.sessions)}
        return {"error": f"unknown op {op!r}"}

    def _handle_run(self, request: dict[str, Any]) -> dict[str, Any]:
        code = str(request.get("code", ""))
        stdin = str(request.get("stdin") or "").encode()
        timeout = min(float(request.get("timeout", 1.0)), self.config.max_run_timeout)
        sid = request.get("session")
        if sid is None:
            self._ensure_spare()
            child, self.spare = self.spare, None
            assert child is not None
            result = self._run_cell(child, code, stdin, timeout, capture=True)
            child.sock.close()
            if result.rc is None:  # it died without answering: its wait status says how
                status = self._reap(child.pid)
                if status is not None and os.WIFSIGNALED(status):
                    result.signal = os.WTERMSIG(status)
            else:  # it is exiting on its own; the idle loop reaps it without delaying this reply
                self.exiting.add(child.pid)
            self.deferred.append(lambda: shutil.rmtree(child.workdir, ignore_errors=True))
            self.deferred.append(self._ensure_spare)  # the next request's child, off its critical path
            return self._reply(result)
        return self._handle_session_run(str(sid), code, stdin, timeout, request.get("replay") or [])

    def _handle_session_run(
        self, sid: str, code: str, stdin: bytes, timeout: float, replay: list[str]
    ) -> dict[str, Any]:
        child = self.sessions.get(sid)
        replayed = 0
        if child is None:
            used = {c.slot for c in self.sessions.values()}
            free = [s for s in range(1, self.config.sessions_per_worker + 1) if s not in used]
            if not free:
                return {"error": "no free session slot in this worker", "session_alive": False}
            child = self._fork_child(free[0], oneshot=False)
            self.sessions[sid] = child
            for cell in replay:
                res = self._run_cell(child, str(cell), b"", timeout, capture=False)
                if res.timed_out or res.crashed:
                    self._destroy(self.sessions.pop(sid))
                    return {"error": "session replay failed: a journaled cell did not finish", "session_alive": False}
                replayed += 1
        result = self._run_cell(child, code, stdin, timeout, capture=True)
        alive = not (result.timed_out or result.crashed)
        if not alive:
            self.sessions.pop(sid, None)
            child.sock.close()
            status = self._reap(child.pid)
            if status is not None and os.WIFSIGNALED(status) and result.rc is None:
                result.signal = os.WTERMSIG(status)
            shutil.rmtree(child.workdir, ignore_errors=True)
        reply = self._reply(result)
        reply.update(session_alive=alive, replayed=replayed)
        return reply

    def _reply(self, result: CellResult) -> dict[str, Any]:
        return {
            "rc": result.rc,
            "memory": result.memory,
            "timed_out": result.timed_out,
            "signal": result.signal,
            "crashed": result.crashed and result.rc is None,
            "stdout": result.stdout.decode("utf-8", errors="replace"),
            "stderr": result.stderr.decode("utf-8", errors="replace"),
            "truncated": result.truncated,
            "elapsed": result.elapsed,
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

    def probe(self) -> dict[str, Any]:
        """Run the probe snippet in a real child and combine its findings with the zygote's own."""
        self._ensure_spare()
        child, self.spare = self.spare, None
        assert child is not None
        hidden = self._landlock_probe_dir()
        code = f"HIDDEN = {hidden!r}\n" + PROBE_CODE
        result = self._run_cell(child, code, b"", PROBE_TIMEOUT, capture=True)
        child.sock.close()
        self._reap(child.pid)
        shutil.rmtree(child.workdir, ignore_errors=True)
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
            errors.append(f"probe child failed: rc={result.rc} stderr={result.stderr[-2000:]!r}")
        return {
            "layers": layers,
            "landlock_abi": self.landlock_abi,
            "user_namespace": self.ns.user,
            "errors": errors,
        }


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


def _descendants(root: int, keep: set[int]) -> list[int]:
    """Pids below ``root`` in the process tree, skipping the subtrees rooted at ``keep``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [p for p in children.get(root, []) if p not in keep]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += [p for p in children.get(pid, []) if p not in keep]
    return found


def _preload(modules: list[str]) -> list[str]:
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional library must not stop the sandbox
            failed.append(f"{name}: {exc}")
    return failed


def serve_forever(config: ZygoteConfig, req_fd: int, rep_fd: int, ns: namespaces.NamespaceReport) -> None:
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
    os.environ.update(THREAD_ENV)
    failed = _preload(config.preload)
    import gc

    gc.collect()
    gc.freeze()  # keep the preloaded heap out of the children's collections: fewer copy-on-write faults
    zygote = Zygote(config, ns, mount_errors, private_tmp)
    report = zygote.probe()
    report["preload_failed"] = failed
    report["preloaded"] = [m for m in config.preload if m in sys.modules]
    protocol.write_frame_fd(rep_fd, {"ready": True, **report})
    try:
        _loop(zygote, req_fd, rep_fd)
    finally:
        for sid in list(zygote.sessions):
            zygote._destroy(zygote.sessions.pop(sid))
        if zygote.spare is not None:
            zygote._destroy(zygote.spare)
        if zygote.base != "/tmp":
            shutil.rmtree(zygote.base, ignore_errors=True)


def _loop(zygote: Zygote, req_fd: int, rep_fd: int) -> None:
    # SIGCHLD wakes the idle loop so children and adopted orphans are reaped at once, never left as zombies.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    zygote._ensure_spare()
    while True:
        timeout = EXIT_POLL_INTERVAL if zygote.exiting else None
        ready = select.select([req_fd, wake_r], [], [], timeout)[0]
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
        zygote._reap_orphans()
        if req_fd not in ready:
            continue
        request = protocol.read_frame_fd(req_fd)
        if request is None:
            return
        try:
            reply = zygote.handle(request)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the worker down
            log.exception("zygote request failed")
            reply = {"error": f"zygote: {exc!r}"}
        protocol.write_frame_fd(rep_fd, reply)
        deferred, zygote.deferred = zygote.deferred, []
        for task in deferred:
            task()
        zygote._reap_orphans()


def main(argv: list[str]) -> int:
    config = ZygoteConfig(**json.loads(argv[0]))
    logging.basicConfig(level=logging.WARNING, format=f"zygote[{config.worker_id}] %(levelname)s %(message)s")
    # Our protocol pipes move to high descriptors; 0 and 1 become /dev/null so nothing can write on them.
    req_fd, rep_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        return 1  # the server is already gone
    if config.use_namespaces:
        ns = namespaces.enter(want_user=os.getuid() != 0)
    else:
        ns = namespaces.NamespaceReport(errors=["namespaces disabled by configuration"])
    if not ns.pid:
        serve_forever(config, req_fd, rep_fd, ns)
        return 0
    pid = os.fork()  # the first fork after unshare(CLONE_NEWPID) is pid 1 of the new namespace
    if pid == 0:
        try:
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            serve_forever(config, req_fd, rep_fd, ns)
        except BaseException:  # noqa: BLE001
            log.exception("zygote crashed")
            os._exit(1)
        os._exit(0)
    os.close(req_fd)
    os.close(rep_fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def config_json(config: ZygoteConfig) -> str:
    return json.dumps(asdict(config))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
