"""The chat-token bridge: builds an episode's token sequence token-in/token-out.

Rules (DESIGN.md, Trajectory):
- the prompt is the chat template's rendering of the initial messages with the generation prompt, and
  of the env's function schemas when it has any (``tools``: rendered through the template's ``tools``
  argument, and so is every later rendering of the episode);
- the assistant's sampled ids are appended exactly as generated: never decoded and re-encoded;
- observation messages (tool output, env replies) are appended as the *difference* between the template
  rendering with and without them, together with whatever the template closes an assistant turn with
  (for ChatML the ``\\n`` after ``<|im_end|>``); all of it is loss-masked.

Incremental path. Rendering the whole conversation twice per turn costs ~1 ms at 12 messages and grows
with length, so the bridge renders only the new messages behind a fixed three-message anchor
(system, user, assistant). That is exact for templates that render each message on its own, which the
bridge probes once at construction (``ChatBridge.incremental``); a template that fails the probe gets the
full-conversation difference instead (slower, still exact for prefix-stable templates).

Template drift. Some templates rewrite history: Qwen3's strips ``<think>`` blocks from earlier assistant
turns, so the rendering of the finished conversation no longer starts with the tokens the model actually
saw. ``EpisodeTokens.verify()`` compares the decoded sequence with the template's rendering of the whole
conversation (once per episode by default, each turn with ``verify="turn"``). Drift is counted
(``ChatBridge.drift_count``, the trajectory's ``template_drift`` flag, the rollout metric
``rollout/template_drift``) and then handled by ``on_drift``:

- ``"keep"`` (default): keep the sequence as sampled. It is exactly what the policy conditioned on, so
  the training data stays on-policy; it just differs from what the template would render for a fresh
  request (which matters if you later serve the model with that template).
- ``"error"``: raise :class:`TemplateDriftError` (use in tests and when adopting a new template).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from agentrl.rollout.trajectory import TokenKind, Trajectory

log = logging.getLogger(__name__)

Message = dict[str, str]
_SENTINEL = "\u2063agentrl-anchor\u2063"  # invisible separator chars: never produced by a template itself
_ANCHOR: tuple[Message, ...] = (
    {"role": "system", "content": "anchor"},
    {"role": "user", "content": "anchor"},
    {"role": "assistant", "content": _SENTINEL},
)
_PROBE_OBSERVATIONS: tuple[tuple[Message, ...], ...] = (
    ({"role": "tool", "content": "Code execution result: 4\n"},),
    ({"role": "user", "content": "Continue."},),
    ({"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}),
)


class TemplateDriftError(RuntimeError):
    """The chat template renders the finished conversation differently from the tokens sampled."""


class ChatBridge:
    """Turns chat messages into token ids for one tokenizer and its chat template."""

    def __init__(self, tokenizer: Any, *, verify: Literal["episode", "turn", "never"] = "episode",
                 on_drift: Literal["keep", "error"] = "keep") -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "the tokenizer has no chat_template; set tokenizer.chat_template (e.g. ChatML, "
                "agentrl.tiny.CHATML_TEMPLATE) before building a ChatBridge"
            )
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; the bridge needs it to close assistant turns")
        if verify not in ("episode", "turn", "never"):
            raise ValueError(f"verify={verify!r}; expected 'episode', 'turn' or 'never'")
        if on_drift not in ("keep", "error"):
            raise ValueError(f"on_drift={on_drift!r}; expected 'keep' or 'error'")
        self.tokenizer = tokenizer
        self.verify_mode = verify
        self.on_drift = on_drift
        self.eos_token_id: int = tokenizer.eos_token_id
        self.eos_text: str = tokenizer.eos_token
        self.drift_count = 0
        anchor_text = self.render(_ANCHOR)
        at = anchor_text.find(_SENTINEL)
        if at < 0:
            raise ValueError("the chat template drops assistant content; the bridge cannot align turns")
        self._anchor_text = anchor_text
        # What the template writes after an assistant message's content (ChatML: "<|im_end|>\n").
        self.closing_text = anchor_text[at + len(_SENTINEL):]
        self.incremental = all(self._anchor_delta(obs) is not None for obs in _PROBE_OBSERVATIONS)
        # Skeletons: the anchor delta rendered once per tuple of roles with placeholder contents, then
        # filled by string substitution. Valid only if the template copies contents verbatim, which the
        # probes check; per-episode verification catches any content-dependent template behaviour.
        self._skeletons: dict[tuple[str, ...], str | None] = {}
        self.substitution = self.incremental and all(
            self._from_skeleton(obs) == self._anchor_delta(obs) for obs in _PROBE_OBSERVATIONS
        )
        # The Rust tokenizer directly (no per-call Python overhead), if it encodes exactly like the wrapper.
        self._fast = getattr(tokenizer, "backend_tokenizer", None)
        probe = self.render([*_ANCHOR[:2], *_PROBE_OBSERVATIONS[0]], add_generation_prompt=True) + " ü 12"
        if self._fast is not None and (
            self._fast.encode(probe, add_special_tokens=False).ids != tokenizer.encode(probe, add_special_tokens=False)
        ):
            self._fast = None

    # -- rendering -------------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = False,
               tools: Sequence[dict[str, Any]] | None = None) -> str:
        """The template's text; ``tools``: OpenAI function schemas for the template's ``tools`` argument."""
        if tools is None:  # exactly the call without tools: the rendering stays byte-identical
            return self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, tools=list(tools)
        )

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return self._fast.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        if self._fast is not None:
            return self._fast.decode(list(ids), skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None) -> list[int]:
        """The initial prompt: the template's rendering with the generation prompt (and the tools)."""
        return self.encode(self.render(messages, add_generation_prompt=True, tools=tools))

    def _from_skeleton(self, observation: Sequence[Message]) -> str | None:
        roles = tuple(m["role"] for m in observation)
        if roles not in self._skeletons:
            holders = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(observation)]
            self._skeletons[roles] = self._anchor_delta(holders)
        skeleton = self._skeletons[roles]
        if skeleton is None:
            return None
        for i, m in enumerate(observation):
            skeleton = skeleton.replace(f"\ue000{i}\ue001", m["content"], 1)
        return skeleton

    def _anchor_delta(self, observation: Sequence[Message]) -> str | None:
        full = self.render((*_ANCHOR, *observation), add_generation_prompt=True)
        if not full.startswith(self._anchor_text):
            return None
        return full[len(self._anchor_text):]

    def _closing_after(self, sampled_ids: Sequence[int]) -> str:
        """The template's turn-closing text minus what the model already sampled (its eos)."""
        if sampled_ids and sampled_ids[-1] == self.eos_token_id and self.closing_text.startswith(self.eos_text):
            return self.closing_text[len(self.eos_text):]
        return self.closing_text

    def observation_text(self, conversation: Sequence[Message], observation: Sequence[Message],
                         last_sampled_ids: Sequence[int], tools: Sequence[dict[str, Any]] | None = None) -> str:
        """Text to append after an assistant turn: its closing, the observation, the next generation prompt.

        ``conversation`` ends with the assistant message whose ids were ``last_sampled_ids``; ``tools``
        are the episode's function schemas (the incremental path renders behind a tool-less anchor:
        templates render tools in the system turn only, and ``verify`` checks that).
        """
        closing = self._closing_after(last_sampled_ids)
        if self.incremental:
            plain = all(set(m) == {"role", "content"} for m in observation)
            delta = self._from_skeleton(observation) if self.substitution and plain else self._anchor_delta(observation)
            if delta is not None:
                return closing + delta
        before = self.render(conversation, tools=tools)
        after = self.render((*conversation, *observation), add_generation_prompt=True, tools=tools)
        if not after.startswith(before):
            self._drift("appending an observation changed the rendering of earlier messages")
            # Fallback: render the new messages behind the anchor regardless (documented above).
            delta = self.render((*_ANCHOR, *observation), add_generation_prompt=True)[len(self._anchor_text):]
            return closing + delta
        return closing + after[len(before):]

    def _drift(self, why: str) -> None:
        self.drift_count += 1
        if self.on_drift == "error":
            raise TemplateDriftError(f"chat template drift: {why}")
        if self.drift_count == 1:
            log.warning("chat template drift (%s); keeping the sampled sequence as is (on_drift='keep')", why)


