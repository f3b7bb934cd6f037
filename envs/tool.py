"""Tools an env offers the model. A tool is an async callable from arguments to a ``ToolOutput``.

Write your own by subclassing ``Tool`` (set ``name``, ``description``, ``parameters`` as a JSON
schema, implement ``run``). Raise ``envs.errors.ToolUnavailable`` when the service behind the tool
fails: the env ends the episode with stop_reason "tool_error" rather than scoring the model 0. Any
other problem (bad input, an error in the model's code) is output text for the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import ToolUnavailable

if TYPE_CHECKING:
    from .base import TextEnv

DEFAULT_RUN_TIMEOUT = 3.0
"""Seconds per code execution (the paper's sandbox setting)."""
DEFAULT_MAX_OUTPUT_CHARS = 1024
"""Characters of tool output kept in the observation (~256 tokens, the paper's limit)."""
RESULT_PREFIX = "Code execution result: "


@dataclass
class ToolOutput:
    """What one call produced. ``status``: "ok", "error" (the call ran and failed: exception, non-zero
    exit), "timeout", "memory", or "malformed" (the call could not be parsed)."""

    text: str
    status: str = "ok"
    execution_time: float | None = None
    truncated: bool = False

    def record(self, name: str) -> dict[str, Any]:
        return {"name": name, "status": self.status, "execution_time": self.execution_time, "truncated": self.truncated}


def truncate_text(text: str, max_chars: int | None) -> tuple[str, bool]:
    """Keep at most ``max_chars`` characters: the head (two thirds) and the tail (one third, where a
    traceback's exception line is), with a note of how much was cut in between."""
    if max_chars is None or len(text) <= max_chars:
        return text, False
    tail = max_chars // 3
    head = max_chars - tail
    cut = len(text) - max_chars
    return f"{text[:head]}\n... ({cut} characters truncated) ...\n{text[len(text) - tail:] if tail else ''}", True


def truncate_tokens(text: str, tokenizer: Any, max_tokens: int) -> tuple[str, bool]:
    """Keep the first ``max_tokens`` tokens of ``text`` (SimpleTIR truncates tool output to 256 tokens).
    ``tokenizer``: an HF tokenizer or anything with ``encode(text)`` and ``decode(ids)``."""
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        ids = tokenizer.encode(text)
    if len(ids) <= max_tokens:
        return text, False
    return f"{tokenizer.decode(ids[:max_tokens])}\n... ({len(ids) - max_tokens} tokens truncated)", True


class Tool:
    """Base class for a tool. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    parameters: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "required": []}

    async def run(self, arguments: Mapping[str, Any], env: TextEnv) -> ToolOutput:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """The OpenAI / Qwen function schema (what ``<tools>`` lists)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def format(self, output: ToolOutput) -> str:
        """The observation text for one output."""
        return output.text


class PythonTool(Tool):
    """Runs code in the sandbox and reports ``Code execution result: <stdout/stderr>``."""

    name = "python"
    description = "Run Python 3 code and return what it prints (stdout, or the error)."
    parameters = {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python source to run"}},
        "required": ["code"],
        "additionalProperties": False,
    }

    def __init__(
        self,
        *,
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
        max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS,
        max_output_tokens: int | None = None,
        tokenizer: Any = None,
    ):
        if max_output_tokens is not None and tokenizer is None:
            raise ValueError("max_output_tokens needs a tokenizer (anything with encode/decode)")
        self.run_timeout = run_timeout
        self.max_output_chars = max_output_chars
        self.max_output_tokens = max_output_tokens
        self.tokenizer = tokenizer

    async def run(self, arguments: Mapping[str, Any], env: TextEnv) -> ToolOutput:
        client = env.sandbox_client()  # type: ignore[attr-defined]
        response = await client.run_code(
            str(arguments["code"]), run_timeout=self.run_timeout, session_id=getattr(env, "session_id", None)
        )
        return self.from_response(response)

    def from_response(self, response: Any) -> ToolOutput:
        if response.status == "SandboxError" or response.run_result is None:
            # The sandbox could not run the code at all: an infrastructure failure, not the model's fault.
            raise ToolUnavailable(f"sandbox error: {response.message}")
        result = response.run_result
        status = {
            "Finished": "ok" if (result.return_code in (0, None)) else "error",
            "Error": "error",
            "TimeLimitExceeded": "timeout",
            "MemoryLimitExceeded": "memory",
        }.get(result.status, "error")
        stdout, stderr = result.stdout or "", result.stderr or ""
        if status == "timeout":
            text = stdout + f"TimeoutError: execution exceeded the time limit of {self.run_timeout:g} s"
        elif status == "memory":
            text = stdout + "MemoryError: execution exceeded the memory limit"
        else:
            text = stdout + stderr
        if not text.strip():
            text = "(no output; use print() to show values)"
        text, cut = truncate_text(text, self.max_output_chars)
        if self.max_output_tokens is not None:
            text, cut_tokens = truncate_tokens(text, self.tokenizer, self.max_output_tokens)
            cut = cut or cut_tokens
        return ToolOutput(
            text=text,
            status=status,
            execution_time=result.execution_time,
            truncated=cut or bool(getattr(response, "truncated", False)),
        )

    def format(self, output: ToolOutput) -> str:
        return RESULT_PREFIX + output.text
