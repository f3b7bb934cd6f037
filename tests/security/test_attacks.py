"""Hostile snippets against the real server on loopback. After each one the `sandbox` fixture checks
that the server answers the next request correctly and that no process of the request remains."""

from __future__ import annotations

import base64
import os
import socket
import sysconfig
import threading
import time
import uuid
from pathlib import Path

import pytest

from tools.client import SyncSandboxClient
from tools.errors import SandboxHTTPError

REPO = Path(__file__).resolve().parents[2]


def run(sandbox: SyncSandboxClient, code: str, timeout: float = 3.0, **kw: object):  # noqa: ANN201
    r = sandbox.run_code(code, run_timeout=timeout, **kw)  # type: ignore[arg-type]
    assert r.status != "SandboxError", r
    assert r.run_result is not None
    return r.run_result, r


# ---- CPU, processes, memory --------------------------------------------------------------------------
def test_infinite_loop(sandbox: SyncSandboxClient) -> None:
    res, _ = run(sandbox, "while True: pass", timeout=1)
    assert res.status == "TimeLimitExceeded"


def test_sleep(sandbox: SyncSandboxClient) -> None:
    res, _ = run(sandbox, "import time; time.sleep(60)", timeout=1)
    assert res.status == "TimeLimitExceeded" and res.execution_time < 5


def test_sigterm_ignoring_loop(sandbox: SyncSandboxClient) -> None:
    code = "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\nwhile True: pass"
    res, _ = run(sandbox, code, timeout=1)
    assert res.status == "TimeLimitExceeded"


@pytest.mark.parametrize("setsid", [False, True])
def test_fork_bomb(sandbox: SyncSandboxClient, setsid: bool) -> None:
    code = f"""
import os
while True:
    try:
        if os.fork() == 0 and {setsid}:
            os.setsid()
    except OSError:
        pass
"""
    res, _ = run(sandbox, code, timeout=2)
    assert res.status in ("TimeLimitExceeded", "Finished")


def test_thread_bomb(sandbox: SyncSandboxClient) -> None:
    code = """
import threading, time
n = 0
try:
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start(); n += 1
except (RuntimeError, MemoryError) as e:
    print("stopped at", n)
"""
    res, _ = run(sandbox, code, timeout=5)
    assert "stopped at" in res.stdout
    assert int(res.stdout.split()[-1]) < 100


def test_huge_allocation(sandbox: SyncSandboxClient) -> None:
    res, _ = run(sandbox, "x = bytearray(8 * 1024 ** 3)\nprint('allocated')")
    assert res.status == "MemoryLimitExceeded" and "allocated" not in res.stdout


def test_numpy_allocation(sandbox: SyncSandboxClient) -> None:
    res, _ = run(sandbox, "import numpy as np\na = np.ones((1024, 1024, 1024), dtype=np.float64)")
    assert res.status == "MemoryLimitExceeded"


def test_deep_recursion(sandbox: SyncSandboxClient) -> None:
    code = "import sys\nsys.setrecursionlimit(10**8)\ndef f(n): return f(n + 1) + 1\nf(0)"
    res, _ = run(sandbox, code, timeout=4)
    # Python 3.11 keeps pure-Python frames on the heap: the recursion ends by memory, time or a crash.
    assert res.status in ("Finished", "MemoryLimitExceeded", "TimeLimitExceeded")


def test_ctypes_segfault(sandbox: SyncSandboxClient) -> None:
    res, resp = run(sandbox, "import ctypes; ctypes.string_at(0)")
    assert res.status == "Finished" and res.return_code == -11 and resp.status == "Failed"


def test_fd_exhaustion(sandbox: SyncSandboxClient) -> None:
    code = "fs = []\ntry:\n    while True: fs.append(open('/dev/null'))\nexcept OSError as e:\n    print(len(fs), e.errno)"
    res, _ = run(sandbox, code)
    count, errno_ = map(int, res.stdout.split())
    assert count < 300 and errno_ == 24


# ---- output ----------------------------------------------------------------------------------------
def test_100mb_output(sandbox: SyncSandboxClient) -> None:
    code = "import sys\nchunk = 'x' * 1_000_000\nfor _ in range(100): sys.stdout.write(chunk)\nprint('end', file=sys.stderr)"
    res, resp = run(sandbox, code, timeout=20)
    assert resp.truncated and len(res.stdout) == 64 * 1024 and res.stderr == "end\n"


def test_invalid_utf8_output(sandbox: SyncSandboxClient) -> None:
    res, resp = run(sandbox, "import os; os.write(1, b'ok \\xff\\xfe\\xc3 end\\n'); os.write(2, b'\\x80')")
    assert resp.status == "Success" and res.stdout.startswith("ok ") and res.stdout.endswith(" end\n")
    assert "\ufffd" in res.stdout and "\ufffd" in res.stderr


