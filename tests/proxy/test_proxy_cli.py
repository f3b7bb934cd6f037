"""`python -m agentrl.proxy` as a user starts it: a subprocess on a free loopback port, the tiny model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai

from tools.embedded import free_port

START_TIMEOUT_S = 120.0


def test_cli_serves_the_tiny_model():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agentrl.proxy", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ}, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/s/cli/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["agentrl-tiny"]
        r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
        assert 1 <= r.usage.completion_tokens <= 5
        record = httpx.get(f"http://127.0.0.1:{port}/s/cli/trajectory", timeout=10).json()
        assert record["calls"] == 1 and len(record["samples"]) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
