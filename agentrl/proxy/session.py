"""One session = one episode: its calls, merged into as few token sequences (samples) as the prompts allow.

A call's prompt *extends* a sample when the sample's tokens, decoded, are a prefix of the prompt's text (for
a token-id prompt: when the sample's ids are a prefix of it). Then the new prompt is the sample's ids plus
the encoded remainder (the template's turn closing, the new tool/user messages, the generation prompt), and
the completion is appended with its sampled ids and logprobs: the model's tokens are never re-encoded, and a
multi-call episode is one sequence, exactly what the policy conditioned on. Text, not ids, is compared, so a
tokenizer that would split the same text differently is no reason to split the episode.

When no sample is extended, the call starts a new sample (its whole prompt loss-masked) and the reason is
counted, judged against the session's most recent sample:

=====================  =================================================================================
``history_edited``     an earlier message was changed or removed (compaction, truncation, a rewrite)
``response_edited``    an assistant turn the proxy returned came back changed
``template_rerendered`` the messages do extend, but the template renders the earlier part differently
                       (e.g. Qwen3 strips ``<think>`` from earlier turns)
``tools_changed``      the request offers different tools (they are part of the rendered prompt)
``sampling_changed``   temperature / top_p / top_k differ (one sample has one sampling distribution)
``concurrent``         another call extended the same sample while this one was generating
``prompt_changed``     a /v1/completions prompt that extends no sample
=====================  =================================================================================

All samples of a session share its reward; each becomes one :class:`~agentrl.rollout.trajectory.Trajectory`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentrl.inference.base import Backend, Completion
from agentrl.proxy.messages import IssuedTurn, TurnKey
from agentrl.rollout.trajectory import TokenKind, Trajectory

SPLIT_REASONS = ("history_edited", "response_edited", "template_rerendered", "tools_changed", "sampling_changed",
                 "concurrent", "prompt_changed")
Settings = tuple[float, float, int]
"""(temperature, top_p, top_k) a sample's tokens were drawn with."""


