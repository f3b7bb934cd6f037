"""reset/step semantics without a sandbox: a ToolEnv with a local tool, and the built-ins' void turns."""

import asyncio

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import StepResult, Task, Tool, ToolEnv, ToolOutput, ToolUnavailable

INFO_KEYS = {
    "stop_reason",
    "is_tool_call",
    "is_answer",
    "void_turn",
    "tool_error",
    "tool_calls",
    "reward_breakdown",
    "correct",
    "metrics",
}
TASKS = [Task("What is 6 * 7?", "42", id="t0"), Task("What is 2 + 2?", "4", id="t1")]


class Echo(Tool):
    name = "echo"
    description = "Echo the text back."
    parameters = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

    async def run(self, arguments, env):
        if arguments["text"] == "down":
            raise ToolUnavailable("echo service is down")
        return ToolOutput("echo: " + arguments["text"])


def make_env(**kw):
    kw.setdefault("max_turns", 3)
    return ToolEnv(TASKS, tools=[Echo()], parser="tool_call", **kw)


def call(text):
    return f'<tool_call>{{"name": "echo", "arguments": {{"text": "{text}"}}}}</tool_call>'


def test_reset_observation_and_task():
    env = make_env()
    obs, info = env.reset(seed=1)
    assert obs in env.observation_space
    assert obs[0]["role"] == "system" and "tools" in obs[0]["content"] and "\\boxed{}" in obs[0]["content"]
    # The tools themselves go to the chat template (tools=env.tool_schemas), not into the system prompt.
    assert env.tool_schemas == [Echo().schema()]
    assert obs[-1] == {"role": "user", "content": env.task.question}
    assert info["task"]["answer"] == env.task.answer


def test_tool_turn_then_answer_terminates():
    env = make_env()
    env.reset(options={"task": TASKS[0]})
    r = env.step(call("hi"))
    assert isinstance(r, StepResult) and len(r) == 5
    assert r.observation == ({"role": "tool", "content": "echo: hi"},)
    assert (r.reward, r.terminated, r.truncated) == (0.0, False, False)
    assert INFO_KEYS <= r.info.keys() and r.info["is_tool_call"] and r.info["stop_reason"] is None
    assert r.info["tool_calls"] == [{"name": "echo", "status": "ok", "execution_time": None, "truncated": False}]
    r = env.step("so it is \\boxed{42}")
    assert r.observation == () and r.terminated and not r.truncated
    assert r.reward == 1.0 and r.info["correct"] is True and r.info["stop_reason"] == "stop"
    assert r.info["answer"] == "42" and r.info["reward_breakdown"] == {"correct": 1.0}
    with pytest.raises(RuntimeError, match="reset"):
        env.step("more")


def test_wrong_answer():
    env = make_env()
    env.reset(options={"task": TASKS[0]})
    r = env.step("\\boxed{41}")
    assert r.terminated and r.reward == 0.0 and r.info["correct"] is False


def test_max_turns_truncates_never_terminates():
    env = make_env(max_turns=2)
    env.reset(seed=0)
    assert not env.step(call("a")).truncated
    r = env.step(call("b"))
    assert r.truncated and not r.terminated and r.info["stop_reason"] == "max_turns"
    assert r.observation == () and r.reward == 0.0 and r.info["correct"] is False


def test_malformed_call_is_a_failed_turn():
    env = make_env()
    env.reset(seed=0)
    r = env.step("<tool_call>{oops</tool_call>")
    assert not (r.terminated or r.truncated)
    assert "not valid JSON" in r.observation[0]["content"]
    assert r.info["is_tool_call"] and r.info["tool_calls"][0]["status"] == "malformed"
    assert r.info["metrics"]["tool_calls_malformed"] == 1.0 and r.info["metrics"]["tool_calls_malformed_invalid_json"] == 1.0
    r = env.step('<tool_call>{"name": "echo", "arguments": {"text": 3}}</tool_call>')
    assert "not of type 'string'" in r.observation[0]["content"]
    assert r.info["metrics"]["tool_calls_malformed_invalid_arguments"] == 1.0 and r.info["metrics"]["tool_calls"] == 0.0