# ---- filesystem ---------------------------------------------------------------------------------------
def test_disk_fill_work_dir(sandbox: SyncSandboxClient) -> None:
    code = """
import os
block = b'\\0' * (1 << 20)
written = 0
try:
    for i in range(64):
        with open(f'fill{i}', 'wb') as f:
            for _ in range(1024):
                f.write(block); written += 1
except OSError as e:
    print('stopped', written, e.errno)
"""
    res, _ = run(sandbox, code, timeout=20)
    assert res.stdout.startswith("stopped")
    assert int(res.stdout.split()[1]) <= 300  # MiB: per-file limit 64 MiB, per-worker tmpfs 256 MiB


def test_disk_fill_tmp(sandbox: SyncSandboxClient) -> None:
    code = "try:\n    open('/tmp/fill', 'wb').write(b'0' * 10**6)\n    print('wrote')\nexcept OSError as e:\n    print('denied', e.errno)"
    res, _ = run(sandbox, code)
    assert res.stdout.startswith("denied")


@pytest.mark.parametrize(
    "path",
    ["/etc/shadow", "/proc/1/environ", "/root/.bashrc", str(REPO / "pyproject.toml"), str(REPO / "tools" / "server" / "cli.py")],
)
def test_reads_denied(sandbox: SyncSandboxClient, path: str) -> None:
    code = f"try:\n    print('read', len(open({path!r}, 'rb').read()))\nexcept OSError as e:\n    print('denied', e.errno)"
    res, _ = run(sandbox, code)
    assert res.stdout.startswith("denied"), res


def test_server_environment_invisible(sandbox: SyncSandboxClient) -> None:
    code = "import os\nprint(sorted(os.environ))\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))"
    res, _ = run(sandbox, code)
    names = eval(res.stdout.splitlines()[0])  # noqa: S307 - our own snippet's repr of a list of str
    assert "AGENTRL_SANDBOX_TOKEN" not in names and all(not n.startswith(("PYTEST", "VIRTUAL_ENV")) for n in names)
    assert int(res.stdout.splitlines()[1]) < 10  # own pid namespace: only the zygote and this request


@pytest.mark.parametrize(
    "path",
    [
        "/etc/agentrl-pwned",
        os.path.join(sysconfig.get_paths()["purelib"], "agentrl_pwned.py"),
        "/dev/shm/agentrl-pwned",
        str(REPO / "tools" / "agentrl_pwned.py"),
        str(REPO / "tools" / "server" / "cli.py"),
    ],
)
def test_writes_denied(sandbox: SyncSandboxClient, path: str) -> None:
    before = Path(path).read_bytes() if Path(path).exists() else None
    code = f"try:\n    open({path!r}, 'a').write('pwned')\n    print('wrote')\nexcept OSError as e:\n    print('denied', e.errno)"
    res, _ = run(sandbox, code)
    assert res.stdout.startswith("denied"), res
    after = Path(path).read_bytes() if Path(path).exists() else None
    assert before == after


# ---- network -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("address", [("1.1.1.1", 80), ("169.254.169.254", 80), ("8.8.8.8", 53)])
def test_no_internet(sandbox: SyncSandboxClient, address: tuple[str, int]) -> None:
    code = f"import socket\ntry:\n    socket.create_connection({address!r}, timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('blocked', e)"
    res, _ = run(sandbox, code, timeout=5)
    assert res.stdout.startswith("blocked")


def test_no_server_port(sandbox: SyncSandboxClient) -> None:
    port = int(sandbox.url.rsplit(":", 1)[1])
    code = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('blocked', e)"
    res, _ = run(sandbox, code, timeout=5)
    assert res.stdout.startswith("blocked")