@dataclass(frozen=True)
class SessionRules:
    """What the proxy imposes on a session's calls (the training adapter sets them from the rollout config;
    None leaves the request's own value)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    """Tokens per call at most (the request's max_tokens is capped to it)."""
    max_context_tokens: int | None = None
    """Prompt + completion tokens at most; a prompt that leaves no room is refused (context_length_exceeded)."""
    seed: int | None = None
    """Base of per-call seeds (call k samples with a seed mixed from it and k); None: the request's seed."""
    max_calls: int | None = None
    """Model calls per session at most (an episode's turns); later calls are refused (max_turns_exceeded)."""


class Sample:
    """One token sequence of a session: aligned per-token arrays, as in a Trajectory."""

    def __init__(self, prompt_ids: Sequence[int], *, settings: Settings, tools_key: str,
                 split_reason: str | None) -> None:
        n = len(prompt_ids)
        self.token_ids: list[int] = list(prompt_ids)
        self.loss_mask: list[int] = [0] * n
        self.behavior_logprobs: list[float] = [0.0] * n
        self.turn_ids: list[int] = [0] * n
        self.policy_version: list[int] = [-1] * n
        self.token_kinds: list[int] = [TokenKind.PROMPT] * n
        self.prompt_length = n
        self.num_turns = 0
        self.settings = settings
        self.tools_key = tools_key
        self.split_reason = split_reason
        self.conversation: list[dict[str, Any]] | None = None
        """Template messages through the last completion (chat calls), to say why a later call split."""
        self.tool_calls: list[dict[str, Any]] = []
        self._text: tuple[int, str] = (-1, "")

    def __len__(self) -> int:
        return len(self.token_ids)

    def text(self, decode: Callable[[Sequence[int]], str]) -> str:
        """The sequence decoded (cached until it grows)."""
        if self._text[0] != len(self.token_ids):
            self._text = (len(self.token_ids), decode(self.token_ids))
        return self._text[1]

    def extend(self, ids: Sequence[int]) -> None:
        """Prompt tokens between two completions (template framing, tool and user messages): loss-masked."""
        self.token_ids.extend(ids)
        self.loss_mask.extend([0] * len(ids))
        self.behavior_logprobs.extend([0.0] * len(ids))
        self.turn_ids.extend([self.num_turns] * len(ids))
        self.policy_version.extend([-1] * len(ids))
        self.token_kinds.extend([TokenKind.OBSERVATION if self.num_turns else TokenKind.PROMPT] * len(ids))

    def add_completion(self, completion: Completion) -> tuple[int, int]:
        """Append the sampled ids exactly as the backend returned them; returns their [start, end) span."""
        start = len(self.token_ids)
        self.num_turns += 1
        n = len(completion.token_ids)
        self.token_ids.extend(completion.token_ids)
        self.loss_mask.extend([1] * n)
        self.behavior_logprobs.extend(float(x) for x in completion.logprobs)
        self.turn_ids.extend([self.num_turns] * n)
        self.policy_version.extend(completion.versions)  # one per token: an update may land mid-turn
        self.token_kinds.extend([TokenKind.SAMPLED] * n)
        return start, start + n

    def to_trajectory(self, *, excluded: str | None = None, **fields: Any) -> Trajectory:
        """The sample as a Trajectory; an excluded one has every sampled token masked out of the loss."""
        mask, logprobs, kinds = list(self.loss_mask), list(self.behavior_logprobs), list(self.token_kinds)
        if excluded is not None:
            for t, kind in enumerate(kinds):
                if kind == TokenKind.SAMPLED:
                    mask[t], logprobs[t], kinds[t] = 0, 0.0, TokenKind.MASKED
        temperature, top_p, top_k = self.settings
        return Trajectory(token_ids=list(self.token_ids), loss_mask=mask, behavior_logprobs=logprobs,
                          turn_ids=list(self.turn_ids), policy_version=list(self.policy_version),
                          token_kinds=[int(k) for k in kinds], prompt_length=self.prompt_length,
                          num_turns=self.num_turns, tool_calls=list(self.tool_calls), excluded=excluded,
                          temperature=temperature, top_p=top_p, top_k=top_k, **fields)


@dataclass
class Placement:
    """Where a call goes: extending ``sample`` (None: a new sample) with ``prompt_ids``."""

    sample: Sample | None
    prompt_ids: list[int]
    base_length: int
    """Length of ``sample`` when the call was placed (a different length at commit: it grew meanwhile)."""
    split_reason: str | None


@dataclass
class Session:
    id: str
    backend: Backend
    rules: SessionRules = field(default_factory=SessionRules)
    samples: list[Sample] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    issued: dict[TurnKey, IssuedTurn] = field(default_factory=dict)
    splits: Counter = field(default_factory=Counter)
    reward: float | None = None
    refused: str | None = None
    """Why a call was refused by the rules, if one was: "length" (no room left in max_context_tokens) or
    "max_turns" (max_calls reached)."""
    last_text: str | None = None
    """The last completion's text (eos stripped), e.g. the agent's final answer."""
    generate_s: float = 0.0
    created: float = field(default_factory=time.time)
    closed: bool = False

    @property
    def malformed_tool_calls(self) -> int:
        return sum(1 for c in self.calls if c["malformed_tool_call"])

    # -- placing a call ----------------------------------------------------------------------------
    def place(self, *, settings: Settings, tools_key: str, encode: Callable[[str], list[int]],
              decode: Callable[[Sequence[int]], str], text: str | None = None, ids: Sequence[int] | None = None,
              conversation: list[dict[str, Any]] | None = None) -> Placement:
        """The sample this prompt (``text``, or token ``ids``) extends, most recent first; else a new one."""
        for sample in reversed(self.samples):
            if sample.settings != settings or sample.tools_key != tools_key:
                continue
            if ids is not None:
                if list(ids[: len(sample)]) == sample.token_ids:
                    return Placement(sample, list(ids), len(sample), None)
                continue
            assert text is not None
            prefix = sample.text(decode)
            if text.startswith(prefix):
                return Placement(sample, sample.token_ids + encode(text[len(prefix):]), len(sample), None)
        prompt = list(ids) if ids is not None else encode(text or "")
        reason = self._why_new(settings, tools_key, conversation) if self.samples else None
        return Placement(None, prompt, 0, reason)

    def _why_new(self, settings: Settings, tools_key: str, conversation: list[dict[str, Any]] | None) -> str:
        last = self.samples[-1]
        if last.settings != settings:
            return "sampling_changed"
        if last.tools_key != tools_key:
            return "tools_changed"
        if conversation is None or last.conversation is None:
            return "prompt_changed"
        before = last.conversation
        if conversation[: len(before)] == before:
            return "template_rerendered"
        at = next((i for i, (a, b) in enumerate(zip(conversation, before, strict=False)) if a != b), None)
        if at is not None and before[at]["role"] == "assistant" and conversation[at]["role"] == "assistant":
            return "response_edited"
        return "history_edited"

    def commit(self, placement: Placement, completion: Completion, *, settings: Settings, tools_key: str,
               conversation: list[dict[str, Any]] | None) -> tuple[int, Sample, tuple[int, int], str | None]:
        """Record the completion; returns (sample index, sample, completion span, split reason or None)."""
        sample, reason = placement.sample, placement.split_reason
        if sample is not None and len(sample) != placement.base_length:
            sample, reason = None, "concurrent"
        if sample is None:
            sample = Sample(placement.prompt_ids, settings=settings, tools_key=tools_key, split_reason=reason)
            self.samples.append(sample)
            if reason is not None:
                self.splits[reason] += 1
        else:
            sample.extend(placement.prompt_ids[len(sample):])
        span = sample.add_completion(completion)
        sample.conversation = conversation
        return self.samples.index(sample), sample, span, reason

    # -- the record --------------------------------------------------------------------------------
    def trajectories(self, **fields: Any) -> list[Trajectory]:
        """One Trajectory per sample, all with the same episode-level ``fields`` (reward, stop reason, ids...;
        the stop reason defaults to ``stop``: the agent ended the episode).

        ``info`` gets the session id, the sample's index and why it split.
        """
        info = dict(fields.pop("info", {}) or {})
        return [sample.to_trajectory(info={**info, "session": self.id, "sample": k,
                                           "split_reason": sample.split_reason}, **fields)
                for k, sample in enumerate(self.samples)]

    def summary(self) -> dict[str, Any]:
        return {"session": self.id, "calls": len(self.calls), "samples": len(self.samples),
                "splits": dict(self.splits), "malformed_tool_calls": self.malformed_tool_calls,
                "reward": self.reward, "refused": self.refused}
