"""An embedded sandbox dies with the program that started it, even when that program is SIGKILLed (no
clean-up runs): no server, fork-server or sandboxed child is left, and the port is free again."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEADLINE = 20.0
"""Seconds allowed for every sandbox process to be gone after its parent was killed."""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _assert_all_gone(pids: list[int], port: int) -> None:
    deadline = time.monotonic() + DEFAULT_DEADLINE
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if _alive(p)]
    for pid in left:  # clean up before failing, so one failure does not leak into other tests
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"sandbox processes left after their parent was killed: {left}"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the port still answers"


def _read_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """The first line of ``proc``'s stdout containing ``needle`` (fails after ``timeout`` seconds)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if not select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    proc.kill()
    raise AssertionError(f"{needle!r} not seen within {timeout}s; output: {''.join(seen)[-3000:]}")


PARENT = """
import sys, threading, time
sys.path.insert(0, {root!r})
from tools.embedded import EmbeddedSandbox
from tools.client import SyncSandboxClient

box = {{}}
def start():
    box["s"] = EmbeddedSandbox(workers=1, preload="math", uid_base=1_550_000_000).start()
starter = threading.Thread(target=start)  # started from a thread that ends: PDEATHSIG would fire here
starter.start(); starter.join()
time.sleep(0.5)
sandbox = box["s"]
with SyncSandboxClient(sandbox.url) as client:
    assert client.run_code("print(6 * 7)").run_result.stdout == "42\\n"
print("READY", sandbox.process.pid, sandbox.port, flush=True)
time.sleep(600)
"""


def test_embedded_sandbox_dies_with_a_sigkilled_parent(descendants: Callable[[int], list[int]]) -> None:
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PARENT.format(root=str(ROOT)))],
                              stdout=subprocess.PIPE, text=True)
    try:
        _, server, port = _read_line(parent, "READY", 120).split()
        pids = [int(server), *descendants(int(server))]
        assert len(pids) >= 5, pids  # server, and per image a launcher, a zygote and its spare
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        _assert_all_gone(pids, int(port))
    finally:
        parent.kill()
        parent.wait(10)


def test_killed_trainer_leaves_no_sandbox(tmp_path: Path, descendants: Callable[[int], list[int]]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTRL_SANDBOX_URL", "AGENTRL_SANDBOX_TOKEN")}
    cmd = [sys.executable, "-m", "agentrl.train", "run.steps=1", "sft.steps=0", "eval.tasks=0",
           f"run.output_dir={tmp_path}"]
    trainer = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = _read_line(trainer, "started an embedded sandbox at", 60)
        port = int(line.rsplit(":", 1)[1])
        pids = [p for p in descendants(trainer.pid) if "tools.server" in Path(f"/proc/{p}/cmdline").read_text()]
        if not pids:
            pytest.fail("no sandbox process below the trainer")
        pids = sorted({q for p in pids for q in (p, *descendants(p))})  # with the children (same cmdline)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        _assert_all_gone(pids, port)
    finally:
        trainer.kill()
        trainer.wait(10)
