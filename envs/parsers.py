"""Tool-call parsers: turn one assistant turn (raw text) into tool calls, or explain why it is malformed.

Two formats ship:

- ``PythonBlockParser`` (``"python_block"``): fenced code, SimpleTIR / ReTool style::

      ```python
      print(2 + 2)
      ```

- ``ToolCallTagParser`` (``"tool_call"``): Qwen / Hermes function calling::

      <tool_call>{"name": "python", "arguments": {"code": "print(2 + 2)"}}</tool_call>

  and the OpenAI ``tool_calls`` shape (a call ``{"type": "function", "function": {"name": ...,
  "arguments": "<JSON string>"}}`` inside the tags, or a whole turn that is an assistant message /
  list of such calls as JSON). Arguments are validated against the tool's JSON schema (jsonschema).

Model output is data: a parser never raises on any ``str``; a malformed or empty call comes back as
``ParseResult(error=..., error_kind=...)`` with a message written for the model, which the env turns
into a failed turn (and counts in ``info["metrics"]``).
"""

from __future__ import annotations

import functools
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


ERROR_KINDS = ("format", "invalid_json", "unknown_tool", "invalid_arguments")
"""Why a turn's tool call was malformed: the call's framing (unclosed, empty, too long, too many), its
JSON, its tool name, or its arguments against the tool's schema."""


@dataclass(frozen=True)
class ParseResult:
    """``calls`` found in the turn; ``error`` is set (and calls empty) when the turn tried and failed,
    with ``error_kind`` one of ``ERROR_KINDS``."""

    calls: tuple[ToolCall, ...] = ()
    error: str | None = None
    error_kind: str | None = None

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
    uses_tool_schemas = False
    """The model is told about the python tool in the system prompt, not through the chat template."""

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
            return ParseResult(
                error="The ```python code block was not closed with ``` on its own line, so it was not run.",
                error_kind="format",
            )
        code = "\n\n".join(blocks) if self.which == "all" else blocks[-1]
        if not code.strip():
            return ParseResult(error="The ```python code block is empty; put the code to run inside it.", error_kind="format")
        if len(code) > self.max_chars:
            return ParseResult(
                error=f"The code block is too long ({len(code)} characters, limit {self.max_chars}); it was not run.",
                error_kind="format",
            )
        return ParseResult(calls=(ToolCall(self.tool_name, {"code": code}),))

    def instructions(self, tools: Mapping[str, Any]) -> str:
        return (
            "To run Python, write the code in a fenced block:\n```python\nprint(2 + 3)\n```\n"
            'The output comes back as "Code execution result: ...". Use print() to see values.'
        )


_TOOL_CALL = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.S)


def _fail(kind: str, message: str) -> ParseResult:
    return ParseResult(error=message, error_kind=kind)


