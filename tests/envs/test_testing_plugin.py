"""The agentrl.testing plugin: fixtures and helpers as a user's test would use them."""

import sys

import pytest

from agentrl.testing import EpisodeRecord, ScriptedPolicy, TinyModelPolicy, run_episodes


def test_plugin_import_is_cheap():
    import subprocess

    code = "import sys, agentrl.testing; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False False", out.stderr


async def test_scripted_list_policy_on_math_env():
    records = await run_episodes("agentrl/Math-v0", ["\\boxed{0}"], 4, env_kwargs={"dataset": "gsm8k"})
    assert [r.seed for r in records] == [0, 1, 2, 3]
    assert all(isinstance(r, EpisodeRecord) and r.turns == 1 and r.terminated for r in records)
    assert records[0].messages[-1] == {"role": "assistant", "content": "\\boxed{0}"}


async def test_callable_policy_sees_messages_and_env():
    seen = []

    async def policy(messages, env):
        seen.append(len(messages))
        return f"\\boxed{{{env.task.answer}}}"

    records = await run_episodes("agentrl/Math-v0", ScriptedPolicy(policy), 3)
    assert all(r.correct and r.reward == 1.0 for r in records) and seen == [2, 2, 2]


async def test_sandbox_client_fixture(sandbox_client):
    response = await sandbox_client.run_code("print(40 + 2)")
    assert response.run_result.stdout == "42\n"


async def test_tiny_policy_runs_episodes(tiny_policy: TinyModelPolicy):
    tiny_policy.max_new_tokens = 16
    records = await run_episodes("agentrl/Arithmetic-v0", tiny_policy, 2, concurrency=2, env_kwargs={"max_turns": 2})
    assert len(records) == 2
    assert all(r.stop_reason in ("stop", "max_turns") for r in records)
    assert all(m["role"] == "assistant" and isinstance(m["content"], str) for m in records[0].messages[2::2][:1])


def test_scripted_policy_validation():
    with pytest.raises(ValueError):
        ScriptedPolicy([])


async def test_episode_runner_fixture_with_an_env_instance(episode_runner):
    import envs

    env = envs.make("agentrl/Math-v0", dataset="gsm8k")
    records = await episode_runner(env, ["\\boxed{1}"], 3, seed=10)
    assert [r.seed for r in records] == [10, 11, 12] and all(r.turns == 1 for r in records)


def _documented_example() -> str:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "testing.md").read_text()
    section = doc[doc.index("A complete async integration test") :]
    return section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")] + "\n"


def test_documented_async_example_passes_in_a_project_without_configuration(tmp_path):
    """docs/testing.md's example, copied as is into a fresh project (no pytest configuration at all),
    run by pytest in a subprocess: pytest-asyncio's strict mode would fail it without the plugin."""
    import os
    import subprocess

    pytest.importorskip("pytest_asyncio")
    (tmp_path / "test_my_env.py").write_text(_documented_example())
    assert not [p for p in tmp_path.iterdir() if p.name != "test_my_env.py"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AGENTRL_SANDBOX_URL"))}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0 and "2 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]

