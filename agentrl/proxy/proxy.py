"""The proxy service: sessions, and one OpenAI call = render -> place -> generate -> record -> respond.

    proxy = Proxy(backend, tokenizer)                       # any agentrl.inference Backend
    body = await proxy.chat("episode-7", ChatRequest(...))  # what POST /s/episode-7/v1/chat/completions answers
    proxy.record("episode-7")                               # the session's samples as Trajectory dicts

The HTTP layer is :mod:`agentrl.proxy.app`; the merging rules are :mod:`agentrl.proxy.session`.

Threads: the HTTP server may run on its own thread while the training adapter opens and closes sessions
from another, so the sessions table and every session's record change only under one lock (held for list
work and short encodes, never across an await).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from agentrl.inference.base import Backend, Completion, SamplingParams
from agentrl.proxy.admission import Admission
from agentrl.proxy.messages import IssuedTurn, render, template_messages
from agentrl.proxy.protocol import (
    ChatRequest,
    CompletionRequest,
    ProxyError,
    chat_response,
    check_chat,
    check_completion,
    completion_response,
    tool_choice_mode,
)
from agentrl.proxy.session import Placement, Session, SessionRules, Settings
from agentrl.proxy.tool_calls import DEFAULT_FENCE_TOOL, ParsedTurn, parse_turn
from agentrl.rollout.bridge import ChatBridge
from agentrl.rollout.manager import _mix

DEFAULT_MAX_TOKENS = 512
"""Tokens per chat call when the request names no max_tokens (and the context leaves room)."""
DEFAULT_MAX_SESSIONS = 4096
"""Sessions kept at once; beyond it the least recently used one is forgotten (counted in stats)."""
DEFAULT_MODEL_NAME = "agentrl-policy"

DEFAULT_ADMISSION: Any = object()  # sentinel: a default Admission (None is "off")

RewardFn = Callable[[Session], float]


class Proxy:
    """OpenAI chat/completions calls over a Backend, recorded per session token-in/token-out.

    ``backend``: the default backend of sessions created by their first call (None: sessions must be
    opened with :meth:`open_session`). ``auto_sessions``: create a session on its first call (the standalone
    server) or answer 404 for one not opened (the training adapter, so a late call of a finished episode
    cannot reopen it). ``reward_fn``: scores a session that has no reward when its record is read.

    ``admission``: when a ready call goes to the backend (:mod:`agentrl.proxy.admission`: calls whose answers
    came out of one batch go on together); None sends each at once (an engine that batches continuously, like
    vLLM, gains nothing from waiting).
    """

    def __init__(self, backend: Backend | None, tokenizer: Any, *, model_name: str = DEFAULT_MODEL_NAME,
                 fence_tool: str = DEFAULT_FENCE_TOOL, max_context_tokens: int | None = None,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS, auto_sessions: bool = True,
                 reward_fn: RewardFn | None = None, max_sessions: int = DEFAULT_MAX_SESSIONS,
                 admission: Admission | None = DEFAULT_ADMISSION) -> None:
        if auto_sessions and backend is None:
            raise ValueError("auto_sessions=True needs a default backend for the sessions it creates")
        self.backend = backend
        self.tokenizer = tokenizer
        self.bridge = ChatBridge(tokenizer, verify="never")  # its encode/decode: the tokenizer's fast path
        self.model_name = model_name
        self.fence_tool = fence_tool
        self.max_context_tokens = max_context_tokens
        self.default_max_tokens = default_max_tokens
        self.auto_sessions = auto_sessions
        self.reward_fn = reward_fn
        self.max_sessions = max_sessions
        self.admission = Admission() if admission is DEFAULT_ADMISSION else admission
        self.stats: Counter = Counter()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    # -- sessions ----------------------------------------------------------------------------------
    def open_session(self, session_id: str, *, backend: Backend | None = None,
                     rules: SessionRules | None = None) -> Session:
        backend = backend or self.backend
        if backend is None:
            raise ValueError("open_session needs a backend (the proxy has no default one)")
        with self._lock:
            if session_id in self._sessions:
                raise ProxyError(409, f"session {session_id!r} is already open", param="session")
            session = self._add(Session(session_id, backend, rules or SessionRules()))
        if self.admission is not None:
            self.admission.opened(session_id)
        return session

    def _add(self, session: Session) -> Session:
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)[1].closed = True
            self.stats["sessions_evicted"] += 1
        self._sessions[session.id] = session
        self.stats["sessions"] += 1
        return session

    def session(self, session_id: str, *, create: bool = False) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None and create and self.auto_sessions:
                assert self.backend is not None
                session = self._add(Session(session_id, self.backend))
            if session is None:
                raise ProxyError(404, f"no session {session_id!r} (it was never opened, or it is finished)",
                                 param="session", code="session_not_found")
            self._sessions.move_to_end(session_id)
            return session

    def close_session(self, session_id: str) -> Session:
        """Forget the session and return it; later calls to it get 404."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is None:
                raise ProxyError(404, f"no session {session_id!r}", param="session", code="session_not_found")
            session.closed = True
        if self.admission is not None:
            self.admission.forget(session_id)
        return session

    def set_reward(self, session_id: str, reward: float) -> None:
        self.session(session_id).reward = float(reward)

    def record(self, session_id: str) -> dict[str, Any]:
        """The session's record: its samples as Trajectory dicts, its calls, splits and reward."""
        session = self.session(session_id)
        if session.reward is None and self.reward_fn is not None and session.samples:
            session.reward = float(self.reward_fn(session))
        with self._lock:
            trajectories = session.trajectories(reward=session.reward or 0.0)
            return {**session.summary(), "samples": [t.to_dict() for t in trajectories],
                    "call_records": [dict(c) for c in session.calls]}

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {"open_sessions": len(self._sessions), **dict(self.stats)}

    # -- calls -------------------------------------------------------------------------------------
    async def chat(self, session_id: str, req: ChatRequest) -> dict[str, Any]:
        arrival = self.admission.arrived(session_id) if self.admission is not None else None
        check_chat(req)
        session = self.session(session_id, create=True)
        tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
        tools_key = json.dumps(tools, sort_keys=True) if tools else ""
        with self._lock:
            conversation = template_messages(req.messages, session.issued)
        text = render(self.tokenizer, conversation, tools, req.chat_template_kwargs)
        settings = self._settings(session, req)
        with self._lock:
            placement = session.place(settings=settings, tools_key=tools_key, encode=self.bridge.encode,
                                      decode=self.bridge.decode, text=text, conversation=conversation)
        completion = await self._generate(session, req, placement, settings, req.max_new_tokens(), arrival)
        sampled = self._sampled_text(completion)
        visible = _cut_at_stop(sampled, req.stop_strings())
        names = [t.function.name for t in req.tools or []]
        parsed = parse_turn(visible, names, mode=tool_choice_mode(req.tool_choice), fence_tool=self.fence_tool)
        issued = IssuedTurn(sampled, parsed.content, tuple(
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.tool_calls))
        with self._lock:
            session.issued[issued.key] = issued
            self._record(session, placement, completion, settings, tools_key, parsed, sampled, req,
                         conversation=[*conversation, {"role": "assistant", "content": sampled}])
        finish = "tool_calls" if parsed.tool_calls else completion.finish_reason
        logprobs = None
        if req.logprobs:
            logprobs = [{"token": piece, "logprob": lp, "bytes": list(piece.encode("utf-8")), "top_logprobs": []}
                        for piece, lp in zip(self._pieces(completion.token_ids), completion.logprobs, strict=True)]
        return chat_response(model=req.model, content=parsed.content if parsed.tool_calls else visible,
                             tool_calls=parsed.tool_calls, finish_reason=finish, prompt_ids=placement.prompt_ids,
                             token_ids=completion.token_ids, logprobs=logprobs, version=completion.version,
                             return_token_ids=bool(req.return_token_ids))

    async def complete(self, session_id: str, req: CompletionRequest) -> dict[str, Any]:
        arrival = self.admission.arrived(session_id) if self.admission is not None else None
        check_completion(req)
        prompt = req.single_prompt()
        session = self.session(session_id, create=True)
        settings = self._settings(session, req)
        with self._lock:
            placement = session.place(settings=settings, tools_key="", encode=self.bridge.encode,
                                      decode=self.bridge.decode, text=prompt if isinstance(prompt, str) else None,
                                      ids=prompt if isinstance(prompt, list) else None)
        completion = await self._generate(session, req, placement, settings, req.max_tokens, arrival)
        sampled = self._sampled_text(completion)
        visible = _cut_at_stop(sampled, req.stop_strings())
        with self._lock:
            self._record(session, placement, completion, settings, "", ParsedTurn(visible), sampled, req,
                         conversation=None)
        logprobs = None
        if req.logprobs is not None:
            pieces = ([f"token_id:{t}" for t in completion.token_ids] if req.return_tokens_as_token_ids
                      else self._pieces(completion.token_ids))
            offsets = [0]
            for piece in pieces[:-1]:
                offsets.append(offsets[-1] + len(piece))
            logprobs = {"tokens": pieces, "token_logprobs": list(completion.logprobs), "top_logprobs": None,
                        "text_offset": offsets}
        return completion_response(model=req.model, text=visible, finish_reason=completion.finish_reason,
                                   prompt_ids=placement.prompt_ids, token_ids=completion.token_ids,
                                   logprobs=logprobs, version=completion.version,
                                   return_token_ids=bool(req.return_token_ids))

    # -- steps of a call ---------------------------------------------------------------------------
    @staticmethod
    def _settings(session: Session, req: ChatRequest | CompletionRequest) -> Settings:
        rules = session.rules
        temperature = rules.temperature if rules.temperature is not None else req.temperature
        top_p = rules.top_p if rules.top_p is not None else req.top_p
        top_k = rules.top_k if rules.top_k is not None else req.top_k
        return (1.0 if temperature is None else float(temperature), 1.0 if top_p is None else float(top_p),
                max(0, top_k or 0))

    async def _generate(self, session: Session, req: ChatRequest | CompletionRequest, placement: Placement,
                        settings: Settings, max_tokens: int | None,
                        arrival: tuple[float, int | None] | None) -> Completion:
        rules = session.rules
        if rules.max_calls is not None and len(session.calls) >= rules.max_calls:
            session.refused = "max_turns"
            self.stats["refused/max_turns_exceeded"] += 1
            raise ProxyError(400, f"this session already made its {rules.max_calls} model calls (the episode's "
                             "max_turns)", code="max_turns_exceeded")
        limit = rules.max_context_tokens or self.max_context_tokens
        room = limit - len(placement.prompt_ids) if limit is not None else None
        if room is not None and room < 1:
            session.refused = "length"
            self.stats["refused/context_length_exceeded"] += 1
            raise ProxyError(400, f"the prompt has {len(placement.prompt_ids)} tokens, which leaves no room in the "
                             f"context of {limit} tokens", param="messages", code="context_length_exceeded")
        max_new = max_tokens or self.default_max_tokens
        if rules.max_new_tokens is not None:
            max_new = min(max_new, rules.max_new_tokens)
        if room is not None:
            max_new = min(max_new, room)
        seed = _mix(rules.seed, len(session.calls)) if rules.seed is not None else req.seed
        temperature, top_p, top_k = settings
        sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new,
                                  stop=req.stop_strings(), seed=seed)
        if self.admission is not None and arrival is not None:
            await self.admission.wait(*arrival)
        t0 = time.perf_counter()
        try:
            completion = (await session.backend.generate(placement.prompt_ids, sampling))[0]
        except Exception as exc:  # an engine fault fails this call (5xx: clients retry), never the server
            self.stats["backend_errors"] += 1
            raise ProxyError(503, f"the inference backend failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if self.admission is not None:
                self.admission.answered(session.id)
        session.generate_s += time.perf_counter() - t0
        if completion.finish_reason == "abort":
            raise ProxyError(503, "the backend aborted the generation (shutting down?); retry")
        return completion

    def _record(self, session: Session, placement: Placement, completion: Completion, settings: Settings,
                tools_key: str, parsed: ParsedTurn, sampled: str, req: ChatRequest | CompletionRequest, *,
                conversation: list[dict[str, Any]] | None) -> None:
        if session.closed:  # a late call of a finished episode (its agent outlived the timeout): not recorded
            self.stats["late_calls_dropped"] += 1
            return
        index, sample, span, split = session.commit(placement, completion, settings=settings, tools_key=tools_key,
                                                    conversation=conversation)
        turn = sample.num_turns
        sample.tool_calls.extend({"name": c["function"]["name"], "status": "ok", "turn": turn}
                                 for c in parsed.tool_calls)
        if parsed.malformed:
            sample.tool_calls.append({"name": None, "status": "malformed", "turn": turn, "error": parsed.malformed})
        session.last_text = sampled
        session.calls.append({
            "sample": index, "prompt_tokens": len(placement.prompt_ids), "completion": list(span),
            "new_prompt_tokens": len(placement.prompt_ids) - (placement.base_length if split is None else 0),
            "finish_reason": completion.finish_reason, "policy_version": completion.version, "split": split,
            "tool_calls": [c["function"]["name"] for c in parsed.tool_calls],
            "malformed_tool_call": parsed.malformed, "temperature": settings[0], "top_p": settings[1],
            "top_k": settings[2], "requested": {"model": req.model, "temperature": req.temperature,
                                                "top_p": req.top_p, "seed": req.seed},
        })
        self.stats["calls"] += 1
        if split is not None:
            self.stats[f"split/{split}"] += 1
        if parsed.malformed:
            self.stats["malformed_tool_calls"] += 1

    def _sampled_text(self, completion: Completion) -> str:
        """The turn's text: the sampled ids decoded, minus a final eos (the template writes it back)."""
        ids = completion.token_ids
        if ids and ids[-1] == self.bridge.eos_token_id:
            ids = ids[:-1]
        return self.bridge.decode(ids)

    def _pieces(self, ids: Sequence[int]) -> list[str]:
        """Each token's own text, for logprobs (display only: the record keeps ids)."""
        return [self.bridge.decode([t]) for t in ids]


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text before the first stop string (OpenAI leaves the stop string out; the record keeps it)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]
