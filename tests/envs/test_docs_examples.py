"""The examples in docs/envs.md (function-tool, MCP and code envs), run as written: each
``<!-- file: NAME -->`` block is written into a fresh project in a temporary folder, then pytest runs there
(the agentrl plugin's fixtures, no configuration)."""

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "envs.md"
EXAMPLES = {"function tools": ["test_fx_env.py"], "MCP": ["shop_server.py", "test_shop_env.py"], "code": ["test_add_env.py"]}
MAX_LINES = 40
"""Each example (all its files together) stays under this many lines (docs/envs.md promises it)."""


def doc_files() -> dict[str, str]:
    blocks = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)\n```\n", DOC.read_text(), re.S)
    return {name: code + "\n" for name, code in blocks}


def test_examples_are_short():
    files = doc_files()
    assert sorted(files) == sorted(name for names in EXAMPLES.values() for name in names)
    for example, names in EXAMPLES.items():
        lines = sum(len(files[n].splitlines()) for n in names)
        assert lines < MAX_LINES, f"the {example} example has {lines} lines"


def test_examples_pass_in_a_fresh_project(tmp_path):
    for name, code in doc_files().items():
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AGENTRL_SANDBOX_URL"))}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0 and "3 passed" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]