class ToolCallTagParser:
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Qwen2.5 / Hermes function calling),
    and OpenAI ``tool_calls`` (see the module docstring).

    ``arguments`` may also be a JSON-encoded string (OpenAI sends it so). With ``tools`` (name -> Tool),
    the name must be one of them and the arguments must match its ``parameters`` JSON schema, so an
    unknown tool or a mistyped argument is a failed turn the model can recover from.
    """

    name = "tool_call"
    uses_tool_schemas = True
    """The env's tools are rendered by the chat template (``env.tool_schemas``), not by this parser."""

    def __init__(self, *, max_chars: int = DEFAULT_MAX_CALL_CHARS, max_calls: int = 4):
        self.max_chars = max_chars
        self.max_calls = max_calls

    def parse(self, text: str, tools: Mapping[str, Any] | None = None) -> ParseResult:
        text = clean_text(text)
        matches = list(_TOOL_CALL.finditer(text))
        if not matches:
            return self._parse_openai_message(text, tools)
        if len(matches) > self.max_calls:
            return _fail("format", f"Too many tool calls in one turn ({len(matches)}, limit {self.max_calls}).")
        calls = []
        for m in matches:
            body = m.group(1).strip()
            if not m.group(2):
                return _fail("format", "The <tool_call> was not closed with </tool_call>, so it was not run.")
            if not body:
                return _fail("format", "The <tool_call> is empty; put a JSON object with name and arguments in it.")
            if len(body) > self.max_chars:
                return _fail("format", f"The tool call is too long ({len(body)} characters, limit {self.max_chars}).")
            obj, problem = _load_json(body)
            if problem is not None:
                return problem
            call = self._call(obj, tools)
            if isinstance(call, ParseResult):
                return call
            calls.append(call)
        return ParseResult(calls=tuple(calls))

    def _parse_openai_message(self, text: str, tools: Mapping[str, Any] | None) -> ParseResult:
        """A turn that is an OpenAI assistant message (``{"tool_calls": [...]}``) or a list of calls."""
        stripped = text.strip()
        if not stripped.startswith(("{", "[")) or '"function"' not in stripped or len(stripped) > self.max_chars:
            return ParseResult()
        obj, problem = _load_json(stripped)
        if problem is not None:
            return ParseResult()  # not JSON: plain prose that happens to start with a brace
        items = obj.get("tool_calls") if isinstance(obj, dict) else obj
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) and "function" in i for i in items):
            return ParseResult()
        if len(items) > self.max_calls:
            return _fail("format", f"Too many tool calls in one turn ({len(items)}, limit {self.max_calls}).")
        calls = []
        for item in items:
            call = self._call(item, tools)
            if isinstance(call, ParseResult):
                return call
            calls.append(call)
        return ParseResult(calls=tuple(calls))

    def _call(self, obj: Any, tools: Mapping[str, Any] | None) -> ToolCall | ParseResult:
        if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
            obj = obj["function"]  # OpenAI: {"id", "type": "function", "function": {"name", "arguments"}}
        if not isinstance(obj, dict):
            return _fail("invalid_json", 'The tool call must be a JSON object with "name" and "arguments".')
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            return _fail("invalid_json", 'The tool call needs a string "name".')
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            args, problem = _load_json(args) if args.strip() else ({}, None)
            if problem is not None:
                return _fail("invalid_json", f'"arguments" of {name!r} is a string but not valid JSON.')
        if not isinstance(args, dict):
            return _fail("invalid_json", '"arguments" must be a JSON object.')
        if tools is not None:
            problem = check_arguments(name, args, tools)
            if problem is not None:
                return problem
        return ToolCall(name, args)

    def instructions(self, tools: Mapping[str, Any]) -> str:
        # The chat template lists the tools and the <tool_call> format (env.tool_schemas -> tools=...).
        return "You may call the tools you are given; each result comes back in a tool message."


def _load_json(text: str) -> tuple[Any, ParseResult | None]:
    try:
        return json.loads(text), None
    except (json.JSONDecodeError, RecursionError) as e:
        msg = getattr(e, "msg", "too deeply nested")
        return None, _fail("invalid_json", f"The tool call is not valid JSON ({msg}).")


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    from jsonschema import validators

    schema = json.loads(schema_json)
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_validator(schema: Mapping[str, Any]) -> Any:
    """A jsonschema validator for a tool's ``parameters`` (compiled once per distinct schema); raises
    ``jsonschema.SchemaError`` for a schema that is itself invalid."""
    return _validator(json.dumps(schema, sort_keys=True))


def check_arguments(name: str, args: Mapping[str, Any], tools: Mapping[str, Any]) -> ParseResult | None:
    """A failed parse for the model when the call names an unknown tool or its arguments do not match
    the tool's JSON schema; None when the call is good."""
    tool = tools.get(name)
    if tool is None:
        return _fail("unknown_tool", f"Unknown tool {name!r}; available: {', '.join(sorted(tools))}.")
    schema = getattr(tool, "parameters", None) or {"type": "object"}
    from jsonschema.exceptions import best_match

    error = best_match(schema_validator(schema).iter_errors(dict(args)))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return _fail(
        "invalid_arguments",
        f"Invalid arguments for tool {name!r}{f' at {where!r}' if where else ''}: {error.message}.",
    )


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
