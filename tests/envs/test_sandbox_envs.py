"""Tool envs against the real sandbox on loopback (the ``sandbox`` fixture from agentrl.testing)."""

import re

import pytest

import envs
from agentrl.testing import ScriptedPolicy, run_episodes
from envs.tool import RESULT_PREFIX


def solve_with_tool(messages):
    """Oracle: turn 1 writes the code for the question, turn 2 boxes what the tool printed."""
    last = messages[-1]["content"]
    if last.startswith(RESULT_PREFIX):
        return f"The result is \\boxed{{{last[len(RESULT_PREFIX):].strip()}}}."
    expr = re.search(r"Compute (.+)\.$", last).group(1).replace(" mod ", " % ")
    return f"I'll compute it.\n```python\nprint({expr})\n```"


async def test_64_concurrent_episodes(sandbox):
    records = await run_episodes("agentrl/Arithmetic-v0", ScriptedPolicy(solve_with_tool), 64, concurrency=64)
    assert len(records) == 64
    assert all(r.stop_reason == "stop" and r.terminated and r.correct for r in records), [
        (r.stop_reason, r.messages[-2:]) for r in records if not r.correct
    ]
    assert all(r.reward == 1.0 and r.turns == 2 for r in records)
    assert all(c["status"] == "ok" for r in records for c in r.tool_calls)
    # Seeds give identical tasks: the same seeds again, the same questions.
    again = await run_episodes("agentrl/Arithmetic-v0", ScriptedPolicy(solve_with_tool), 4)
    assert [r.task["question"] for r in again] == [r.task["question"] for r in records[:4]]


async def test_python_math_errors_timeouts_and_truncation(sandbox):
    env = envs.make("agentrl/PythonMath-v0", dataset="gsm8k", max_output_chars=200, run_timeout=1.0, max_turns=4)
    await env.areset(seed=0)
    r = await env.astep("```python\nprint('x' * 1000)\n```")
    content = r.observation[0]["content"]
    assert content.startswith("Code execution result: " + "x" * 130) and "truncated" in content
    assert len(content) < 300
    assert r.info["tool_calls"][0]["truncated"] is True
    r = await env.astep("```python\n1 / 0\n```")
    assert "ZeroDivisionError" in r.observation[0]["content"] and r.info["tool_calls"][0]["status"] == "error"
    r = await env.astep("```python\nwhile True:\n    pass\n```")
    assert r.info["tool_calls"][0]["status"] == "timeout" and "time limit" in r.observation[0]["content"]
    r = await env.astep(f"\\boxed{{{env.task.answer}}}")
    assert r.terminated and r.reward == 1.0


async def test_stateful_sessions_keep_variables(sandbox):
    env = envs.make("agentrl/Arithmetic-v0", stateful=True)
    await env.areset(seed=0)
    await env.astep("```python\nx = 21\n```")
    r = await env.astep("```python\nprint(x * 2)\n```")
    assert r.observation[0]["content"].strip().endswith("42")


def test_sync_step_uses_the_sandbox(sandbox):
    env = envs.make("agentrl/Arithmetic-v0")
    env.reset(seed=0)
    r = env.step("```python\nprint(6 * 7)\n```")
    assert r.observation[0]["content"] == "Code execution result: 42\n"


async def test_client_passed_explicitly(sandbox_client):
    env = envs.make("agentrl/Arithmetic-v0", sandbox=sandbox_client)
    await env.areset(seed=0)
    r = await env.astep("```python\nprint(1 + 1)\n```")
    assert r.observation[0]["content"] == "Code execution result: 2\n"


async def test_unreachable_sandbox_is_tool_error_not_reward_zero():
    from tools.client import SandboxClient
    from tools.embedded import free_port

    async with SandboxClient(f"http://127.0.0.1:{free_port()}", max_retries=0, timeout=2.0) as dead:
        env = envs.make("agentrl/Arithmetic-v0", sandbox=dead)
        await env.areset(seed=0)
        r = await env.astep("```python\nprint(1)\n```")
    assert r.truncated and not r.terminated
    assert r.info["tool_error"] is True and r.info["stop_reason"] == "tool_error" and r.info["correct"] is None


@pytest.mark.parametrize("env_id", ["agentrl/Arithmetic-v0", "agentrl/PythonMath-v0"])
def test_check_env_with_a_live_sandbox(sandbox, env_id):
    from gymnasium.utils.env_checker import check_env

    check_env(envs.make(env_id), skip_render_check=True)


async def test_passed_client_also_works_for_sync_step(sandbox_client):
    import asyncio

    env = envs.make("agentrl/Arithmetic-v0", sandbox=sandbox_client)
    env.reset(seed=0)
    r = await asyncio.to_thread(env.step, "```python\nprint(3 * 3)\n```")
    assert r.observation[0]["content"] == "Code execution result: 9\n"
