"""OpenAI chat messages -> the messages the chat template renders, and the rendering.

The one rule that keeps an episode token-in/token-out: an assistant message the proxy itself returned
earlier in the session (recognised by its content and tool-call ids, see :class:`IssuedTurn`) is rendered
as the text the model sampled, not rebuilt from its ``tool_calls``. So a template sees exactly the sampled
turn, and the prompt of the next call can extend the previous prompt + completion. An assistant message
the proxy did not issue (a few-shot example, or one the agent edited) is passed to the template with its
``tool_calls`` in Hugging Face's shape (arguments as an object) and rendered however the template does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentrl.proxy.protocol import Message, ProxyError

TurnKey = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class IssuedTurn:
    """An assistant turn the proxy returned: the sampled text and what the client was told."""

    text: str
    """The sampled ids decoded (eos stripped): what the template renders for this turn."""
    content: str | None
    calls: tuple[tuple[str, str, Any], ...]
    """(id, function name, parsed arguments) of each returned tool call."""

    @property
    def key(self) -> TurnKey:
        return turn_key(self.content, [call_id for call_id, _, _ in self.calls])


def turn_key(content: str | None, call_ids: Sequence[str]) -> TurnKey:
    return (content or "", tuple(call_ids))


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: a string as is, text parts joined by newlines (vLLM's convention), None as ''."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content)


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # kept as the string the client sent; templates that expect an object print it as is


def _issued(message: Message, issued: Mapping[TurnKey, IssuedTurn]) -> IssuedTurn | None:
    """The issued turn this assistant message repeats unchanged, if any."""
    calls = message.tool_calls or []
    content = text_of(message.content) or None
    turn = issued.get(turn_key(content, [c.id for c in calls]))
    if turn is None:
        return None
    sent = [(c.id, c.function.name, _arguments(c.function.arguments)) for c in calls]
    return turn if sent == list(turn.calls) else None


def template_messages(messages: Sequence[Message], issued: Mapping[TurnKey, IssuedTurn]) -> list[dict[str, Any]]:
    """The request's messages as the chat template takes them (see the module docstring)."""
    out: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for m in messages:
        if m.role == "assistant":
            turn = _issued(m, issued)
            if turn is not None:
                out.append({"role": "assistant", "content": turn.text})
                call_names.update({call_id: name for call_id, name, _ in turn.calls})
                continue
            message: dict[str, Any] = {"role": "assistant", "content": text_of(m.content)}
            if m.tool_calls:
                message["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                    for c in m.tool_calls
                ]
                call_names.update({c.id: c.function.name for c in m.tool_calls})
            out.append(message)
        elif m.role == "tool":
            message = {"role": "tool", "content": text_of(m.content)}
            if m.tool_call_id is not None:
                message["tool_call_id"] = m.tool_call_id
                if m.tool_call_id in call_names:
                    message["name"] = call_names[m.tool_call_id]
            out.append(message)
        else:
            message = {"role": "system" if m.role == "developer" else m.role, "content": text_of(m.content)}
            if m.name:
                message["name"] = m.name
            out.append(message)
    return out


def render(tokenizer: Any, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None,
           template_kwargs: Mapping[str, Any] | None = None) -> str:
    """The template's text for the conversation with the generation prompt (what the model continues)."""
    try:
        return tokenizer.apply_chat_template(list(messages), tools=tools or None, tokenize=False,
                                             add_generation_prompt=True, **dict(template_kwargs or {}))
    except Exception as exc:  # jinja2 raises its own errors (raise_exception in templates, undefined values)
        raise ProxyError(400, f"the chat template cannot render these messages: {type(exc).__name__}: {exc}",
                         param="messages") from exc
