"""Tools from an MCP server, through the official ``mcp`` SDK (stdio or streamable HTTP).

    env = MCPToolEnv(tasks, server="http://127.0.0.1:8000/mcp")                       # streamable HTTP
    env = MCPToolEnv(tasks, server=StdioServerParameters(command="python", args=["server.py"]))  # stdio

Per episode: ``areset`` connects (a stdio server is started then), lists the server's tools (their
schemas are ``env.tool_schemas``, for the chat template), the model's calls (``<tool_call>`` / OpenAI
``tool_calls``, checked against each tool's input schema) run on the server, and the connection closes
when the episode ends (stdio: the server process exits). Local tools (``tools=[...]``) may sit beside
the server's.

Timeouts and failures:

- connecting and listing: ``connect_timeout`` seconds per try, ``connect_retries`` more tries after a
  pause; then ``reset`` raises ``envs.errors.ToolUnavailable`` naming the server.
- a call: ``call_timeout`` seconds; past it the model is told the call timed out (status "timeout").
- a tool that reports an error (``isError``) is an error observation for the model.
- a connection that dies mid-episode ends the episode as ``tool_error`` (no reward, out of the loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import TextEnv, ToolEnv
from .errors import ToolUnavailable
from .functions import drop_titles
from .parsers import schema_validator
from .sandbox import run_sync
from .tasks import Task, TaskSource
from .tool import DEFAULT_MAX_OUTPUT_CHARS, Tool, ToolOutput, truncate_text

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds to connect and list the tools (a stdio server's interpreter start and imports count)."""
DEFAULT_CALL_TIMEOUT = 30.0
"""Seconds one tool call may take before the model is told it timed out."""
DEFAULT_CONNECT_RETRIES = 2
"""Further connection attempts after the first fails."""
DEFAULT_RETRY_PAUSE = 1.0
"""Seconds between connection attempts."""
DEFAULT_CLOSE_TIMEOUT = 10.0
"""Seconds to wait for a connection (and a stdio server process) to shut down."""


class MCPConnection:
    """One live MCP session. A background task owns it: the SDK's transports are anyio context managers
    that must be entered and exited in one task, while an env's steps may run in different tasks."""

    def __init__(self, server: Any, *, connect_timeout: float, call_timeout: float):
        self.server = server
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> list[Any]:
        """Connect and list every tool (all pages); raises on failure or after ``connect_timeout``."""
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready: asyncio.Future[list[Any]] = self.loop.create_future()
        self._task = asyncio.create_task(self._own(ready), name="mcp-connection")
        try:
            return await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout)
        except BaseException:
            await self.aclose()
            raise

    async def _own(self, ready: asyncio.Future[list[Any]]) -> None:
        from mcp import Client

        try:
            async with Client(self.server, read_timeout_seconds=self.call_timeout) as client:
                tools, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self._client = client
                if not ready.done():
                    ready.set_result(tools)
                assert self._stop is not None
                await self._stop.wait()
        except BaseException as e:  # noqa: BLE001 - handed to open(), or logged after it returned
            if not ready.done():
                ready.set_exception(e if isinstance(e, Exception) else ToolUnavailable(repr(e)))
            elif not isinstance(e, asyncio.CancelledError):
                logger.warning("MCP connection to %s ended: %r", describe(self.server), e)
        finally:
            self._client = None

    @property
    def alive(self) -> bool:
        return self._client is not None and self._task is not None and not self._task.done()

    async def call(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """The server's ``CallToolResult``; raises TimeoutError past ``call_timeout``, ToolUnavailable
        when the connection is gone."""
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        if asyncio.get_running_loop() is not self.loop:
            raise RuntimeError("an MCP env's episode must run in one event loop (use reset/step or areset/astep)")
        if not self.alive:
            raise ToolUnavailable(f"the MCP connection to {describe(self.server)} is closed")
        try:
            # The SDK's own read timeout ends the request; wait_for is the backstop should it not.
            return await asyncio.wait_for(
                self._client.call_tool(name, dict(arguments), read_timeout_seconds=self.call_timeout),
                self.call_timeout + 5.0,
            )
        except MCPError as e:
            if e.code == REQUEST_TIMEOUT:
                raise TimeoutError(e.message) from e
            if e.code == CONNECTION_CLOSED:
                raise ToolUnavailable(f"MCP server {describe(self.server)} closed the connection: {e.message}") from e
            raise
        except (TimeoutError, ToolUnavailable):
            raise
        except Exception as e:  # transport failures: closed streams, refused connections, dead process
            if self.alive:
                raise
            raise ToolUnavailable(f"MCP server {describe(self.server)} failed: {e!r}") from e

    async def aclose(self) -> None:
        """Close the session (and stop a stdio server); waits up to DEFAULT_CLOSE_TIMEOUT seconds."""
        if self._stop is not None:
            self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, DEFAULT_CLOSE_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()

    def close_soon(self) -> None:
        """Ask the owning task to close, from any thread, without waiting."""
        if self._stop is not None and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)


