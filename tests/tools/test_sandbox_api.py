"""The /run_code contract, bad input, sessions, health and metrics against a real server on loopback."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tools.client import SyncSandboxClient
from tools.errors import SandboxHTTPError, SandboxOverloaded
from tools.schema import RunCodeResponse


def test_print(client: SyncSandboxClient) -> None:
    r = client.run_code("print(1+1)")
    assert r.status == "Success" and r.run_result is not None
    assert r.run_result.status == "Finished"
    assert r.run_result.stdout == "2\n" and r.run_result.return_code == 0
    assert r.truncated is False


def test_preloaded_sympy(client: SyncSandboxClient) -> None:
    r = client.run_code("import sympy; print(sympy.sqrt(8))")
    assert r.run_result is not None and r.run_result.stdout == "2*sqrt(2)\n"


def test_error_has_python_traceback(client: SyncSandboxClient) -> None:
    r = client.run_code("x = 1\n1/0")
    assert r.status == "Failed" and r.run_result is not None
    assert r.run_result.status == "Finished" and r.run_result.return_code == 1
    assert 'File "<string>", line 2' in r.run_result.stderr and "ZeroDivisionError" in r.run_result.stderr


def test_syntax_error_and_exit_codes(client: SyncSandboxClient) -> None:
    r = client.run_code("def (")
    assert r.run_result is not None and r.run_result.status == "Finished" and "SyntaxError" in r.run_result.stderr
    r = client.run_code("import sys; sys.exit(3)")
    assert r.run_result is not None and r.run_result.return_code == 3
    r = client.run_code("raise SystemExit")
    assert r.run_result is not None and r.run_result.return_code == 0 and r.status == "Success"


def test_stdin(client: SyncSandboxClient) -> None:
    r = client.run_code("import sys; data = sys.stdin.read(); print(len(data), data.split()[0])", stdin="héllo\n" * 50000)
    assert r.run_result is not None and r.run_result.stdout == "300000 héllo\n"


def test_timeout(client: SyncSandboxClient) -> None:
    r = client.run_code("while True: pass", run_timeout=0.5)
    assert r.status == "Failed" and r.run_result is not None
    assert r.run_result.status == "TimeLimitExceeded"
    assert 0.4 < (r.run_result.execution_time or 0) < 3


def test_memory_limit_is_distinct(client: SyncSandboxClient) -> None:
    r = client.run_code("x = bytearray(8 * 1024**3)")
    assert r.run_result is not None and r.run_result.status == "MemoryLimitExceeded"


def test_output_truncated(client: SyncSandboxClient) -> None:
    r = client.run_code("import sys; sys.stdout.write('y' * 200_000); sys.stderr.write('e' * 10)")
    assert r.truncated is True and r.run_result is not None
    assert r.run_result.stdout == "y" * 64 * 1024 and r.run_result.stderr == "e" * 10


def test_sessions_keep_state_and_are_separate(client: SyncSandboxClient) -> None:
    a, b = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    assert client.run_code("x = 41\nopen('f.txt', 'w').write('hi')", session_id=a).status == "Success"
    r = client.run_code("print(x + 1, open('f.txt').read())", session_id=a)
    assert r.run_result is not None and r.run_result.stdout == "42 hi\n" and r.session_id == a
    r = client.run_code("print('x' in globals())", session_id=b)
    assert r.run_result is not None and r.run_result.stdout == "False\n"
    r = client.run_code("print('x' in globals())")
    assert r.run_result is not None and r.run_result.stdout == "False\n"
    client.delete_session(a)
    r = client.run_code("print('x' in globals())", session_id=a)  # a fresh session under the old id
    assert r.run_result is not None and r.run_result.stdout == "False\n"
    client.delete_session(a)
    client.delete_session(b)


def test_session_rebuilt_from_journal_after_timeout(client: SyncSandboxClient) -> None:
    sid = f"j-{uuid.uuid4().hex}"
    client.run_code("import math\nvalues = [math.factorial(5)]", session_id=sid)
    client.run_code("values.append(7)", session_id=sid)
    r = client.run_code("while True: pass", session_id=sid, run_timeout=0.5)
    assert r.run_result is not None and r.run_result.status == "TimeLimitExceeded"
    r = client.run_code("print(values)", session_id=sid)
    assert r.run_result is not None and r.run_result.stdout == "[120, 7]\n"
    client.delete_session(sid)


def test_delete_unknown_session_is_404(sandbox_url: str) -> None:
    assert httpx.delete(f"{sandbox_url}/sessions/nope-{uuid.uuid4().hex}").status_code == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", 422),
        (b"[1, 2]", 422),
        (b'{"language": "python"}', 422),
        (b'{"code": 5}', 422),
        (b'{"code": "print(1)", "language": "cobol"}', 400),
        (b'{"code": "print(1)", "run_timeout": -1}', 422),
        (b'{"code": "print(1)", "run_timeout": 0}', 422),
        (b'{"code": "print(1)", "run_timeout": 1e9}', 422),
        (b'{"code": "print(1)", "run_timeout": "3"}', 422),
        (b'{"code": "print(1)", "run_timeout": null, "session_id": "bad id!"}', 422),
        (b'{"code": "print(1)", "stdin": 7}', 422),
    ],
)
def test_bad_input_is_4xx_json(sandbox_url: str, body: bytes, expected: int) -> None:
    r = httpx.post(f"{sandbox_url}/run_code", content=body, headers={"content-type": "application/json"})
    assert r.status_code == expected, r.text
    assert "detail" in r.json()


def test_code_too_large_is_413(sandbox_url: str) -> None:
    r = httpx.post(f"{sandbox_url}/run_code", json={"code": "#" * (2 * 1024 * 1024)})
    assert r.status_code == 413 and "detail" in r.json()
    r = httpx.post(f"{sandbox_url}/run_code", json={"code": "print(1)"}, timeout=10)
    assert r.status_code == 200


def test_sandboxfusion_shape(sandbox_url: str) -> None:
    # SandboxFusion clients send extra fields and read compile_result/run_result.
    r = httpx.post(f"{sandbox_url}/run_code", json={"code": "print('ok')", "language": "python",
                                                    "compile_timeout": 10, "run_timeout": 5, "files": {}})
    body = r.json()
    assert set(body) >= {"status", "message", "compile_result", "run_result", "truncated"}
    assert set(body["run_result"]) >= {"status", "execution_time", "return_code", "stdout", "stderr"}
    RunCodeResponse.model_validate(body)


def test_health_reports_layers(client: SyncSandboxClient) -> None:
    health = client.health()
    assert health["status"] == "ok"
    layers = health["isolation"]
    for name in ("network_namespace", "mount_namespace", "pid_namespace", "unprivileged_uid", "seccomp",
                 "landlock", "rlimits", "kill_by_uid"):
        assert name in layers
    assert health["weaker_isolation"] == (not all(layers.values()))
    assert "sympy" in health["preloaded"]


def test_metrics(client: SyncSandboxClient, sandbox_url: str) -> None:
    client.run_code("print(1)")
    text = httpx.get(f"{sandbox_url}/metrics").text
    for name in ("sandbox_requests_total", "sandbox_request_seconds_bucket", "sandbox_timeouts_total",
                 "sandbox_queue_depth", "sandbox_active_sessions"):
        assert name in text
    assert 'status="Success"' in text


def test_token_required(token_sandbox) -> None:  # noqa: ANN001
    url = token_sandbox.url
    assert httpx.post(f"{url}/run_code", json={"code": "print(1)"}).status_code == 401
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.post(f"{url}/run_code", json={"code": "print(1)"},
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/health").status_code == 200
    with SyncSandboxClient(url, token="test-token-123") as c:
        r = c.run_code("import math; print(math.isqrt(17))")
        assert r.run_result is not None and r.run_result.stdout == "4\n"
    with SyncSandboxClient(url, token="wrong") as c, pytest.raises(SandboxHTTPError) as err:
        c.run_code("print(1)")
    assert err.value.status_code == 401


def test_session_count_is_bounded(sandbox_url: str) -> None:
    ids = [f"bound-{i}-{uuid.uuid4().hex}" for i in range(9)]
    with SyncSandboxClient(sandbox_url, max_retries=0) as c:
        try:
            for sid in ids[:8]:
                assert c.run_code("x = 1", session_id=sid).status == "Success"
            with pytest.raises(SandboxOverloaded):
                c.run_code("x = 1", session_id=ids[8])
            assert c.health()["sessions"] == 8
        finally:
            for sid in ids:
                c.delete_session(sid)
        assert c.health()["sessions"] == 0
