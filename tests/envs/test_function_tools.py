"""Tools declared as typed functions: schema derivation, calls, malformed calls as observations, metrics,
and the schemas rendered through the chat template's ``tools`` argument (the rollout bridge)."""

import asyncio
import json
from typing import Annotated, Literal

import pytest
from gymnasium.utils.env_checker import check_env
from pydantic import BaseModel, Field

from agentrl.testing import ScriptedPolicy, run_episodes
from envs import Task, ToolEnv, ToolUnavailable
from envs.functions import FunctionTool, function_schema, parse_docstring

TASKS = [Task("What is the price of 3 bolts?", "0.75", id="bolts")]
PRICES = {"bolt": 0.25, "nut": 0.1}


def lookup(item: str, field: Literal["price", "stock"] = "price") -> str:
    """Look up one item of the shop's inventory.

    Args:
        item: The item's name, e.g. "bolt".
        field: Which column to read;
            price is in dollars.
    """
    if item not in PRICES:
        raise KeyError(f"no item {item!r}")
    return f"{item}: {PRICES[item]}"


async def multiply(a: float, b: float) -> float:
    """Multiply two numbers.

    Args:
        a: First factor.
        b: Second factor.
    """
    await asyncio.sleep(0)
    return a * b


def make_env(**kw):
    kw.setdefault("max_turns", 4)
    return ToolEnv(TASKS, tools=[lookup, multiply], **kw)


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_schema_from_hints_and_docstring():
    schema = function_schema(lookup)
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "lookup" and fn["description"] == "Look up one item of the shop's inventory."
    params = fn["parameters"]
    assert params["type"] == "object" and params["required"] == ["item"] and params["additionalProperties"] is False
    assert params["properties"]["item"] == {"type": "string", "description": 'The item\'s name, e.g. "bolt".'}
    assert params["properties"]["field"]["enum"] == ["price", "stock"]
    assert params["properties"]["field"]["default"] == "price"
    assert params["properties"]["field"]["description"] == "Which column to read; price is in dollars."
    assert "title" not in json.dumps(params)


def test_schema_types_env_parameter_and_errors():
    class Point(BaseModel):
        x: int
        y: int

    def f(env, n: int, tags: list[str], p: Point, note: Annotated[str, Field(description="why")] = "", k: int | None = None):
        """F."""

    params = FunctionTool(f).parameters
    assert set(params["properties"]) == {"n", "tags", "p", "note", "k"}  # env is injected, not described
    assert params["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert params["properties"]["note"]["description"] == "why"
    assert "$defs" in params and params["required"] == ["n", "tags", "p"]

    def untyped(x):
        """No hints."""

    def star(*args: int):
        """Varargs."""

    with pytest.raises(TypeError, match="type hint"):
        FunctionTool(untyped)
    with pytest.raises(TypeError, match=r"\*args"):
        FunctionTool(star)
    with pytest.raises(ValueError, match="tool name"):
        FunctionTool(lookup, name="bad name!")


def test_parse_docstring_sections():
    doc = """Summary line
    continued.

    Second paragraph.

    Args:
        a (int): first
        b: second,
            on two lines.

    Returns:
        nothing: not an argument.
    """
    description, args = parse_docstring(doc)
    assert description == "Summary line continued.\n\nSecond paragraph."
    assert args == {"a": "first", "b": "second, on two lines."}


def test_tool_schemas_and_prompt():
    env = make_env()
    obs, _ = env.reset(seed=0)
    assert env.parser.name == "tool_call"  # functions given: function calling by default
    assert [s["function"]["name"] for s in env.tool_schemas] == ["lookup", "multiply"]
    assert "<tools>" not in obs[0]["content"]  # the chat template renders the schemas, not the env
    check_env(make_env(), skip_render_check=True)


def test_calls_answers_and_tool_messages():
    env = make_env()
    env.reset(seed=0)
    r = env.step(call("lookup", item="bolt") + call("multiply", a=0.25, b=3))
    assert r.observation == ({"role": "tool", "content": "bolt: 0.25"}, {"role": "tool", "content": "0.75"})
    assert r.info["metrics"]["tool_calls"] == 2.0 and r.info["metrics"]["tool_calls_malformed"] == 0.0
    r = env.step("\\boxed{0.75}")
    assert r.terminated and r.reward == 1.0


def test_openai_tool_calls_message_as_the_turn():
    env = make_env()
    env.reset(seed=0)
    turn = {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 2, "b": 4}'}}
    ]}
    r = env.step(json.dumps(turn))
    assert r.observation == ({"role": "tool", "content": "8.0"},)


