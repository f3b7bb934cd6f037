"""The OpenAI wire format the proxy speaks: request models, the error object, response bodies.

Requests are parsed by pydantic models that allow unknown fields (new OpenAI parameters are ignored, not
refused), then :func:`check_chat` / :func:`check_completion` refuse, with a 400 naming the parameter, what
the proxy cannot honour without silently changing the sampling distribution (``n > 1``, penalties,
``logit_bias``, structured ``response_format``, ``top_logprobs``). Errors have OpenAI's shape::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "n", "code": null}}

Extensions that vLLM also accepts: ``top_k``, ``return_token_ids`` (the choice carries ``token_ids`` and the
response ``prompt_token_ids``), ``return_tokens_as_token_ids`` (completions logprobs spell tokens as
``token_id:<id>``, so the kit's own ``OpenAICompletionsBackend`` can sample through the proxy) and
``chat_template_kwargs``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_COMPLETIONS_MAX_TOKENS = 16
"""OpenAI's default ``max_tokens`` for /v1/completions."""


class ProxyError(Exception):
    """An error answered to the client as an OpenAI error object with this HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _ERROR_TYPES.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


_ERROR_TYPES = {404: "not_found_error", 409: "conflict_error", 500: "server_error", 503: "server_error"}


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------
class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str
    """JSON-encoded arguments, as OpenAI sends them."""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionSpec


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: dict[str, str]


class SamplingFields(BaseModel):
    """The sampling parameters both endpoints share."""

    model_config = ConfigDict(extra="allow")
    model: str
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    """vLLM extension; -1 or 0 = off."""
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    return_token_ids: bool | None = False

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return tuple(s for s in stops if s)


class ChatRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0)
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(default=DEFAULT_COMPLETIONS_MAX_TOKENS, ge=1)
    logprobs: int | None = Field(default=None, ge=0)
    echo: bool | None = False
    return_tokens_as_token_ids: bool | None = False

    def single_prompt(self) -> str | list[int]:
        """The one prompt of the request (a batch of several is refused: one session, one conversation)."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise ProxyError(400, f"the proxy takes one prompt per request, got {len(prompt)}; send them as "
                                 "separate requests (or separate sessions)", param="prompt")
            prompt = prompt[0]
        if not prompt:
            raise ProxyError(400, "the prompt is empty", param="prompt")
        return prompt  # type: ignore[return-value]


def _check_sampling(req: SamplingFields) -> None:
    if (req.n or 1) != 1:
        raise ProxyError(400, f"n={req.n}: the proxy samples one choice per request (each call is one step of "
                         "an episode); send n requests", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise ProxyError(400, f"{name} is not supported: the recorded logprobs must be those of the plain "
                             "sampling distribution", param=name)
    if req.logit_bias:
        raise ProxyError(400, "logit_bias is not supported: the recorded logprobs must be those of the plain "
                         "sampling distribution", param="logit_bias")


def check_chat(req: ChatRequest) -> None:
    """Refuse what the proxy cannot honour (400 naming the parameter)."""
    _check_sampling(req)
    if req.top_logprobs:
        raise ProxyError(400, "top_logprobs is not supported (the backends return the sampled token's logprob "
                         "only); use logprobs=true", param="top_logprobs")
    fmt = (req.response_format or {}).get("type", "text")
    if fmt != "text":
        raise ProxyError(400, f"response_format {fmt!r} is not supported: the proxy does not constrain "
                         "decoding", param="response_format")
    names = [t.function.name for t in req.tools or []]
    if len(set(names)) != len(names):
        raise ProxyError(400, f"tool names must be unique, got {names}", param="tools")
    choice = req.tool_choice
    if isinstance(choice, NamedToolChoice) and choice.function.get("name") not in names:
        raise ProxyError(400, f"tool_choice names {choice.function.get('name')!r}, which is not among the tools "
                         f"{names}", param="tool_choice")
    if choice == "required" and not names:
        raise ProxyError(400, "tool_choice='required' needs tools", param="tool_choice")
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list):
            for part in m.content:
                if part.get("type") != "text":
                    raise ProxyError(400, f"messages[{i}]: content part of type {part.get('type')!r} is not "
                                     "supported (text only)", param=f"messages.{i}.content")


def check_completion(req: CompletionRequest) -> None:
    _check_sampling(req)
    if req.echo:
        raise ProxyError(400, "echo is not supported", param="echo")


def tool_choice_mode(choice: str | NamedToolChoice | None) -> str:
    """"none", "auto" or "required" (a named function counts as required)."""
    if isinstance(choice, NamedToolChoice):
        return "required"
    return choice or "auto"


# ---------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _response(kind: str, prefix: str, model: str, choice: dict[str, Any], prompt_ids: Sequence[int],
              token_ids: Sequence[int], version: int, return_token_ids: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"id": new_id(prefix), "object": kind, "created": int(time.time()), "model": model,
                            "choices": [choice], "system_fingerprint": f"agentrl-v{version}",
                            "usage": usage(len(prompt_ids), len(token_ids))}
    if return_token_ids:
        choice["token_ids"] = list(token_ids)
        body["prompt_token_ids"] = list(prompt_ids)
    return body


def chat_response(*, model: str, content: str | None, tool_calls: list[dict[str, Any]], finish_reason: str,
                  prompt_ids: Sequence[int], token_ids: Sequence[int], logprobs: list[dict[str, Any]] | None,
                  version: int, return_token_ids: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    choice = {"index": 0, "message": message, "finish_reason": finish_reason,
              "logprobs": {"content": logprobs} if logprobs is not None else None}
    return _response("chat.completion", "chatcmpl", model, choice, prompt_ids, token_ids, version, return_token_ids)


def chat_chunks(body: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """A finished chat completion as stream chunks: role and content, the tool calls, the finish reason.

    The proxy generates the whole turn before answering (the backends return finished completions), so the
    stream carries the same content in a few chunks rather than token by token.
    """
    choice = body["choices"][0]
    message = choice["message"]
    head = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                **extra}

    chunks = [chunk({"role": "assistant", "content": message["content"] or ""})]
    if message.get("tool_calls"):
        chunks.append(chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]}))
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": body["usage"]})
    return chunks


def completion_response(*, model: str, text: str, finish_reason: str, prompt_ids: Sequence[int],
                        token_ids: Sequence[int], logprobs: dict[str, Any] | None, version: int,
                        return_token_ids: bool) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}
    return _response("text_completion", "cmpl", model, choice, prompt_ids, token_ids, version, return_token_ids)


def completion_chunks(body: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    choice = body["choices"][0]
    head = {k: body[k] for k in ("id", "object", "created", "model", "system_fingerprint")}
    chunks = [{**head, "choices": [{"index": 0, "text": choice["text"], "finish_reason": None, "logprobs": None}]},
              {**head, "choices": [{"index": 0, "text": "", "finish_reason": choice["finish_reason"],
                                    "logprobs": None}]}]
    if include_usage:
        chunks.append({**head, "choices": [], "usage": body["usage"]})
    return chunks


def sse(chunks: list[dict[str, Any]]) -> str:
    """Server-sent events, ending with OpenAI's ``[DONE]``."""
    return "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks) + "data: [DONE]\n\n"
