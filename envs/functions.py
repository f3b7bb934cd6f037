"""Tools declared as typed Python functions.

Write a function with type hints and a Google-style docstring; the kit derives its OpenAI function
schema (pydantic builds the JSON schema of the arguments, the docstring gives the descriptions)::

    def lookup(item: str, field: Literal["price", "stock"] = "price") -> str:
        \"\"\"Look up one item of the shop's inventory.

        Args:
            item: The item's name, e.g. "bolt".
            field: Which column to read.
        \"\"\"

    env = ToolEnv(tasks, tools=[lookup, calculator])      # plain functions become FunctionTools

The schema goes to the chat template's ``tools`` argument (``env.tool_schemas``); calls come back in
``<tool_call>`` / OpenAI ``tool_calls`` form, are checked against the schema (``envs.parsers``), and the
function's return value (``str`` as is, anything else as JSON) becomes a tool message.

- A parameter named ``env`` is not part of the schema: it receives the env (task, sandbox...).
- Sync functions run in a worker thread, async ones in the loop; both under ``timeout`` seconds. A
  thread cannot be killed, so a sync function past its timeout keeps running in the background while
  the model gets the timeout message: keep sync tools short, or write them ``async``.
- An exception raised by the function is an error observation for the model (status "error"), except
  ``envs.errors.ToolUnavailable``, which ends the episode as ``tool_error`` (the service failed).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ToolUnavailable
from .tool import DEFAULT_MAX_OUTPUT_CHARS, Tool, ToolOutput, truncate_text

if TYPE_CHECKING:
    from .base import TextEnv

DEFAULT_FUNCTION_TIMEOUT = 10.0
"""Seconds one function call may take before the model is told it timed out."""
ENV_PARAMETER = "env"

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns?|Raises|Yields?|Examples?|Notes?|See Also):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {argument: description}) from a Google-style docstring.

    The description is the text before the first section; the ``Args:`` section gives one entry per
    ``name: text`` (or ``name (type): text``) line, continued by more deeply indented lines.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    description: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        header = _SECTION.match(line.strip()) if not line.startswith((" ", "\t")) else None
        if header:
            section, entry_indent, current = header.group(1).lower(), None, None
            continue
        if section is None:
            description.append(line)
            continue
        if section not in ("args", "arguments", "parameters") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        entry = _ARG_LINE.match(line.strip())
        if entry and (entry_indent is None or indent <= entry_indent):
            entry_indent, current = indent, entry.group(1).lstrip("*")
            args[current] = entry.group(2).strip()
        elif current is not None:
            args[current] = (args[current] + " " + line.strip()).strip()
    paragraphs = "\n".join(description).strip().split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip()), args


def drop_titles(schema: Any) -> Any:
    """Pydantic's generated ``title`` keys are noise in a prompt; properties named "title" stay."""
    if isinstance(schema, dict):
        return {
            k: (drop_titles(v) if k != "properties" else {name: drop_titles(s) for name, s in v.items()})
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [drop_titles(v) for v in schema]
    return schema


def _arguments_model(fn: Callable[..., Any], name: str, docs: Mapping[str, str]) -> Any:
    """A pydantic model of ``fn``'s arguments (without ``env``); extra arguments are forbidden."""
    import pydantic

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as e:  # noqa: BLE001 - unresolved forward references and the like
        raise TypeError(f"cannot read the type hints of {name!r}: {e}") from e
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name == ENV_PARAMETER:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name!r}: *args / **kwargs cannot be described to a model; name each argument")
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"tool {name!r}: positional-only argument {param.name!r}; arguments are passed by name")
        if param.name not in hints:
            raise TypeError(f"tool {name!r}: argument {param.name!r} needs a type hint (it becomes the JSON schema)")
        default = ... if param.default is param.empty else param.default
        # A docstring entry describes the argument; without one, an Annotated[..., Field(description=...)] may.
        described = pydantic.Field(default, description=docs[param.name]) if param.name in docs else default
        fields[param.name] = (hints[param.name], described)
    return pydantic.create_model(
        f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False), **fields
    )


def function_schema(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None) -> dict[str, Any]:
    """The OpenAI function schema of a typed Python function (what the chat template's ``tools`` takes)."""
    return FunctionTool(fn, name=name, description=description).schema()


class FunctionTool(Tool):
    """A ``Tool`` around a typed Python function (sync or async)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = DEFAULT_FUNCTION_TIMEOUT,
        max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS,
    ):
        if not callable(fn):
            raise TypeError(f"FunctionTool needs a function, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "")  # type: ignore[misc]
        if not re.fullmatch(r"[A-Za-z_][\w.-]{0,63}", self.name):
            raise ValueError(f"tool name {self.name!r} must be 1-64 letters, digits, '_', '.', '-'")
        doc_description, docs = parse_docstring(inspect.getdoc(fn))
        self.description = description if description is not None else doc_description  # type: ignore[misc]
        self._model = _arguments_model(fn, self.name, docs)
        self.parameters = drop_titles(self._model.model_json_schema())  # type: ignore[misc]
        self.timeout = timeout
        self.max_output_chars = max_output_chars
        self._wants_env = ENV_PARAMETER in inspect.signature(fn).parameters
        self._is_async = inspect.iscoroutinefunction(fn)

    async def run(self, arguments: Mapping[str, Any], env: TextEnv) -> ToolOutput:
        import pydantic

        try:
            validated = self._model.model_validate(dict(arguments))
        except pydantic.ValidationError as e:
            # The parser checked the schema already; this catches what JSON schema cannot say.
            return ToolOutput(f"Error: invalid arguments for {self.name!r}: {e}", status="error")
        kwargs = {field: getattr(validated, field) for field in type(validated).model_fields}
        if self._wants_env:
            kwargs[ENV_PARAMETER] = env
        try:
            if self._is_async:
                result = await asyncio.wait_for(self.fn(**kwargs), self.timeout)
            else:
                result = await asyncio.wait_for(asyncio.to_thread(self.fn, **kwargs), self.timeout)
        except TimeoutError:
            return ToolOutput(f"Error: {self.name} did not finish within {self.timeout:g} s", status="timeout")
        except ToolUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - the function's failure is an observation for the model
            return ToolOutput(f"Error: {type(e).__name__}: {e}", status="error")
        text, cut = truncate_text(result_text(result), self.max_output_chars)
        return ToolOutput(text, truncated=cut)


def result_text(result: Any) -> str:
    """A function's return value as the tool message's text: ``str`` as is, models and data as JSON."""
    if isinstance(result, str):
        return result
    if result is None:
        return "(no result)"
    if hasattr(result, "model_dump_json"):
        return result.model_dump_json()
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    """A ``Tool`` as is; a plain function wrapped in a ``FunctionTool``."""
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return FunctionTool(obj)
    raise TypeError(f"a tool is a Tool instance or a typed function, got {obj!r}")
