"""MCP tools: real servers written with the official SDK, over stdio and streamable HTTP on loopback."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

from agentrl.testing import ScriptedPolicy, run_episodes
from envs import ToolUnavailable
from envs.mcp import MCPToolEnv
from envs.multitool_env import InventoryTasks

pytest.importorskip("mcp")
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from tools.embedded import free_port  # noqa: E402

SERVER = Path(__file__).resolve().parents[2] / "examples" / "mcp_env" / "inventory_server.py"
STDIO = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
SERVER_START_TIMEOUT = 60.0

# A second server for failure paths: a slow tool, a tool that kills its server, its process id.
TROUBLE_SERVER = textwrap.dedent(
    """
    import os, time
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("trouble", log_level="WARNING")

    @server.tool()
    def sleep(seconds: float) -> str:
        '''Sleep, then say so.'''
        time.sleep(seconds)
        return "slept"

    @server.tool()
    def crash() -> str:
        '''Kill the server.'''
        os._exit(1)

    @server.tool()
    def pid() -> int:
        '''The server's process id.'''
        return os.getpid()

    server.run()
    """
)


@pytest.fixture(scope="module")
def http_server():
    """The inventory server on a free loopback port (streamable HTTP), for the module."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the MCP test server did not start (exit code {proc.poll()})") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def trouble(tmp_path):
    path = tmp_path / "trouble_server.py"
    path.write_text(TROUBLE_SERVER)
    return StdioServerParameters(command=sys.executable, args=[str(path)])


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def lookup_then_calculate(messages):
    """Look up every item the question names, then one calculator call, then box the result."""
    from envs.multitool_env import INVENTORY

    question = messages[1]["content"]
    items = sorted((i for i in INVENTORY if i + "s" in question), key=question.index)
    tool_texts = [m["content"] for m in messages if m["role"] == "tool"]
    if len(tool_texts) < len(items):
        return call("lookup", item=items[len(tool_texts)])
    if len(tool_texts) > len(items):
        return f"\\boxed{{{tool_texts[-1]}}}"
    price = {t.split(":")[0]: t.split("$")[1].split(",")[0] for t in tool_texts}
    if len(items) == 1:
        stock = tool_texts[0].split(", ")[1].split()[0]
        return call("calculator", expression=f"{price[items[0]]} * {stock}")
    words = question.split()
    qa, qb = words[words.index("do") + 1], words[words.index("and") + 1]
    return call("calculator", expression=f"{qa} * {price[items[0]]} + {qb} * {price[items[1]]}")


def make_env(server, **kw):
    return MCPToolEnv(InventoryTasks(), server=server, max_turns=5, **kw)


async def test_http_tools_are_listed_validated_and_called(http_server):
    env = make_env(http_server)
    obs, _ = await env.areset(seed=0)
    assert sorted(s["function"]["name"] for s in env.tool_schemas) == ["calculator", "lookup"]
    lookup_schema = next(s for s in env.tool_schemas if s["function"]["name"] == "lookup")
    assert lookup_schema["function"]["parameters"]["properties"]["item"] == {"type": "string"}
    r = await env.astep(call("lookup", item="padlock"))
    assert r.observation == ({"role": "tool", "content": "padlock: unit price $8.70, 122 units in stock"},)
    r = await env.astep(call("lookup", item=3))  # checked against the server's schema before any call
    assert "not of type 'string'" in r.observation[0]["content"]
    assert r.info["metrics"]["tool_calls_malformed_invalid_arguments"] == 1.0
    r = await env.astep(call("calculator", expression="1 / 0"))  # the tool's own error: feedback
    assert "division by zero" in r.observation[0]["content"] and r.info["tool_calls"][0]["status"] == "error"
    r = await env.astep("\\boxed{0}")
    assert r.terminated and env.mcp_connection is None  # closed at the end of the episode


def test_check_env_over_http(http_server):
    check_env(make_env(http_server), skip_render_check=True)


async def test_episodes_over_http_and_stdio_through_the_plugin(http_server):
    for server, n in ((http_server, 16), (STDIO, 3)):
        records = await run_episodes(lambda s=server: make_env(s), ScriptedPolicy(lookup_then_calculate), n)
        assert all(r.correct and r.stop_reason == "stop" for r in records), [r.messages[-3:] for r in records]
        assert all({c["name"] for c in r.tool_calls} == {"lookup", "calculator"} for r in records)


async def test_stdio_server_lives_one_episode(trouble):
    env = MCPToolEnv([{"question": "q", "answer": "1"}], server=trouble, max_turns=3)
    await env.areset(seed=0)
    pid = int((await env.astep(call("pid"))).observation[0]["content"])
    os.kill(pid, 0)  # running during the episode
    await env.astep("\\boxed{1}")
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the stdio server outlived its episode"
        await asyncio.sleep(0.05)


async def test_call_timeout_and_dead_server(trouble):
    env = MCPToolEnv([{"question": "q", "answer": "1"}], server=trouble, call_timeout=0.5, max_turns=4)
    await env.areset(seed=0)
    t = time.perf_counter()
    r = await env.astep(call("sleep", seconds=5))
    assert r.info["tool_calls"][0]["status"] == "timeout" and "within 0.5 s" in r.observation[0]["content"]
    assert time.perf_counter() - t < 5 and not (r.terminated or r.truncated)
    r = await env.astep(call("crash"))
    assert r.truncated and r.info["stop_reason"] == "tool_error" and r.info["correct"] is None


async def test_unreachable_servers_fail_reset_clearly():
    dead_url = f"http://127.0.0.1:{free_port()}/mcp"
    env = make_env(dead_url, connect_retries=1, connect_timeout=5.0)
    with pytest.raises(ToolUnavailable, match=f"cannot connect to MCP server {dead_url} after 2 tries"):
        await env.areset(seed=0)
    missing = StdioServerParameters(command="/nonexistent/mcp-server")
    with pytest.raises(ToolUnavailable, match="stdio:/nonexistent/mcp-server"):
        await make_env(missing, connect_retries=0).areset(seed=0)
    with pytest.raises(TypeError, match="server must be"):
        MCPToolEnv([], server=42)
