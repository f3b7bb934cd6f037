"""Start-up refusal when a layer is missing, and the weaker fallbacks (--allow-weaker-isolation)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tools.client import SyncSandboxClient
from tools.embedded import EmbeddedSandbox, free_port

START_TIMEOUT = 120


def test_refuses_to_start_without_a_layer() -> None:
    cmd = [sys.executable, "-m", "tools.server", "--port", str(free_port()), "--workers", "1", "--preload", "math",
           "--disable-layers", "seccomp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT)
    assert proc.returncode != 0
    assert "seccomp" in proc.stderr and "--allow-weaker-isolation" in proc.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="disabling uids only differs from the default as root")
def test_weaker_mode_reports_and_still_contains_processes(descendants) -> None:  # noqa: ANN001
    with EmbeddedSandbox(workers=1, preload="math", allow_weaker_isolation=True,
                         disable_layers="namespaces,uids") as s, SyncSandboxClient(s.url) as client:
        health = client.health()
        assert health["weaker_isolation"] is True
        assert {"network_namespace", "pid_namespace", "unprivileged_uid"} <= set(health["missing_layers"])
        assert health["isolation"]["seccomp"] and health["isolation"]["landlock"]
        r = client.run_code("print(6 * 7)")
        assert r.run_result is not None and r.run_result.stdout == "42\n"
        assert s.process is not None
        time.sleep(0.5)
        baseline = len(descendants(s.process.pid))  # launcher-less zygote and its spare
        code = ("import os, time\nfor _ in range(5):\n    if os.fork() == 0:\n        os.setsid()\n"
                "        if os.fork() == 0:\n            time.sleep(60)\n        os._exit(0)\nprint('spawned')")
        r = client.run_code(code)
        assert r.run_result is not None and r.run_result.stdout == "spawned\n"
        r = client.run_code("while True: pass", run_timeout=0.5)
        assert r.run_result is not None and r.run_result.status == "TimeLimitExceeded"
        deadline = time.monotonic() + 5
        while len(descendants(s.process.pid)) > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(descendants(s.process.pid)) <= baseline
