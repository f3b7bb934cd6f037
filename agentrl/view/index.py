"""Lazy episode index over RUN_DIR/trajectories/step_*.jsonl: byte offsets plus the fields filters need.

A run can hold tens of thousands of episodes, each a few kB to a few MB of per-token arrays. The viewer
never loads them all: it keeps, per file, one small :class:`EpisodeEntry` per line (byte offset, length
and the scalar fields the episode list filters and shows) and reads a single line with ``seek`` when an
episode is opened. Files are scanned on first use and only the bytes appended since the last scan are
read again, so the index follows a run that is still training.

Reading the scalars does not parse the whole line. A trajectory line is a JSON object whose bulk is the
flat per-token number arrays (``Trajectory.PER_TOKEN``) and ``info`` (which may hold a per-token
``learner_ratio``). :func:`scan_fields` walks the top-level keys, skips flat arrays by jumping to their
closing bracket and stops once every wanted field is found; :func:`scan_fields_plain` (``json.loads``)
is the plain version it falls back to on anything unexpected, and the tests check that the two agree.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

STEP_FILE = re.compile(r"^step_(\d+)\.jsonl$")
"""Trajectory files are ``step_<zero-padded step>.jsonl``; the step is read from the name."""

WANTED = ("reward", "stop_reason", "env_id", "num_turns", "correct", "task_id", "group_id", "sample_id",
          "prompt_length", "template_drift", "token_ids")
"""Top-level fields the index keeps (``token_ids`` only for its length)."""

_FLAT_ARRAYS = frozenset(("token_ids", "loss_mask", "behavior_logprobs", "turn_ids", "policy_version",
                          "token_kinds", "turn_rewards"))
_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


class EpisodeNotFound(LookupError):
    """Asked for an episode or run the index does not have; the message says what exists."""


@dataclass(frozen=True, slots=True)
class EpisodeEntry:
    step: int
    index: int  # line number within the step file (0-based, blank lines not counted)
    offset: int
    length: int
    reward: float | None
    stop_reason: str
    env_id: str
    num_turns: int
    correct: bool | None
    task_id: str
    group_id: int
    sample_id: int
    num_tokens: int
    template_drift: bool

    def summary(self) -> dict[str, Any]:
        return {"step": self.step, "index": self.index, "reward": self.reward, "stop_reason": self.stop_reason,
                "env_id": self.env_id, "num_turns": self.num_turns, "correct": self.correct,
                "task_id": self.task_id, "group_id": self.group_id, "sample_id": self.sample_id,
                "num_tokens": self.num_tokens, "template_drift": self.template_drift}


def scan_fields_plain(line: str) -> dict[str, Any]:
    """The plain version: parse the whole line and pick the wanted fields."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("trajectory line is not a JSON object")
    out = {k: data[k] for k in WANTED if k in data}
    if "token_ids" in out:
        out["token_ids"] = len(out["token_ids"])
    return out


def scan_fields(line: str) -> dict[str, Any]:
    """Fast path of :func:`scan_fields_plain`: same result without parsing the per-token arrays."""
    try:
        return _scan(line)
    except (ValueError, IndexError):
        return scan_fields_plain(line)