def describe(server: Any) -> str:
    if isinstance(server, str):
        return server
    command = getattr(server, "command", None)
    return f"stdio:{command} {' '.join(getattr(server, 'args', []))}".strip() if command else repr(server)


def result_text(result: Any) -> str:
    """A ``CallToolResult``'s content as text: text blocks joined; other blocks named; else the
    structured content as JSON."""
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {getattr(block, 'mime_type', '?')}]")
        elif kind == "resource_link":
            parts.append(f"[resource: {block.uri}]")
        elif kind == "resource":
            parts.append(getattr(block.resource, "text", None) or f"[resource: {block.resource.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts) if parts else "(no result)"


class MCPTool(Tool):
    """A tool listed by an MCP server; calls go to the env's live connection."""

    def __init__(self, spec: Any, *, max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS):
        self.name = spec.name  # type: ignore[misc]
        self.description = spec.description or ""  # type: ignore[misc]
        parameters = drop_titles(spec.input_schema or {"type": "object"})
        try:
            schema_validator(parameters)
        except Exception as e:  # noqa: BLE001 - a server's broken schema must not break parsing
            logger.warning("MCP tool %r has an invalid input schema (%s); its arguments are not checked", spec.name, e)
            parameters = {"type": "object"}
        self.parameters = parameters  # type: ignore[misc]
        self.max_output_chars = max_output_chars

    async def run(self, arguments: Mapping[str, Any], env: TextEnv) -> ToolOutput:
        connection = getattr(env, "mcp_connection", None)
        if connection is None:
            raise ToolUnavailable("no MCP connection: the episode was not reset")
        try:
            result = await connection.call(self.name, arguments)
        except TimeoutError:
            return ToolOutput(f"Error: {self.name} did not answer within {connection.call_timeout:g} s", status="timeout")
        except ToolUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - a protocol-level refusal (bad params...) is feedback
            return ToolOutput(f"Error: {type(e).__name__}: {e}", status="error")
        text, cut = truncate_text(result_text(result), self.max_output_chars)
        return ToolOutput(text, status="error" if result.is_error else "ok", truncated=cut)


class MCPToolEnv(ToolEnv):
    """A tool env whose tools come from an MCP server, connected and listed per episode.

    ``server``: a streamable-HTTP URL, or ``mcp.client.stdio.StdioServerParameters`` (the command is
    started per episode). ``tools``: local tools offered beside the server's.
    """

    def __init__(
        self,
        tasks: TaskSource | Sequence[Task | Mapping[str, Any]] | None = None,
        *,
        server: Any,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        connect_retries: int = DEFAULT_CONNECT_RETRIES,
        max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS,
        **kwargs: Any,
    ):
        if not isinstance(server, str) and not hasattr(server, "command"):
            raise TypeError(f"server must be an MCP URL or StdioServerParameters, got {server!r}")
        if connect_retries < 0:
            raise ValueError(f"connect_retries must be >= 0, got {connect_retries}")
        kwargs.setdefault("parser", "tool_call")
        super().__init__(tasks, tools=list(tools), max_output_chars=max_output_chars, **kwargs)
        self.server = server
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.connect_retries = connect_retries
        self.max_output_chars = max_output_chars
        self.local_tools = dict(self.tools)
        self.mcp_connection: MCPConnection | None = None

    async def connect(self) -> MCPConnection:
        """A new connection with its tools listed, after retries; raises ToolUnavailable."""
        last: BaseException | None = None
        for attempt in range(self.connect_retries + 1):
            if attempt:
                await asyncio.sleep(DEFAULT_RETRY_PAUSE * attempt)
            connection = MCPConnection(self.server, connect_timeout=self.connect_timeout, call_timeout=self.call_timeout)
            try:
                specs = await connection.open()
            except Exception as e:  # noqa: BLE001 - retried, then reported with the server's name
                last = e
                logger.warning("MCP connect to %s failed (try %d): %r", describe(self.server), attempt + 1, e)
                continue
            remote = {spec.name: MCPTool(spec, max_output_chars=self.max_output_chars) for spec in specs}
            clash = set(remote) & set(self.local_tools)
            if clash:
                await connection.aclose()
                raise ValueError(f"MCP server {describe(self.server)} has tools named like local ones: {sorted(clash)}")
            self.tools = {**self.local_tools, **remote}
            return connection
        raise ToolUnavailable(
            f"cannot connect to MCP server {describe(self.server)} after {self.connect_retries + 1} tries: {last!r}"
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[tuple, dict]:
        return run_sync(self.areset(seed=seed, options=options))

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[tuple, dict]:
        await self.on_episode_end()  # an episode abandoned before its end still holds a connection
        self.mcp_connection = await self.connect()
        return TextEnv.reset(self, seed=seed, options=options)

    async def on_episode_end(self) -> None:
        connection, self.mcp_connection = self.mcp_connection, None
        try:
            await super().on_episode_end()
        finally:
            if connection is not None:
                await connection.aclose()

    def close(self) -> None:
        super().close()
        connection, self.mcp_connection = self.mcp_connection, None
        if connection is not None:
            with contextlib.suppress(RuntimeError):
                connection.close_soon()
