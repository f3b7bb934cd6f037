"""The code, multi-tool and interactive envs: check_env, the plugin's episodes, and what each one rewards.

HumanEval's tests run in a real sandbox on loopback (the plugin's ``sandbox`` fixture)."""

import asyncio
import json
import re

import pytest
from gymnasium.utils.env_checker import check_env

import envs
from agentrl.testing import ScriptedPolicy, run_episodes
from envs.code_env import CodeEnv, HumanEvalEnv, build_program, humaneval_tasks
from envs.multitool_env import INVENTORY, calculator, lookup


@pytest.mark.parametrize("env_id", ["agentrl/HumanEval-v0", "agentrl/MultiTool-v0", "agentrl/GuessNumber-v0"])
def test_check_env_with_a_live_sandbox(sandbox, env_id):
    check_env(envs.make(env_id), skip_render_check=True)


# ---- HumanEval ----------------------------------------------------------------------------------------
async def test_humaneval_every_canonical_solution_scores_1_and_an_empty_one_0(sandbox):
    env = HumanEvalEnv()
    tasks = list(humaneval_tasks())
    assert len(tasks) == 164 and len({t.id for t in tasks}) == 164
    limit = asyncio.Semaphore(16)

    async def run(task, solution):
        async with limit:
            return await env.run_tests(task, solution)

    canonical = await asyncio.gather(*(run(t, t.answer) for t in tasks))
    empty = await asyncio.gather(*(run(t, "") for t in tasks))
    assert [t.id for t, (ok, _) in zip(tasks, canonical, strict=True) if not ok] == []
    assert [t.id for t, (ok, _) in zip(tasks, empty, strict=True) if ok] == []
    assert all(verdict.startswith(("failed", "timed out")) for _, verdict in empty)


def answer_with_canonical(messages, env):
    """A policy that writes the whole function: the prompt's definition with the canonical body."""
    return "Here it is.\n```python\n" + env.task.metadata["prompt"] + env.task.answer + "```"


async def test_humaneval_episodes_through_the_plugin(sandbox):
    good = await run_episodes("agentrl/HumanEval-v0", ScriptedPolicy(answer_with_canonical), 8)
    assert all(r.correct and r.reward == 1.0 and r.turns == 1 and r.stop_reason == "stop" for r in good)
    wrong = await run_episodes("agentrl/HumanEval-v0", ["```python\ndef nothing():\n    return 0\n```"], 4)
    assert all(r.reward == 0.0 and r.infos[-1]["verdict"].startswith("failed") for r in wrong)
    no_code = await run_episodes("agentrl/HumanEval-v0", ["I would loop over the list."], 2)
    assert all(r.reward == 0.0 and r.infos[-1]["verdict"] == "no code block" for r in no_code)


async def test_code_env_judges_by_exit_code_timeouts_and_dead_sandbox(sandbox):
    task = {"question": "Write f.", "answer": "", "metadata": {"prompt": "", "tests": "assert f(2) == 4"}}
    env = CodeEnv([task], test_timeout=1.0)
    await env.areset(seed=0)
    r = await env.astep("```python\nimport sys\ndef f(x):\n    sys.exit(3)\n```")
    assert r.reward == 0.0 and "failed" in r.info["verdict"]  # a non-zero exit fails, however it is reported
    await env.areset(seed=0)
    r = await env.astep("```python\ndef f(x):\n    while True:\n        pass\n```")
    assert r.reward == 0.0 and r.info["verdict"].startswith("timed out")
    await env.areset(seed=0)
    assert (await env.astep("```python\ndef f(x):\n    return x * x\n```")).reward == 1.0

    from tools.client import SandboxClient
    from tools.embedded import free_port

    async with SandboxClient(f"http://127.0.0.1:{free_port()}", max_retries=0, timeout=2.0) as dead:
        env = CodeEnv([task], sandbox=dead)
        await env.areset(seed=0)
        r = await env.astep("```python\ndef f(x):\n    return x * x\n```")
    assert r.truncated and r.info["stop_reason"] == "tool_error" and r.info["correct"] is None


def test_build_program_body_or_whole_function():
    prompt = "def f(x):\n    \"\"\"Square.\"\"\"\n"
    assert build_program(prompt, "    return x * x\n", "assert f(3) == 9") == prompt + "    return x * x\n\nassert f(3) == 9\n"
    whole = build_program(prompt, "def f(x):\n    return x * x\n", "assert f(3) == 9")
    assert whole.index("def f(x):\n    return") > whole.index('"""Square."""')  # redefines the stub