def test_tool_error_truncates_without_reward():
    env = make_env()
    env.reset(seed=0)
    r = env.step(call("down"))
    assert r.truncated and not r.terminated
    assert r.info["tool_error"] is True and r.info["stop_reason"] == "tool_error"
    assert r.info["correct"] is None and r.reward == 0.0


def test_void_turn_end_and_continue():
    env = make_env()
    env.reset(seed=0)
    r = env.step("I am thinking.")
    assert r.terminated and r.info["void_turn"] and r.info["stop_reason"] == "stop" and r.info["correct"] is False
    env = make_env(void_turn="continue", max_turns=2)
    env.reset(seed=0)
    r = env.step("hmm")
    assert not (r.terminated or r.truncated) and r.info["void_turn"] and "\\boxed{}" in r.observation[0]["content"]
    r = env.step("hmm")
    assert r.truncated and r.info["stop_reason"] == "max_turns"


def test_single_turn_math_env():
    env = envs.make("agentrl/Math-v0", dataset="gsm8k")
    obs, info = env.reset(seed=5)
    assert env.max_turns == 1 and obs[-1]["content"] == env.task.question
    r = env.step(f"Working... so $\\boxed{{{int(env.task.answer):,}}}$")
    assert r.terminated and r.reward == 1.0
    env.reset(seed=5)
    r = env.step("no box here")
    assert r.terminated and not r.truncated and r.reward == 0.0 and r.info["void_turn"]


async def test_async_api_concurrent():
    async def episode(seed):
        env = make_env()
        await env.areset(seed=seed)
        await env.astep(call("x"))
        return await env.astep(f"\\boxed{{{env.task.answer}}}")

    results = await asyncio.gather(*(episode(s) for s in range(16)))
    assert all(r.terminated and r.reward == 1.0 for r in results)


def test_seeded_reset_repeats_and_splits_are_disjoint():
    a = envs.make("agentrl/Arithmetic-v0")
    b = envs.make("agentrl/Arithmetic-v0")
    assert [a.reset(seed=s)[0] for s in range(20)] == [b.reset(seed=s)[0] for s in range(20)]
    train = {envs.make("agentrl/Arithmetic-v0").reset(seed=s)[1]["task"]["question"] for s in range(300)}
    test = {envs.make("agentrl/Arithmetic-v0", split="test").reset(seed=s)[1]["task"]["question"] for s in range(300)}
    assert train.isdisjoint(test) and len(test) > 250


def test_difficulty_knobs():
    env = envs.make("agentrl/Arithmetic-v0", digits=6, ops=["mul"])
    for s in range(10):
        env.reset(seed=s)
        a, b = env.task.metadata["operands"]
        assert len(str(a)) == len(str(b)) == 6 and int(env.task.answer) == a * b


def test_check_env_on_custom_tool_env():
    check_env(make_env(), skip_render_check=True)


def test_gymnasium_make_registered_ids():
    env = gymnasium.make("agentrl/Arithmetic-v0", digits=2)
    obs, _ = env.reset(seed=0)
    assert obs[-1]["content"].startswith("Compute")
    env.close()


class Buggy(Tool):
    name = "buggy"
    parameters = {"type": "object", "properties": {}, "required": []}

    async def run(self, arguments, env):
        raise RuntimeError("bug in the tool")


def test_tool_bug_ends_episode_with_error_not_crash():
    env = ToolEnv(TASKS, tools=[Buggy()], parser="tool_call", max_turns=3)
    env.reset(seed=0)
    r = env.step('<tool_call>{"name": "buggy", "arguments": {}}</tool_call>')
    assert r.truncated and not r.terminated and r.info["stop_reason"] == "error"
    assert "bug in the tool" in r.info["error"] and r.info["correct"] is None


class CharTokenizer:
    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class FakeResponse:
    status, message, truncated = "Success", "", False

    class run_result:  # noqa: N801 - mimics tools.schema.RunCodeResponse
        status, execution_time, return_code, stdout, stderr = "Finished", 0.01, 0, "y" * 100, ""


def test_tool_output_token_truncation():
    from envs.tool import PythonTool

    out = PythonTool(max_output_tokens=10, tokenizer=CharTokenizer()).from_response(FakeResponse())
    assert out.truncated and out.text.startswith("y" * 10 + "\n... (90 tokens truncated)")
    with pytest.raises(ValueError, match="tokenizer"):
        PythonTool(max_output_tokens=10)
