"""Run the sandbox server as a child process on a free loopback port (for training and tests).

    with EmbeddedSandbox(workers=2) as sandbox:
        client = SyncSandboxClient(sandbox.url)

``shared_sandbox_url()`` starts one such server per process, lazily, and stops it at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

DEFAULT_START_TIMEOUT = 120.0
"""Seconds to wait for /health after launching (zygotes import numpy and sympy first)."""
DEFAULT_STOP_TIMEOUT = 15.0
DEFAULT_HEALTH_POLL = 0.1
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _flag(name: str, value: Any) -> list[str]:
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [option] if value else ["--no-" + name.replace("_", "-")]
    if isinstance(value, list | tuple):
        value = ",".join(map(str, value))
    return [option, str(value)]


class EmbeddedSandbox:
    """``python -m tools.server`` as a subprocess; ``server_options`` become its command-line flags.

    Example options: workers=2, token="t", allow_weaker_isolation=True, max_queue=8, memory_mb=512.
    """

    def __init__(self, port: int | None = None, *, start_timeout: float = DEFAULT_START_TIMEOUT,
                 **server_options: Any) -> None:
        self.port = port
        self.start_timeout = start_timeout
        self.server_options = server_options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedSandbox is not started")
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        # --parent-pid: the server exits when this process does, even on SIGKILL (tools.server.lifeline).
        cmd = [sys.executable, "-m", "tools.server", "--host", HOST, "--port", str(self.port),
               "--parent-pid", str(os.getpid())]
        for name, value in self.server_options.items():
            cmd += _flag(name, value)
        return cmd

    def start(self) -> EmbeddedSandbox:
        if self.process is not None:
            return self
        if self.port is None:
            self.port = free_port()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"sandbox server exited with status {code} during start-up (see its stderr)")
            try:
                if httpx.get(f"{self.url}/health", timeout=DEFAULT_HEALTH_POLL * 10).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(DEFAULT_HEALTH_POLL)
        self.stop()
        raise TimeoutError(f"sandbox server did not answer /health within {self.start_timeout}s")

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL after DEFAULT_STOP_TIMEOUT; idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(DEFAULT_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(DEFAULT_STOP_TIMEOUT)

    def __enter__(self) -> EmbeddedSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedSandbox:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)


_shared: EmbeddedSandbox | None = None
_shared_lock = threading.Lock()


def shared_sandbox_url(**server_options: Any) -> str:
    """URL of this process's embedded sandbox, started on first use and stopped at interpreter exit.

    Options apply to the first call only. Set $AGENTRL_SANDBOX_URL to use an external server instead.
    """
    global _shared
    external = os.environ.get("AGENTRL_SANDBOX_URL")
    if external:
        return external
    with _shared_lock:
        if _shared is None:
            sandbox = EmbeddedSandbox(**server_options).start()
            atexit.register(sandbox.stop)
            _shared = sandbox
        return _shared.url
