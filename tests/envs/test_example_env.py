"""The example third-party env (examples/unit_env), registered the way a user's package would be:
through its declared ``agentrl.envs`` entry point, and as a ``module:Class`` string."""

import json
import tomllib
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

import envs
from agentrl.testing import ScriptedPolicy, run_episodes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "unit_env"


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """What ``pip install examples/unit_env`` leaves behind: the package importable and a dist-info
    with the entry points its pyproject.toml declares (without touching the shared virtualenv)."""
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    dist = tmp_path / "agentrl_unit_env_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: agentrl-unit-env-example\nVersion: 0.1.0\n")
    eps = meta["project"]["entry-points"]["agentrl.envs"]
    (dist / "entry_points.txt").write_text("[agentrl.envs]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    envs.reload_entry_points()
    return next(iter(eps))


def oracle(messages, env):
    """Calls the tool with the task's own numbers, then boxes what it returned."""
    last = messages[-1]
    if last["role"] == "tool":
        return f"So the answer is \\boxed{{{last['content'].split(' = ')[1].split()[0]}}}."
    m = env.task.metadata
    args = {"value": float(m["value"]), "from_unit": m["from_unit"], "to_unit": m["to_unit"]}
    return f"<tool_call>{json.dumps({'name': 'convert', 'arguments': args})}</tool_call>"


async def test_entry_point_registration_and_episodes(installed_example):
    env_id = installed_example
    assert env_id == "unitconv/UnitConversion-v0" and env_id in envs.list()
    assert envs.spec(env_id).source.startswith("entry_point:agentrl-unit-env-example")
    records = await run_episodes(env_id, ScriptedPolicy(oracle), 16)
    assert all(r.correct and r.stop_reason == "stop" and r.turns == 2 for r in records), [
        r.messages[-3:] for r in records if not r.correct
    ]


async def test_module_colon_class(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    env = envs.make("unit_env.env:UnitConversionEnv", max_turns=2)
    check_env(env, skip_render_check=True)
    await env.areset(seed=3)
    r = await env.astep('<tool_call>{"name": "convert", "arguments": {"value": 1, "from_unit": "h", "to_unit": "kg"}}</tool_call>')
    assert "cannot convert" in r.observation[0]["content"] and not r.truncated
    r = await env.astep("\\boxed{0}")
    assert r.terminated and r.reward == 0.0
