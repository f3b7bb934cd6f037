"""SandboxFusion's documented /run_code behaviour, checked against a real server on loopback.

Written from SandboxFusion's API (RunCodeRequest: code, language, run_timeout, compile_timeout,
memory_limit_MB, stdin, files, fetch_files, args; RunCodeResponse: status, message, compile_result,
run_result{status, execution_time, return_code, stdout, stderr}, files) and from what its runner tests
check: a program that ran to its end is "Finished" whatever its exit code, a time limit keeps the
output so far, "Success" means exit code 0.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tools.embedded import EmbeddedSandbox
from tools.schema import RunCodeResponse

PASSING_TESTS = '''
def add(a, b):
    return a + b

class TestAdd:
    def test_small(self):
        assert add(1, 2) == 3

    def test_capture(self, capfd, tmp_path):
        (tmp_path / "f.txt").write_text("x")
        print(add(2, 2))
        assert capfd.readouterr().out == "4\\n"
'''
FAILING_TESTS = PASSING_TESTS.replace("== 3", "== 4")
SELECTIVE_TESTS = "def test_requested():\n    assert True\n\n\ndef test_unselected_failure():\n    assert False\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run(url: str, expect: int = 200, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/run_code", json=body, timeout=60)
    assert r.status_code == expect, r.text
    if expect == 200:
        RunCodeResponse.model_validate(r.json())
    return r.json()


# ---- statuses ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "return_code", "in_stderr"),
    [
        ("assert 1 + 1 == 3", 1, "AssertionError"),
        ("def (", 1, "SyntaxError"),
        ("import sys; sys.exit(2)", 2, ""),
        ("import os; os._exit(5)", 5, ""),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", -9, ""),
        ("raise ValueError('bad value')", 1, "ValueError: bad value"),
    ],
)
def test_program_that_ran_to_its_end_is_finished(sandbox_url: str, code: str, return_code: int, in_stderr: str) -> None:
    body = run(sandbox_url, code=code, language="python")
    assert body["status"] == "Failed" and body["compile_result"] is None
    assert body["run_result"]["status"] == "Finished"
    assert body["run_result"]["return_code"] == return_code
    assert in_stderr in body["run_result"]["stderr"]


def test_success_only_for_exit_zero(sandbox_url: str) -> None:
    for code in ("print('hi')", "import sys; sys.exit(0)", "raise SystemExit"):
        body = run(sandbox_url, code=code, language="python")
        assert body["status"] == "Success" and body["run_result"]["return_code"] == 0
        assert body["run_result"]["status"] == "Finished" and body["message"] == ""


def test_time_limit_keeps_output_and_has_no_return_code(sandbox_url: str) -> None:
    code = "import sys, time\nprint('stdout before', flush=True)\nprint('stderr before', file=sys.stderr)\ntime.sleep(30)"
    body = run(sandbox_url, code=code, language="python", run_timeout=1)
    assert body["status"] == "Failed"
    result = body["run_result"]
    assert result["status"] == "TimeLimitExceeded" and result["return_code"] is None
    assert result["stdout"] == "stdout before\n" and result["stderr"] == "stderr before\n"
    assert 0.9 < result["execution_time"] < 5


def test_stdin_and_python3_alias(sandbox_url: str) -> None:
    body = run(sandbox_url, code="import sys; sys.stdout.write(sys.stdin.read())", language="python3",
               stdin="hello from stdin")
    assert body["status"] == "Success" and body["run_result"]["stdout"] == "hello from stdin"


def test_args_reach_the_program(sandbox_url: str) -> None:
    body = run(sandbox_url, code="import sys; print(sys.argv[1:])", args=["a", "b c"])
    assert body["run_result"]["stdout"] == "['a', 'b c']\n"


# ---- files and fetch_files ----------------------------------------------------------------------------
def test_files_are_written_before_the_run(sandbox_url: str) -> None:
    files = {"data.txt": b64(b"42\n"), "nested/dir/blob.bin": b64(bytes(range(256))), "skipped.txt": None}
    code = ("import os\nprint(open('data.txt').read().strip(), len(open('nested/dir/blob.bin', 'rb').read()),"
            " os.path.exists('skipped.txt'))")
    body = run(sandbox_url, code=code, files=files)
    assert body["run_result"]["stdout"] == "42 256 False\n"


def test_fetch_files_returns_base64_and_leaves_missing_out(sandbox_url: str) -> None:
    code = "open('out.bin', 'wb').write(bytes(range(256)))\nimport os; os.makedirs('sub'); open('sub/a.txt', 'w').write('a')"
    body = run(sandbox_url, code=code, fetch_files=["out.bin", "sub/a.txt", "missing.txt"])
    assert body["status"] == "Success"
    assert base64.b64decode(body["files"]["out.bin"]) == bytes(range(256))
    assert base64.b64decode(body["files"]["sub/a.txt"]) == b"a"
    assert "missing.txt" not in body["files"]


def test_files_fetched_after_a_failing_run(sandbox_url: str) -> None:
    body = run(sandbox_url, code="open('log.txt', 'w').write('partial')\nraise RuntimeError('late')",
               fetch_files=["log.txt"])
    assert body["status"] == "Failed" and body["run_result"]["status"] == "Finished"
    assert base64.b64decode(body["files"]["log.txt"]) == b"partial"


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", "..", ".", "", "x\u0000y"])
def test_paths_that_escape_are_refused_before_running(sandbox_url: str, path: str) -> None:
    body = run(sandbox_url, expect=400, code="print(1)", files={path: b64(b"x")})
    assert "files" in body["detail"]
    body = run(sandbox_url, expect=400, code="print(1)", fetch_files=[path])
    assert "files" in body["detail"]


def test_absolute_paths_only_inside_the_work_dir(client: Any, sandbox_url: str) -> None:
    body = run(sandbox_url, expect=400, code="print(1)", files={"/etc/agentrl-pwned": b64(b"x")})
    assert "outside the working directory" in body["detail"]
    sid = f"abs-{uuid.uuid4().hex}"
    try:
        cwd = run(sandbox_url, code="import os; print(os.getcwd())", session_id=sid)["run_result"]["stdout"].strip()
        body = run(sandbox_url, code="print(open('in.txt').read())", session_id=sid, files={f"{cwd}/in.txt": b64(b"ok")},
                   fetch_files=[f"{cwd}/in.txt"])
        assert body["run_result"]["stdout"] == "ok\n"
        assert base64.b64decode(body["files"][f"{cwd}/in.txt"]) == b"ok"
    finally:
        client.delete_session(sid)


def test_symlinks_are_never_followed(client: Any, sandbox_url: str) -> None:
    sid = f"link-{uuid.uuid4().hex}"
    try:
        run(sandbox_url, code="import os\nos.symlink('/etc', 'etc')\nos.symlink('/etc/passwd', 'passwd')", session_id=sid)
        body = run(sandbox_url, expect=400, code="print(1)", session_id=sid, files={"etc/agentrl-pwned": b64(b"x")})
        assert "symbolic link" in body["detail"]
        body = run(sandbox_url, expect=400, code="print(1)", session_id=sid, files={"passwd": b64(b"x")})
        assert "symbolic link" in body["detail"]
        body = run(sandbox_url, code="print(1)", session_id=sid, fetch_files=["passwd", "etc/hostname"])
        assert body["files"] == {} and "symbolic link" in body["message"]
        assert body["status"] == "Success"  # the session lives on after a refused path
    finally:
        client.delete_session(sid)


def test_fetch_of_a_non_regular_file_is_skipped_with_a_note(sandbox_url: str) -> None:
    body = run(sandbox_url, code="import os; os.mkfifo('pipe'); os.mkdir('d')", fetch_files=["pipe", "d"])
    assert body["status"] == "Success" and body["files"] == {}
    assert body["message"].count("not a regular file") == 2


def test_invalid_base64_is_422(sandbox_url: str) -> None:
    body = run(sandbox_url, expect=422, code="print(1)", files={"a.txt": "not base64!"})
    assert "base64" in str(body["detail"])


@pytest.fixture(scope="module")
def small_limits() -> Iterator[EmbeddedSandbox]:
    with EmbeddedSandbox(workers=1, preload="math", uid_base=1_250_000_000, max_files_bytes=1000,
                         fetch_limit_bytes=1000) as server:
        yield server


def test_file_size_caps(small_limits: EmbeddedSandbox) -> None:
    url = small_limits.url
    body = run(url, expect=413, code="print(1)", files={"big.bin": b64(b"x" * 1001)})
    assert "1000 bytes" in body["detail"]
    body = run(url, code="open('big.bin', 'wb').write(b'x' * 1500)\nopen('small.txt', 'w').write('s')",
               fetch_files=["big.bin", "small.txt"])
    assert set(body["files"]) == {"small.txt"} and "fetch limit" in body["message"]


# ---- limits -------------------------------------------------------------------------------------------
def test_memory_limit_mb_is_honoured(sandbox_url: str) -> None:
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20)"
    assert run(sandbox_url, code=code, memory_limit_MB=300)["run_result"]["stdout"] == "300\n"
    assert run(sandbox_url, code=code, memory_limit_MB=-1)["run_result"]["stdout"] == "1024\n"  # SF's "no limit"
    body = run(sandbox_url, code="x = bytearray(400 * 2**20)", memory_limit_MB=300)
    assert body["run_result"]["status"] == "MemoryLimitExceeded" and body["status"] == "Failed"
    assert run(sandbox_url, code="x = bytearray(400 * 2**20); print('ok')")["run_result"]["stdout"] == "ok\n"


def test_memory_limit_above_the_servers_is_a_clear_422(sandbox_url: str) -> None:
    body = run(sandbox_url, expect=422, code="print(1)", memory_limit_MB=4096)
    assert "memory_limit_MB=4096" in body["detail"] and "1024" in body["detail"]


def test_compile_timeout_is_accepted_and_nothing_compiles(sandbox_url: str) -> None:
    body = run(sandbox_url, code="print(1)", compile_timeout=10, run_timeout=5)
    assert body["status"] == "Success" and body["compile_result"] is None
    run(sandbox_url, expect=422, code="print(1)", compile_timeout=-1)


# ---- languages ----------------------------------------------------------------------------------------
def test_pytest_pass_and_fail(sandbox_url: str) -> None:
    body = run(sandbox_url, code=PASSING_TESTS, language="pytest", run_timeout=20)
    assert body["status"] == "Success", body
    assert body["run_result"]["status"] == "Finished" and "2 passed" in body["run_result"]["stdout"]
    body = run(sandbox_url, code=FAILING_TESTS, language="pytest", run_timeout=20)
    assert body["status"] == "Failed" and body["run_result"]["status"] == "Finished"
    assert body["run_result"]["return_code"] == 1 and "1 failed, 1 passed" in body["run_result"]["stdout"]


def test_pytest_args_select_and_report_is_fetched(sandbox_url: str) -> None:
    body = run(sandbox_url, code=SELECTIVE_TESTS, language="pytest", args=["-k", "test_requested"], run_timeout=20)
    assert body["status"] == "Success", body
    body = run(sandbox_url, code=PASSING_TESTS, language="pytest", args=["--junitxml=report.xml"],
               fetch_files=["report.xml"], run_timeout=20)
    suite = ET.fromstring(base64.b64decode(body["files"]["report.xml"])).find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "0"


def test_pytest_collection_error_and_no_tests(sandbox_url: str) -> None:
    body = run(sandbox_url, code="def (", language="pytest", run_timeout=20)
    assert body["status"] == "Failed" and body["run_result"]["return_code"] == 2
    body = run(sandbox_url, code="x = 1", language="pytest", run_timeout=20)
    assert body["status"] == "Failed" and body["run_result"]["return_code"] == 5


def test_bash(sandbox_url: str) -> None:
    body = run(sandbox_url, code='read line; echo "got $line and $1"; cat data.txt; exit 3', language="bash",
               stdin="input\n", args=["arg1"], files={"data.txt": b64(b"file contents\n")})
    assert body["status"] == "Failed" and body["run_result"]["status"] == "Finished"
    assert body["run_result"]["return_code"] == 3
    assert body["run_result"]["stdout"] == "got input and arg1\nfile contents\n"
    body = run(sandbox_url, code="echo out; echo err >&2; echo ok > made.txt", language="bash", fetch_files=["made.txt"])
    assert body["status"] == "Success" and body["run_result"]["stderr"] == "err\n"
    assert base64.b64decode(body["files"]["made.txt"]) == b"ok\n"


def test_bash_time_limit(sandbox_url: str) -> None:
    body = run(sandbox_url, code="echo start; sleep 30", language="bash", run_timeout=1)
    assert body["run_result"]["status"] == "TimeLimitExceeded" and body["run_result"]["stdout"] == "start\n"


@pytest.mark.parametrize("language", ["cpp", "nodejs", "go", "java", "Python 2", ""])
def test_other_languages_are_400_naming_the_supported_ones(sandbox_url: str, language: str) -> None:
    body = run(sandbox_url, expect=400, code="print(1)", language=language)
    assert "bash, pytest, python, python3" in body["detail"] and repr(language) in body["detail"]