class EpisodeTokens:
    """Accumulates one episode's aligned token arrays as turns are sampled and observations arrive."""

    def __init__(self, bridge: ChatBridge, messages: Sequence[Message], *, policy_version: int = 0,
                 tools: Sequence[dict[str, Any]] | None = None) -> None:
        """``tools``: the env's OpenAI function schemas (``env.tool_schemas``), or None."""
        self.bridge = bridge
        self.messages: list[Message] = [dict(m) for m in messages]
        self.tools: list[dict[str, Any]] | None = list(tools) if tools is not None else None
        ids = bridge.prompt_ids(self.messages, self.tools)
        self.token_ids: list[int] = list(ids)
        self.loss_mask: list[int] = [0] * len(ids)
        self.behavior_logprobs: list[float] = [0.0] * len(ids)
        self.turn_ids: list[int] = [0] * len(ids)
        self.policy_version: list[int] = [-1] * len(ids)
        self.token_kinds: list[int] = [TokenKind.PROMPT] * len(ids)
        self.prompt_length = len(ids)
        self.num_turns = 0
        self.drift = False
        self._last_sampled: list[int] = []
        self._last_turn_start = len(ids)
        self._open_turn = False  # an assistant turn was sampled and not yet followed by an observation

    def __len__(self) -> int:
        return len(self.token_ids)

    def add_turn(self, sampled_ids: Sequence[int], logprobs: Sequence[float], *,
                 policy_version: int | Sequence[int]) -> str:
        """Append one assistant turn exactly as sampled; returns its text (eos stripped) for the env.

        ``policy_version``: the version that sampled every token, or one per token (partial rollouts)."""
        if len(sampled_ids) != len(logprobs):
            raise ValueError(f"{len(sampled_ids)} sampled ids but {len(logprobs)} logprobs")
        versions = [policy_version] * len(sampled_ids) if isinstance(policy_version, int) else list(policy_version)
        if len(versions) != len(sampled_ids):
            raise ValueError(f"{len(sampled_ids)} sampled ids but {len(versions)} policy versions")
        if self._open_turn:
            raise RuntimeError("add_turn twice without an observation in between")
        self.num_turns += 1
        self._last_turn_start = len(self.token_ids)
        self.token_ids.extend(sampled_ids)
        self.loss_mask.extend([1] * len(sampled_ids))
        self.behavior_logprobs.extend(float(x) for x in logprobs)
        self.turn_ids.extend([self.num_turns] * len(sampled_ids))
        self.policy_version.extend(versions)
        self.token_kinds.extend([TokenKind.SAMPLED] * len(sampled_ids))
        self._last_sampled = list(sampled_ids)
        body = self._last_sampled
        if body and body[-1] == self.bridge.eos_token_id:
            body = body[:-1]
        text = self.bridge.decode(body)
        self.messages.append({"role": "assistant", "content": text})
        self._open_turn = True
        return text

    def mask_last_turn(self) -> None:
        """Keep the last sampled turn in the sequence but out of the loss (void turn, infra failure)."""
        for t in range(self._last_turn_start, self._last_turn_start + len(self._last_sampled)):
            self.loss_mask[t] = 0
            self.behavior_logprobs[t] = 0.0
            self.token_kinds[t] = TokenKind.MASKED

    def mask_all(self) -> None:
        """Take every sampled token out of the loss (an episode lost to an infrastructure failure)."""
        for t, kind in enumerate(self.token_kinds):
            if kind == TokenKind.SAMPLED:
                self.loss_mask[t] = 0
                self.behavior_logprobs[t] = 0.0
                self.token_kinds[t] = TokenKind.MASKED

    def observation_ids(self, observation: Sequence[Message]) -> list[int]:
        """Ids that :meth:`add_observation` would append (lets the caller check a token budget first)."""
        text = self.bridge.observation_text(self.messages, observation, self._last_sampled, self.tools)
        return self.bridge.encode(text)

    def add_observation(self, observation: Sequence[Message], ids: Sequence[int] | None = None) -> list[int]:
        """Append the observation (and the template's framing) loss-masked; returns the appended ids."""
        if not self._open_turn:
            raise RuntimeError("add_observation needs a sampled assistant turn before it")
        ids = list(ids) if ids is not None else self.observation_ids(observation)
        self.token_ids.extend(ids)
        self.loss_mask.extend([0] * len(ids))
        self.behavior_logprobs.extend([0.0] * len(ids))
        self.turn_ids.extend([self.num_turns] * len(ids))
        self.policy_version.extend([-1] * len(ids))
        self.token_kinds.extend([TokenKind.OBSERVATION] * len(ids))
        self.messages.extend(dict(m) for m in observation)
        self._open_turn = False
        if self.bridge.verify_mode == "turn":
            self.verify()
        return ids

    def verify(self) -> bool:
        """Check the sequence against the template's rendering of the whole conversation.

        Compared as text (decoded ids vs rendering), so a tokenizer that would split the same text
        differently is not drift; a template that renders history differently is.
        """
        actual = self.bridge.decode(self.token_ids)
        if self._open_turn:
            expected = self.bridge.render(self.messages, tools=self.tools)
            actual += self.bridge._closing_after(self._last_sampled)
        else:
            expected = self.bridge.render(self.messages, add_generation_prompt=True, tools=self.tools)
        if actual == expected:
            return True
        if not self.drift:
            self.drift = True
            at = next((i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b),
                      min(len(actual), len(expected)))
            self.bridge._drift(
                f"sequence and template rendering differ from character {at}: "
                f"sampled ...{actual[max(0, at - 20):at + 20]!r} vs template ...{expected[max(0, at - 20):at + 20]!r}"
            )
        return False

    def to_trajectory(self, **fields: Any) -> Trajectory:
        """The finished record; verifies against the template first unless verify='never'."""
        if self.bridge.verify_mode != "never":
            self.verify()
        return Trajectory(
            token_ids=list(self.token_ids),
            loss_mask=list(self.loss_mask),
            behavior_logprobs=list(self.behavior_logprobs),
            turn_ids=list(self.turn_ids),
            policy_version=list(self.policy_version),
            token_kinds=[int(k) for k in self.token_kinds],
            prompt_length=self.prompt_length,
            num_turns=self.num_turns,
            template_drift=self.drift,
            **fields,
        )
