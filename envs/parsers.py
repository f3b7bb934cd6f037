"""Tool-call parsers: turn one assistant turn (raw text) into tool calls, or explain why it is malformed.

Two formats ship:

- ``PythonBlockParser`` (``"python_block"``): fenced code, SimpleTIR / ReTool style::

      ```python
      print(2 + 2)
      ```

- ``ToolCallTagParser`` (``"tool_call"``): Qwen / Hermes function calling::

      <tool_call>{"name": "python", "arguments": {"code": "print(2 + 2)"}}</tool_call>

Model output is data: a parser never raises on any ``str``; a malformed or empty call comes back as
``ParseResult(error=...)`` with a message written for the model, which the env turns into a failed turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_MAX_CALL_CHARS = 20_000
"""Characters; a longer code block / call is rejected as a failed turn instead of being run."""


@dataclass(frozen=True)
class ToolCall:
    """One call: the tool's name and its arguments (``{"code": ...}`` for the python tool)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParseResult:
    """``calls`` found in the turn; ``error`` is set (and calls empty) when the turn tried and failed."""

    calls: tuple[ToolCall, ...] = ()
    error: str | None = None

    @property
    def attempted(self) -> bool:
        return bool(self.calls) or self.error is not None


def clean_text(text: str) -> str:
    """Make text safe to send anywhere: lone surrogates (undecodable bytes) become U+FFFD, NULs go."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


class ToolCallParser(Protocol):
    name: str

    def parse(self, text: str, tools: Mapping[str, Any] | None = None) -> ParseResult: ...

    def instructions(self, tools: Mapping[str, Any]) -> str:
        """Format instructions for the system prompt."""
        ...


_OPEN_FENCE = re.compile(r"```[ \t]*(python3?|py)[ \t]*\r?\n", re.I)
# A closing fence is ``` alone on its line; ``` inside a line (a string, a nested example) does not close.
_CLOSE_FENCE = re.compile(r"^[ \t]*```[ \t]*$", re.M)


class PythonBlockParser:
    """Fenced ```python blocks become calls to the ``python`` tool.

    ``which``: "last" runs the last block of the turn (SimpleTIR), "all" runs them joined in order.
    ``allow_unclosed``: run a final block whose closing fence is missing; inference engines drop the
    stop string, so a policy stopped at "```" leaves exactly that.
    """

    name = "python_block"

    def __init__(
        self,
        *,
        tool_name: str = "python",
        which: str = "last",
        allow_unclosed: bool = True,
        max_chars: int = DEFAULT_MAX_CALL_CHARS,
    ):
        if which not in ("last", "all"):
            raise ValueError(f"which must be 'last' or 'all', got {which!r}")
        self.tool_name = tool_name
        self.which = which
        self.allow_unclosed = allow_unclosed
        self.max_chars = max_chars

    def blocks(self, text: str) -> tuple[list[str], bool]:
        """(code blocks, whether the last one was unclosed)."""
        blocks: list[str] = []
        pos = 0
        while (opened := _OPEN_FENCE.search(text, pos)) is not None:
            body_start = opened.end()
            closed = _CLOSE_FENCE.search(text, body_start)
            if closed is None:
                blocks.append(text[body_start:])
                return blocks, True
            blocks.append(text[body_start : closed.start()].rstrip("\r\n"))
            pos = closed.end()
        return blocks, False

    def parse(self, text: str, tools: Mapping[str, Any] | None = None) -> ParseResult:
        text = clean_text(text)
        blocks, unclosed = self.blocks(text)
        if not blocks:
            return ParseResult()
        if unclosed and not self.allow_unclosed:
            return ParseResult(error="The ```python code block was not closed with ``` on its own line, so it was not run.")
        code = "\n\n".join(blocks) if self.which == "all" else blocks[-1]
        if not code.strip():
            return ParseResult(error="The ```python code block is empty; put the code to run inside it.")
        if len(code) > self.max_chars:
            return ParseResult(
                error=f"The code block is too long ({len(code)} characters, limit {self.max_chars}); it was not run."
            )
        return ParseResult(calls=(ToolCall(self.tool_name, {"code": code}),))

    def instructions(self, tools: Mapping[str, Any]) -> str:
        return (
            "To run Python, write the code in a fenced block:\n```python\nprint(2 + 3)\n```\n"
            'The output comes back as "Code execution result: ...". Use print() to see values.'
        )


_TOOL_CALL = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.S)


class ToolCallTagParser:
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Qwen2.5 / Hermes function calling).

    ``arguments`` may also be a JSON-encoded string (some models emit it so). ``tool_schemas`` maps a
    tool name to its required argument names and types, checked here so wrong types are a failed turn.
    """

    name = "tool_call"

    def __init__(self, *, max_chars: int = DEFAULT_MAX_CALL_CHARS, max_calls: int = 4):
        self.max_chars = max_chars
        self.max_calls = max_calls

    def parse(self, text: str, tools: Mapping[str, Any] | None = None) -> ParseResult:
        text = clean_text(text)
        matches = list(_TOOL_CALL.finditer(text))
        if not matches:
            return ParseResult()
        if len(matches) > self.max_calls:
            return ParseResult(error=f"Too many tool calls in one turn ({len(matches)}, limit {self.max_calls}).")
        calls = []
        for m in matches:
            body = m.group(1).strip()
            if not m.group(2):
                return ParseResult(error="The <tool_call> was not closed with </tool_call>, so it was not run.")
            if not body:
                return ParseResult(error="The <tool_call> is empty; put a JSON object with name and arguments in it.")
            if len(body) > self.max_chars:
                return ParseResult(error=f"The tool call is too long ({len(body)} characters, limit {self.max_chars}).")
            try:
                obj = json.loads(body)
            except (json.JSONDecodeError, RecursionError) as e:
                msg = getattr(e, "msg", "too deeply nested")
                return ParseResult(error=f"The tool call is not valid JSON ({msg}).")
            if not isinstance(obj, dict):
                return ParseResult(error="The tool call must be a JSON object with \"name\" and \"arguments\".")
            name = obj.get("name")
            if not isinstance(name, str) or not name:
                return ParseResult(error='The tool call needs a string "name".')
            args = obj.get("arguments", obj.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    return ParseResult(error='"arguments" must be a JSON object.')
            if not isinstance(args, dict):
                return ParseResult(error='"arguments" must be a JSON object.')
            if tools is not None:
                problem = check_arguments(name, args, tools)
                if problem:
                    return ParseResult(error=problem)
            calls.append(ToolCall(name, args))
        return ParseResult(calls=tuple(calls))

    def instructions(self, tools: Mapping[str, Any]) -> str:
        schemas = "\n".join(json.dumps(t.schema()) for t in tools.values() if hasattr(t, "schema"))
        return (
            "You may call tools. Available tools (JSON schema):\n"
            f"<tools>\n{schemas}\n</tools>\n"
            "To call one, write:\n<tool_call>\n"
            '{"name": "<tool name>", "arguments": {<arguments as JSON>}}\n</tool_call>'
        )


_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


def check_arguments(name: str, args: Mapping[str, Any], tools: Mapping[str, Any]) -> str | None:
    """A message for the model when the call names an unknown tool or has missing / mistyped arguments."""
    tool = tools.get(name)
    if tool is None:
        return f"Unknown tool {name!r}; available: {', '.join(sorted(tools))}."
    params = getattr(tool, "parameters", None) or {}
    props = params.get("properties", {})
    for required in params.get("required", []):
        if required not in args:
            return f"Tool {name!r} needs the argument {required!r}."
    for key, value in args.items():
        if key not in props:
            return f"Tool {name!r} has no argument {key!r}; it takes {', '.join(sorted(props)) or 'none'}."
        want = _JSON_TYPES.get(props[key].get("type", ""))
        if want is not None and (not isinstance(value, want) or (want is not bool and isinstance(value, bool))):
            return f"Argument {key!r} of tool {name!r} must be of type {props[key]['type']}, got {type(value).__name__}."
    return None


PARSERS = {"python_block": PythonBlockParser, "tool_call": ToolCallTagParser}


def make_parser(parser: str | Any) -> Any:
    """A parser instance from a name in ``PARSERS`` or an object with ``parse``."""
    if isinstance(parser, str):
        if parser not in PARSERS:
            raise ValueError(f"unknown tool-call parser {parser!r}; choose one of {sorted(PARSERS)}")
        return PARSERS[parser]()
    if not hasattr(parser, "parse"):
        raise TypeError(f"a tool-call parser needs a parse(text) method, got {parser!r}")
    return parser
