"""Stateful sessions: which worker holds each one, and the journal that can rebuild it.

A session lives in one worker's zygote as a long-lived child (like a notebook kernel). The server keeps
every cell that finished in the session's journal; when the child is lost (a cell timed out, the
worker crashed and was restarted), the next request replays the journal into a fresh child first.
Replay reruns code: output is discarded, but side effects and randomness happen again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tools.server.workers import Worker


class TooManySessions(Exception):
    """Every session slot is taken."""


@dataclass
class Session:
    session_id: str
    worker: Worker
    generation: int | None = None
    """The worker generation holding the live child, None when the child must be rebuilt."""
    journal: list[dict[str, Any]] | None = field(default_factory=list)
    """Cells to replay (code, language, args, files); None once it outgrew the journal limit (the session
    can no longer be rebuilt)."""
    journal_bytes: int = 0
    last_used: float = field(default_factory=time.monotonic)
    new: bool = True
    """Not yet used by a request (for the sessions_opened metric)."""

    def needs_replay(self) -> bool:
        return self.generation != self.worker.generation

    def record(self, cell: dict[str, Any], max_bytes: int) -> None:
        if self.journal is None:
            return
        files = cell.get("files") or {}
        self.journal_bytes += len(cell["code"].encode()) + sum(len(v or "") for v in files.values())
        if self.journal_bytes > max_bytes:
            self.journal = None
        else:
            self.journal.append(cell)


class SessionRegistry:
    def __init__(self, workers: list[Worker], max_sessions: int, per_worker: int) -> None:
        self.workers = workers
        self.max_sessions = max_sessions
        self.per_worker = per_worker
        self.sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def get_or_create(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is not None:
            session.last_used = time.monotonic()
            session.new = False
            return session
        if len(self.sessions) >= self.max_sessions:
            raise TooManySessions(f"{len(self.sessions)} sessions are open (limit {self.max_sessions})")
        candidates = [w for w in self.workers if w.sessions < self.per_worker]
        if not candidates:
            raise TooManySessions("no worker has a free session slot")
        worker = min(candidates, key=lambda w: (w.sessions, w.index))
        worker.sessions += 1
        session = Session(session_id, worker)
        self.sessions[session_id] = session
        return session

    def remove(self, session_id: str) -> Session | None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.worker.sessions -= 1
        return session

    def idle(self, timeout: float) -> list[Session]:
        now = time.monotonic()
        return [s for s in self.sessions.values() if now - s.last_used > timeout]
