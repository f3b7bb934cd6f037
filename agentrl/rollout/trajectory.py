"""The trajectory record: one multi-turn episode as aligned per-token arrays, token-in/token-out.

Every per-token list has the same length (checked at construction):

    token_ids          what the model saw and sampled, in order (prompt, turns, observations)
    loss_mask          1 = sampled by the policy this episode and trained on; 0 = everything else
    behavior_logprobs  logprob of the token under the rollout policy when it was sampled; 0 where mask is 0
    turn_ids           0 for the prompt, k for the k-th assistant turn and the observation that follows it
    policy_version     weights version that produced the token (-1 for tokens no policy sampled)
    token_kinds        TokenKind per token: what the span is, for rendering and for checks

Episode-level fields follow DESIGN.md: reward, per-turn rewards, stop reason, turns, tool calls, timings;
plus whether the episode trains (`excluded`, `trainable`), the sampling settings its tokens were drawn
with (the learner scores under the same ones), its group and sample ids, and the env's own metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar


class TokenKind(IntEnum):
    PROMPT = 0  # the initial prompt rendered by the chat template
    SAMPLED = 1  # sampled by the policy, in the loss
    OBSERVATION = 2  # tool output / env messages and the template tokens framing them
    MASKED = 3  # sampled by the policy but kept out of the loss (void turn, infrastructure failure)


STOP_REASONS = ("stop", "length", "max_turns", "timeout", "tool_error", "error", "aborted")
INFRA_STOP_REASONS = frozenset({"tool_error", "error", "timeout", "aborted"})
"""Stop reasons that say nothing about the policy (the sandbox, the engine or the clock failed): their
episodes are excluded from the loss."""
POLICY_KINDS = frozenset({TokenKind.SAMPLED, TokenKind.MASKED})
"""Token kinds the policy sampled (in the loss or masked out of it)."""


class TrajectoryError(ValueError):
    """A trajectory whose arrays disagree; the message names the field and the lengths."""


@dataclass
class Trajectory:
    token_ids: list[int]
    loss_mask: list[int]
    behavior_logprobs: list[float]
    turn_ids: list[int]
    policy_version: list[int]
    token_kinds: list[int]
    prompt_length: int
    reward: float = 0.0
    stop_reason: str = "stop"
    num_turns: int = 0
    turn_rewards: list[float] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    group_id: int = 0
    sample_id: int = 0
    env_id: str = ""
    task_id: str = ""
    correct: bool | None = None
    template_drift: bool = False
    excluded: str | None = None
    """Why the episode is kept out of the loss (an infrastructure stop reason); None: it trains."""
    temperature: float = 1.0
    """Sampling temperature the policy tokens were drawn with."""
    top_p: float = 1.0
    """Nucleus threshold they were drawn with (1 = off)."""
    top_k: int = 0
    """Top-k they were drawn with (0 = off)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The env's own episode metrics (``info["metrics"]`` of every step, summed)."""
    info: dict[str, Any] = field(default_factory=dict)

    PER_TOKEN: ClassVar[tuple[str, ...]] = (
        "token_ids", "loss_mask", "behavior_logprobs", "turn_ids", "policy_version", "token_kinds",
    )

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        for name in self.PER_TOKEN[1:]:
            if len(getattr(self, name)) != n:
                raise TrajectoryError(
                    f"trajectory arrays misaligned: token_ids has {n} entries but {name} has "
                    f"{len(getattr(self, name))}; every per-token array must have one entry per token"
                )
        if not 0 < self.prompt_length <= n:
            raise TrajectoryError(f"prompt_length={self.prompt_length} must be in 1..{n} (len(token_ids))")
        if self.stop_reason not in STOP_REASONS:
            raise TrajectoryError(f"stop_reason={self.stop_reason!r}; expected one of {STOP_REASONS}")
        for t, (m, kind, lp) in enumerate(zip(self.loss_mask, self.token_kinds, self.behavior_logprobs,
                                              strict=True)):
            if m not in (0, 1):
                raise TrajectoryError(f"loss_mask[{t}]={m}; must be 0 or 1")
            if (m == 1) != (kind == TokenKind.SAMPLED):
                raise TrajectoryError(
                    f"loss_mask[{t}]={m} disagrees with token_kinds[{t}]={TokenKind(kind).name}: "
                    "exactly the SAMPLED tokens are in the loss"
                )
            if m == 0 and lp != 0.0:
                raise TrajectoryError(f"behavior_logprobs[{t}]={lp} on a masked token; must be 0")
        if any(self.loss_mask[: self.prompt_length]):
            raise TrajectoryError("prompt tokens (before prompt_length) must have loss_mask 0")
        if self.excluded is not None and any(self.loss_mask):
            raise TrajectoryError(f"excluded={self.excluded!r} but some tokens have loss_mask 1; an excluded "
                                  "episode has every sampled token masked")

    # -- derived views ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_sampled(self) -> int:
        return sum(self.loss_mask)

    @property
    def trainable(self) -> bool:
        """True when the episode is in the loss: not excluded and at least one token to train on."""
        return self.excluded is None and self.num_sampled > 0

    @property
    def policy_versions(self) -> list[int]:
        """The policy version of every token the policy sampled (in the loss or masked out of it)."""
        return [v for v, kind in zip(self.policy_version, self.token_kinds, strict=True) if kind in POLICY_KINDS]

    @property
    def response_length(self) -> int:
        """Tokens after the prompt (sampled turns and observations)."""
        return len(self.token_ids) - self.prompt_length

    def spans(self) -> Iterator[tuple[TokenKind, int, int]]:
        """Maximal runs of one token kind as (kind, start, end) with end exclusive."""
        start = 0
        for t in range(1, len(self.token_kinds) + 1):
            if t == len(self.token_kinds) or self.token_kinds[t] != self.token_kinds[start]:
                yield TokenKind(self.token_kinds[start]), start, t
                start = t

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        if "excluded" not in data and (data.get("info") or {}).get("excluded"):  # records before 0.2
            data = {**data, "excluded": data.get("stop_reason") or "error",
                    "info": {k: v for k, v in data["info"].items() if k != "excluded"}}
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise TrajectoryError(f"unknown trajectory fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def render(self, tokenizer: Any, *, color: bool = False) -> str:
        """Readable text with each span tagged by kind, e.g. ``[SAMPLED]...[/SAMPLED]``.

        Decoding here is for display only; the record itself never goes through text.
        """
        colors = {TokenKind.PROMPT: "\033[90m", TokenKind.SAMPLED: "\033[32m",
                  TokenKind.OBSERVATION: "\033[36m", TokenKind.MASKED: "\033[33m"}
        parts = []
        for kind, start, end in self.spans():
            text = tokenizer.decode(self.token_ids[start:end])
            if color:
                parts.append(f"{colors[kind]}{text}\033[0m")
            else:
                parts.append(f"[{kind.name}]{text}[/{kind.name}]")
        return "".join(parts)


def write_jsonl(path: str | Path, trajectories: Iterable[Trajectory], *, append: bool = False) -> int:
    """Write one trajectory per line; returns how many were written."""
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for traj in trajectories:
            f.write(traj.to_json() + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[Trajectory]:
    """Read trajectories written by :func:`write_jsonl`; a bad line names its number."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Trajectory.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, TrajectoryError) as exc:
                raise TrajectoryError(f"{path}:{lineno}: {exc}") from exc
    return out