# ---- MultiTool ----------------------------------------------------------------------------------------
def test_calculator_is_exact_and_safe():
    assert calculator("3.85 * 147") == "565.95"
    assert calculator("0.1 + 0.2") == "0.3"
    assert calculator("(2 + 3) ** 2 // 4 - -1") == "7"
    assert calculator("1 / 3") == "0.333333333333"
    for bad in ["__import__('os')", "2 ** 1000", "x + 1", "1 +", "a" * 300]:
        with pytest.raises(ValueError):
            calculator(bad)


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def two_tool_policy(messages):
    """lookup each item, then one calculator call, then box its result: the intended best policy."""
    question = messages[1]["content"]
    items = [i for i in sorted(INVENTORY, key=len, reverse=True) if i + "s" in question]
    looked = [m["content"] for m in messages if m["role"] == "tool" and "unit price" in m["content"]]
    if len(looked) < len(items):
        return call("lookup", item=items[len(looked)])
    prices = {line.split(":")[0]: line.split("$")[1].split(",")[0] for line in looked}
    stocks = {line.split(":")[0]: line.split(", ")[1].split()[0] for line in looked}
    last = messages[-1]["content"]
    if messages[-1]["role"] == "tool" and "unit price" not in last:
        return f"\\boxed{{{last}}}"
    if "in stock" in question and len(items) == 1:
        return call("calculator", expression=f"{prices[items[0]]} * {stocks[items[0]]}")
    qa, qb = (int(n) for n in re.findall(r"do (\d+) .* and (\d+) ", question)[0])
    a, b = sorted(items, key=question.index)
    return call("calculator", expression=f"{qa} * {prices[a]} + {qb} * {prices[b]}")


async def test_multitool_best_policy_uses_two_tools(sandbox):
    records = await run_episodes("agentrl/MultiTool-v0", ScriptedPolicy(two_tool_policy), 32)
    assert all(r.correct and r.stop_reason == "stop" for r in records), [r.messages[-3:] for r in records if not r.correct]
    used = [{c["name"] for c in r.tool_calls} for r in records]
    assert all(u == {"lookup", "calculator"} for u in used)
    # Without the table there is no way to know the prices: guessing from the question fails.
    guesses = await run_episodes("agentrl/MultiTool-v0", ["\\boxed{100}"], 32)
    assert sum(r.correct for r in guesses) == 0


async def test_multitool_python_tool_runs_in_the_sandbox(sandbox):
    env = envs.make("agentrl/MultiTool-v0")
    await env.areset(seed=0)
    r = await env.astep(call("python", code="print(round(3.85 * 147, 2))"))
    assert r.observation == ({"role": "tool", "content": "Code execution result: 565.95\n"},)
    r = await env.astep(call("lookup", item="unobtainium"))
    assert "no item 'unobtainium'" in r.observation[0]["content"] and r.info["metrics"]["tool_calls_failed"] == 1.0
    assert lookup("Steel Bolts") == "steel bolt: unit price $0.45, 2310 units in stock"


# ---- GuessNumber --------------------------------------------------------------------------------------
def binary_search(messages):
    low, high = 1, 100
    guess = None
    for m in messages:
        if m["role"] == "assistant":
            guess = int(re.search(r"\\boxed\{(-?\d+)\}", m["content"]).group(1))
        elif m["role"] == "user" and guess is not None:
            if m["content"].startswith("Too low"):
                low = guess + 1
            elif m["content"].startswith("Too high"):
                high = guess - 1
    return f"My guess is \\boxed{{{(low + high) // 2}}}."


async def test_guess_number_binary_search_always_wins_and_ignoring_hints_does_not():
    records = await run_episodes("agentrl/GuessNumber-v0", ScriptedPolicy(binary_search), 100)
    assert all(r.correct and r.reward == 1.0 and r.turns <= 7 for r in records)
    assert sum(r.turns for r in records) / 100 > 4  # it really takes several turns of feedback
    assert {r.task["answer"] for r in records} != {records[0].task["answer"]}
    stubborn = await run_episodes("agentrl/GuessNumber-v0", ["\\boxed{50}"], 100)
    assert sum(r.correct for r in stubborn) <= 3 and all(r.turns in (1, 7) for r in stubborn)


async def test_guess_number_hints_invalid_guesses_and_metrics():
    env = envs.make("agentrl/GuessNumber-v0", low=1, high=10)
    assert env.max_turns == 4
    await env.areset(options={"task": {"question": "q", "answer": "7", "metadata": {"low": 1, "high": 10}}})
    r = await env.astep("\\boxed{5}")
    assert r.observation == ({"role": "user", "content": "Too low: the number is higher. 3 guesses left."},)
    assert r.info["metrics"] == {"guesses": 1.0, "invalid_guesses": 0.0} and not r.terminated
    r = await env.astep("\\boxed{eleven}")
    assert "not a whole number between 1 and 10" in r.observation[0]["content"]
    assert r.info["metrics"]["invalid_guesses"] == 1.0
    r = await env.astep("thinking...")  # a void turn is nudged, not the end
    assert not r.terminated and r.info["metrics"]["guesses"] == 0.0
    r = await env.astep("\\boxed{8}")  # the last turn's guess is final
    assert r.terminated and r.reward == 0.0 and r.info["verdict"] == "wrong guess '8'"