def _skip_ws(s: str, i: int) -> int:
    if i < len(s) and s[i] not in _WS:  # compact JSON (write_jsonl): no whitespace, no loop
        return i
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _scan(line: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = _skip_ws(line, 0)
    if line[i] != "{":
        raise ValueError("not an object")
    i = _skip_ws(line, i + 1)
    remaining = set(WANTED)
    while remaining:
        if line[i] == "}":
            break
        key, i = _DECODER.raw_decode(line, i)
        i = _skip_ws(line, i)
        if line[i] != ":":
            raise ValueError("expected ':'")
        i = _skip_ws(line, i + 1)
        if key in _FLAT_ARRAYS and line[i] == "[":
            end = line.index("]", i)  # flat number arrays hold no nested brackets or strings
            if key == "token_ids":
                body = line[i + 1:end].strip()
                out[key] = body.count(",") + 1 if body else 0
            elif key in remaining:
                out[key] = json.loads(line[i:end + 1])
            i = end + 1
        else:
            value, i = _DECODER.raw_decode(line, i)
            if key in remaining:
                out[key] = value
        if key in remaining:
            remaining.discard(key)
        i = _skip_ws(line, i)
        if line[i] == ",":
            i = _skip_ws(line, i + 1)
        elif line[i] != "}":
            raise ValueError("expected ',' or '}'")
    if "token_ids" in out and not isinstance(out["token_ids"], int):
        raise ValueError("token_ids not a flat array")
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _entry(step: int, index: int, offset: int, length: int, fields: dict[str, Any]) -> EpisodeEntry:
    correct = fields.get("correct")
    return EpisodeEntry(
        step=step, index=index, offset=offset, length=length,
        reward=_number(fields.get("reward")),
        stop_reason=str(fields.get("stop_reason") or ""),
        env_id=str(fields.get("env_id") or ""),
        num_turns=int(fields.get("num_turns") or 0),
        correct=correct if isinstance(correct, bool) else None,
        task_id=str(fields.get("task_id") or ""),
        group_id=int(fields.get("group_id") or 0),
        sample_id=int(fields.get("sample_id") or 0),
        num_tokens=int(fields.get("token_ids") or 0),
        template_drift=bool(fields.get("template_drift")),
    )


class _StepFile:
    """Entries of one step file, extended as the file grows (complete lines only)."""

    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step
        self.entries: list[EpisodeEntry] = []
        self.scanned = 0  # bytes consumed so far (always at a line boundary)
        self.mtime_ns = -1
        self.bad_lines = 0

    def refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        size = st.st_size
        if size == self.scanned and st.st_mtime_ns == self.mtime_ns:
            return
        self.mtime_ns = st.st_mtime_ns
        with open(self.path, "rb") as f:
            if size < self.scanned or not self._unchanged(f):
                # Rewritten, not appended to (a resumed run redoes its steps): index it from scratch.
                self.entries, self.scanned, self.bad_lines = [], 0, 0
            f.seek(self.scanned)
            offset = self.scanned
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # a line still being written; picked up on a later refresh
                if raw.strip():
                    try:
                        fields = scan_fields(raw.decode("utf-8"))
                    except (ValueError, UnicodeDecodeError):
                        self.bad_lines += 1
                        fields = {"stop_reason": "unreadable"}
                    self.entries.append(_entry(self.step, len(self.entries), offset, len(raw), fields))
                offset += len(raw)
            self.scanned = offset

    def _unchanged(self, f: BinaryIO) -> bool:
        """Do the first and last indexed lines still sit where the index says, with the same fields?"""
        for e in {id(x): x for x in (self.entries[:1] + self.entries[-1:])}.values():
            f.seek(e.offset)
            raw = f.read(e.length)
            if len(raw) != e.length or not raw.endswith(b"\n"):
                return False
            try:
                same = _entry(e.step, e.index, e.offset, e.length, scan_fields(raw.decode("utf-8"))) == e
            except (ValueError, UnicodeDecodeError):
                same = e.stop_reason == "unreadable"
            if not same:
                return False
        return True


@dataclass(frozen=True)
class EpisodeQuery:
    step: int | None = None
    stop_reason: str | None = None
    env: str | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    correct: bool | None = None
    offset: int = 0
    limit: int = 50

    def matches(self, e: EpisodeEntry) -> bool:
        if self.stop_reason is not None and e.stop_reason != self.stop_reason:
            return False
        if self.env is not None and e.env_id != self.env:
            return False
        if self.min_reward is not None and (e.reward is None or e.reward < self.min_reward):
            return False
        if self.max_reward is not None and (e.reward is None or e.reward > self.max_reward):
            return False
        return self.correct is None or e.correct is self.correct


class EpisodeIndex:
    """Index of one run's trajectory files. Thread-safe; every query refreshes only what it touches."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir) / "trajectories"
        self._files: dict[int, _StepFile] = {}
        self._lock = threading.Lock()

    def steps(self) -> list[int]:
        """Logged steps, from the file names (no file is read)."""
        if not self.dir.is_dir():
            return []
        found = {}
        for path in self.dir.iterdir():
            m = STEP_FILE.match(path.name)
            if m:
                found[int(m.group(1))] = path
        with self._lock:
            for step, path in found.items():
                if step not in self._files or self._files[step].path != path:
                    self._files[step] = _StepFile(path, step)
            for step in set(self._files) - set(found):
                del self._files[step]
        return sorted(found)

    def _entries(self, steps: Iterable[int]) -> list[EpisodeEntry]:
        out: list[EpisodeEntry] = []
        with self._lock:
            for step in steps:
                sf = self._files.get(step)
                if sf is not None:
                    sf.refresh()
                    out.extend(sf.entries)
        return out

    def query(self, q: EpisodeQuery) -> dict[str, Any]:
        """One page of episode summaries plus the total and the values the filters can take."""
        all_steps = self.steps()
        scope = [q.step] if q.step is not None else all_steps
        entries = self._entries(scope)
        matched = [e for e in entries if q.matches(e)]
        page = matched[q.offset: q.offset + q.limit]
        return {
            "total": len(matched),
            "scanned": len(entries),
            "offset": q.offset,
            "limit": q.limit,
            "items": [e.summary() for e in page],
            "facets": {
                "stop_reasons": sorted({e.stop_reason for e in entries}),
                "envs": sorted({e.env_id for e in entries}),
            },
        }

    def entry(self, step: int, index: int) -> EpisodeEntry:
        steps = self.steps()
        if step not in steps:
            raise EpisodeNotFound(f"no trajectories for step {step}; logged steps: {steps[:20]}"
                              f"{' ...' if len(steps) > 20 else ''}")
        entries = self._entries([step])
        if not 0 <= index < len(entries):
            raise EpisodeNotFound(f"step {step} has {len(entries)} episodes; index {index} is out of range")
        return entries[index]

    def read(self, step: int, index: int) -> dict[str, Any]:
        """The full trajectory dict of one episode (one seek + one line read)."""
        e = self.entry(step, index)
        with open(self._files[step].path, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.length)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise EpisodeNotFound(f"step {step} episode {index} is not readable JSON ({exc}); if the file was "
                                  "just rewritten, reload the list") from exc
        if not isinstance(data, dict):
            raise EpisodeNotFound(f"step {step} episode {index} is not a JSON object")
        return data

    def first(self, step: int, n: int) -> list[EpisodeEntry]:
        """The first ``n`` episodes of a step (for the self-contained export)."""
        return self._entries([step])[:n] if step in self.steps() else []