@pytest.mark.parametrize(
    "turn, kind, fragment",
    [
        ("<tool_call>{\"name\": \"lookup\", \"arguments\": {\"item\": </tool_call>", "invalid_json", "not valid JSON"),
        (call("weather", city="Paris"), "unknown_tool", "Unknown tool 'weather'; available: lookup, multiply"),
        (call("multiply", a="two", b=3), "invalid_arguments", "'two' is not of type 'number'"),
        (call("lookup", item="bolt", field="colour"), "invalid_arguments", "'colour' is not one of"),
        (call("lookup"), "invalid_arguments", "'item' is a required property"),
        ("<tool_call>" + call("lookup", item="bolt")[11:-12], "format", "not closed"),
    ],
)
def test_malformed_calls_are_observations_and_counted(turn, kind, fragment):
    env = make_env()
    env.reset(seed=0)
    r = env.step(turn)
    assert not (r.terminated or r.truncated) and r.reward == 0.0
    assert fragment in r.observation[0]["content"] and r.observation[0]["role"] == "tool"
    assert r.info["metrics"]["tool_calls_malformed"] == 1.0 and r.info["metrics"][f"tool_calls_malformed_{kind}"] == 1.0
    # The model recovers: a good call next turn runs, and the episode ends normally.
    r = env.step(call("lookup", item="bolt"))
    assert r.observation[0]["content"] == "bolt: 0.25" and r.info["metrics"]["tool_calls_malformed"] == 0.0
    assert env.step("\\boxed{0.75}").reward == 1.0


def test_function_failures_are_observations():
    def slow(seconds: float) -> str:
        """Sleep."""
        import time

        time.sleep(seconds)
        return "done"

    def down() -> str:
        """A dead service."""
        raise ToolUnavailable("inventory service is down")

    env = ToolEnv(TASKS, tools=[lookup, FunctionTool(slow, timeout=0.2), down], max_turns=5)
    env.reset(seed=0)
    r = env.step(call("lookup", item="washer"))
    assert r.observation[0]["content"] == "Error: KeyError: \"no item 'washer'\""
    assert r.info["tool_calls"][0]["status"] == "error" and r.info["metrics"]["tool_calls_failed"] == 1.0
    r = env.step(call("slow", seconds=1.0))
    assert r.info["tool_calls"][0]["status"] == "timeout" and "within 0.2 s" in r.observation[0]["content"]
    r = env.step(call("down"))
    assert r.truncated and r.info["stop_reason"] == "tool_error"


async def test_episodes_through_the_plugin():
    def policy(messages):
        last = messages[-1]
        if last["role"] == "user":
            return "First the price. " + call("lookup", item="bolt")
        if last["content"].startswith("bolt"):
            return call("multiply", a=float(last["content"].split()[-1]), b=3)
        return f"\\boxed{{{last['content']}}}"

    records = await run_episodes(make_env, ScriptedPolicy(policy), 8)
    assert all(r.correct and r.turns == 3 and r.stop_reason == "stop" for r in records)
    assert all(sum(i["metrics"]["tool_calls"] for i in r.infos) == 2.0 for r in records)


def test_bridge_renders_the_tools_through_the_template(tiny_model):
    """The rollout side: EpisodeTokens(tools=env.tool_schemas) renders the prompt and verifies every turn
    with the template's tools argument; without tools the prompt is the plain one."""
    from agentrl.rollout.bridge import ChatBridge, EpisodeTokens

    _, tokenizer = tiny_model
    env = make_env()
    obs, _ = env.reset(seed=0)
    bridge = ChatBridge(tokenizer, verify="turn", on_drift="error")
    episode = EpisodeTokens(bridge, list(obs), tools=env.tool_schemas)
    prompt = tokenizer.decode(episode.token_ids)
    assert "<tools>" in prompt and json.dumps(env.tool_schemas[0], ensure_ascii=False) in prompt
    assert prompt.count("<|im_start|>system") == 1 and obs[0]["content"] in prompt
    for turn in (call("lookup", item="bolt"), call("multiply", a=0.25, b=3)):
        sampled = tokenizer.encode(turn, add_special_tokens=False) + [tokenizer.eos_token_id]
        text = episode.add_turn(sampled, [0.0] * len(sampled), policy_version=0)
        episode.add_observation(env.step(text).observation)  # verify="turn": raises on any drift
    assert not episode.to_trajectory().template_drift
    plain = EpisodeTokens(bridge, list(obs))
    assert tokenizer.decode(plain.token_ids) == tokenizer.apply_chat_template(list(obs), tokenize=False,
                                                                                add_generation_prompt=True)
    assert "<tools>" not in tokenizer.decode(plain.token_ids)
