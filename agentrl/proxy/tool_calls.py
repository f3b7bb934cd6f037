"""A sampled assistant turn -> OpenAI ``content`` and ``tool_calls``, with the kit's parsers (envs.parsers).

Two formats are recognised, in this order:

- Qwen / Hermes tags, ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (``ToolCallTagParser``);
- the kit's fenced python block (``PythonBlockParser``), a call to the function tool named ``fence_tool``
  (default ``python``) with the argument ``{"code": ...}``, when the request offers that tool.

Model output is data: a call the model tried and got wrong (bad JSON, unclosed tag, a tool the request did
not offer) comes back as plain content with ``malformed`` set, which the proxy keeps in the record; the
agent's episode goes on.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.parsers import PythonBlockParser, ToolCallTagParser

DEFAULT_FENCE_TOOL = "python"
_TAG_SPAN = re.compile(r"<tool_call>.*?(</tool_call>|$)", re.S)
_FENCE = "```"


@dataclass(frozen=True)
class ParsedTurn:
    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """OpenAI-shaped calls: ``{"id", "type": "function", "function": {"name", "arguments": json string}}``."""
    malformed: str | None = None
    """Why an attempted call was not returned as a call (the parser's message); None when there was none."""


def parse_turn(text: str, tool_names: Sequence[str], *, mode: str = "auto",
               fence_tool: str = DEFAULT_FENCE_TOOL) -> ParsedTurn:
    """Split ``text`` into content and tool calls for a request offering ``tool_names``.

    ``mode`` is the request's tool choice: "none" returns the text as content without looking for calls.
    """
    if not tool_names or mode == "none":
        return ParsedTurn(text)
    if "<tool_call>" in text:
        result = ToolCallTagParser().parse(text)
        rest = _TAG_SPAN.sub("", text)
    elif fence_tool in tool_names and _FENCE in text:
        result = PythonBlockParser(tool_name=fence_tool).parse(text)
        rest = text[: text.find(_FENCE)]
    else:
        return ParsedTurn(text)
    if result.error is not None:
        return ParsedTurn(text, malformed=result.error)
    if not result.calls:
        return ParsedTurn(text)
    unknown = [c.name for c in result.calls if c.name not in tool_names]
    if unknown:
        return ParsedTurn(text, malformed=f"call to {unknown[0]!r}, which is not among the tools {list(tool_names)}")
    calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
              "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments), ensure_ascii=False)}}
             for c in result.calls]
    return ParsedTurn(rest.strip() or None, calls)