def test_no_host_loopback_listener(sandbox: SyncSandboxClient) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    accepted: list[object] = []

    def accept() -> None:
        try:
            accepted.append(listener.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    port = listener.getsockname()[1]
    code = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n    print('connected')\nexcept OSError as e:\n    print('blocked', e)"
    res, _ = run(sandbox, code, timeout=5)
    thread.join()
    listener.close()
    assert res.stdout.startswith("blocked") and not accepted


def test_dns_udp_raw(sandbox: SyncSandboxClient) -> None:
    code = """
import socket
out = []
try:
    socket.getaddrinfo('example.com', 80); out.append('dns-ok')
except OSError: out.append('dns-blocked')
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('8.8.8.8', 53)); out.append('udp-ok')
except OSError: out.append('udp-blocked')
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); out.append('raw-ok')
except OSError: out.append('raw-blocked')
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW); out.append('packet-ok')
except OSError: out.append('packet-blocked')
print(' '.join(out))
"""
    res, _ = run(sandbox, code, timeout=5)
    assert res.stdout.split() == ["dns-blocked", "udp-blocked", "raw-blocked", "packet-blocked"]


# ---- kernel interfaces ----------------------------------------------------------------------------------
def test_kill_all(sandbox: SyncSandboxClient) -> None:
    res, _ = run(sandbox, "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as e:\n    print(e)\nprint('alive')")
    assert res.status == "Finished"


def test_kill_parent_and_pid1(sandbox: SyncSandboxClient) -> None:
    code = "import os, signal\nfor pid in (os.getppid(), 1):\n    try:\n        os.kill(pid, signal.SIGKILL); print('killed', pid)\n    except OSError as e:\n        print('denied', e.errno)"
    res, _ = run(sandbox, code)
    assert "killed" not in res.stdout


def test_ptrace(sandbox: SyncSandboxClient) -> None:
    code = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.ptrace(0, 0, 0, 0), libc.ptrace(16, 1, 0, 0), ctypes.get_errno())"
    res, _ = run(sandbox, code)
    assert res.stdout.split()[:2] == ["-1", "-1"]


def test_unshare_and_mount(sandbox: SyncSandboxClient) -> None:
    code = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.unshare(0x10000000), libc.unshare(0x00020000), libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))
import os
try:
    pid = os.fork()
    if pid == 0: os._exit(0)
    os.waitpid(pid, 0); print('fork-ok')
except OSError as e: print('fork-denied', e)
"""
    res, _ = run(sandbox, code)
    assert res.stdout.split() == ["-1", "-1", "-1", "fork-ok"]


def test_setuid(sandbox: SyncSandboxClient) -> None:
    code = "import os\nfor f in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setgroups([0])):\n    try:\n        f(); print('became root')\n    except OSError as e:\n        print('denied')\nprint(os.getuid() != 0)"
    res, _ = run(sandbox, code)
    assert res.stdout.split() == ["denied", "denied", "denied", "True"]


def test_detached_daemon_does_not_outlive_request(sandbox: SyncSandboxClient) -> None:
    marker = f"daemon-{uuid.uuid4().hex}"
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2): os.close(fd)
        time.sleep(1.0)
        for path in ('/tmp/{marker}', os.path.expanduser('~/{marker}')):
            try: open(path, 'w').write('still alive')
            except OSError: pass
        time.sleep(60)
    os._exit(0)
print('parent done')
"""
    res, _ = run(sandbox, code)
    assert res.stdout == "parent done\n"
    time.sleep(1.5)
    # the fixture asserts no process of this request is left; nothing was written where we can see
    res2, _ = run(sandbox, f"import os; print(os.path.exists('/tmp/{marker}'))")
    assert res2.stdout == "False\n"


def test_no_state_between_requests(sandbox: SyncSandboxClient) -> None:
    code = "import math, builtins, os\nmath.pi = 3\nbuiltins.leak = 1\nopen('leak.txt','w').write('x')\nprint(os.getcwd())"
    res, _ = run(sandbox, code)
    cwd = res.stdout.strip()
    check = f"import math, builtins, os\nprint(math.pi == 3, hasattr(builtins, 'leak'), os.path.exists({cwd!r} + '/leak.txt'))"
    for _ in range(4):  # land on both workers
        res, _ = run(sandbox, check)
        assert res.stdout == "False False False\n"


def test_no_state_between_sessions(sandbox: SyncSandboxClient) -> None:
    a, b = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    res, _ = run(sandbox, "import os\nsecret = 42\nopen('s.txt','w').write('x')\nprint(os.getcwd())", session_id=a)
    cwd_a = res.stdout.strip()
    res, _ = run(sandbox, f"import os\ntry:\n    print(os.listdir({cwd_a!r}))\nexcept OSError as e:\n    print('denied')\nprint('secret' in globals())", session_id=b)
    assert res.stdout == "denied\nFalse\n"
    res, _ = run(sandbox, "import os\nprint(os.getpid(), os.getuid())", session_id=a)
    res_b, _ = run(sandbox, "import os\nprint(os.getpid(), os.getuid())", session_id=b)
    assert res.stdout.split()[1] != res_b.stdout.split()[1]
    sandbox.delete_session(a)
    sandbox.delete_session(b)


def test_session_background_process_killed_after_cell(sandbox: SyncSandboxClient) -> None:
    sid = f"bg-{uuid.uuid4().hex}"
    run(sandbox, "import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])", session_id=sid)
    res, _ = run(sandbox, "print(p.poll())", session_id=sid)
    assert res.stdout.strip() not in ("None", "")
    sandbox.delete_session(sid)


# ---- bash, pytest and the files API -------------------------------------------------------------------
def run_lang(sandbox: SyncSandboxClient, language: str, code: str, timeout: float = 3.0, **kw: object):  # noqa: ANN201
    return run(sandbox, code, timeout, language=language, **kw)


def test_bash_fork_bomb(sandbox: SyncSandboxClient) -> None:
    res, _ = run_lang(sandbox, "bash", ":(){ :|:& };:", timeout=2)
    assert res.status in ("TimeLimitExceeded", "Finished")


def test_bash_detached_background_process(sandbox: SyncSandboxClient) -> None:
    res, _ = run_lang(sandbox, "bash", "setsid nohup sleep 60 >/dev/null 2>&1 &\ndisown\necho started")
    assert res.stdout == "started\n"  # the fixture checks that the sleep did not outlive the request


@pytest.mark.parametrize(
    "path",
    ["/etc/agentrl-pwned", "/tmp/agentrl-pwned", "/dev/shm/agentrl-pwned", str(REPO / "tools" / "agentrl_pwned.py")],
)
def test_bash_writes_outside_the_work_dir(sandbox: SyncSandboxClient, path: str) -> None:
    res, _ = run_lang(sandbox, "bash", f"echo pwned > {path} && echo wrote || echo denied")
    assert res.stdout.strip().endswith("denied"), res
    assert not Path(path).exists() or "pwned" not in Path(path).read_text(errors="replace")


def test_bash_reads_and_network_denied(sandbox: SyncSandboxClient) -> None:
    code = (f"cat /etc/shadow >/dev/null 2>&1 && echo shadow-read || echo shadow-denied\n"
            f"cat {REPO / 'pyproject.toml'} >/dev/null 2>&1 && echo repo-read || echo repo-denied\n"
            "(exec 3<>/dev/tcp/1.1.1.1/80) 2>/dev/null && echo net-ok || echo net-denied")
    res, _ = run_lang(sandbox, "bash", code, timeout=5)
    assert res.stdout.split() == ["shadow-denied", "repo-denied", "net-denied"]


def test_pytest_runs_inside_the_same_isolation(sandbox: SyncSandboxClient) -> None:
    code = f"""
import os, socket, pytest

def test_no_network():
    with pytest.raises(OSError):
        socket.create_connection(("1.1.1.1", 80), timeout=1)

def test_no_repo_read():  # denied, or not there at all (a checkout under /tmp is behind the private /tmp)
    with pytest.raises((PermissionError, FileNotFoundError)):
        open({str(REPO / 'pyproject.toml')!r}).read()

def test_unprivileged():
    assert os.getuid() != 0
"""
    res, resp = run_lang(sandbox, "pytest", code, timeout=20)
    assert resp.status == "Success" and "3 passed" in res.stdout, res


@pytest.mark.parametrize("path", ["../../etc/agentrl-pwned", "/etc/agentrl-pwned", "/tmp/agentrl-pwned"])
def test_files_cannot_escape_the_work_dir(sandbox: SyncSandboxClient, path: str) -> None:
    with pytest.raises(SandboxHTTPError) as err:
        sandbox.run_code("print(1)", files={path: base64.b64encode(b"pwned").decode()})
    assert err.value.status_code == 400
    assert not Path(path).exists()


def test_files_symlink_escape_in_a_session(sandbox: SyncSandboxClient) -> None:
    sid = f"symlink-{uuid.uuid4().hex}"
    target = Path("/etc/agentrl-pwned")
    try:
        run(sandbox, "import os\nos.symlink('/etc', 'cfg')\nos.symlink('/etc/agentrl-pwned', 'direct')", session_id=sid)
        for path in ("cfg/agentrl-pwned", "direct"):
            with pytest.raises(SandboxHTTPError) as err:
                sandbox.run_code("print(1)", session_id=sid, files={path: base64.b64encode(b"pwned").decode()})
            assert err.value.status_code == 400 and "symbolic link" in err.value.body
        res, resp = run(sandbox, "print('alive')", session_id=sid, fetch_files=["cfg/shadow", "cfg/passwd"])
        assert res.stdout == "alive\n" and resp.files == {}
    finally:
        sandbox.delete_session(sid)
    assert not target.exists()


def test_fetch_of_a_fifo_does_not_hang_the_sandbox(sandbox: SyncSandboxClient) -> None:
    res, resp = run(sandbox, "import os; os.mkfifo('out')", fetch_files=["out"])
    assert resp.status == "Success" and resp.files == {} and "not a regular file" in resp.message
