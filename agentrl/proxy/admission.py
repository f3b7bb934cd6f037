"""When a ready call goes to the backend: calls that belong together go together.

Agents whose answers came out of one backend batch call again at nearly the same time, but through HTTP one by
one, a few milliseconds apart (the client library's and the proxy's work for 32 calls adds up to ~100 ms on
two busy cores). A backend that admits requests only between batches (HFBackend gathers for 2 ms, then decodes
its batch to the end) would take the first few into a small batch and leave the rest waiting for it to finish:
those calls' latency nearly doubles. So a ready call waits:

- for its *cohort*: the sessions whose previous answers went out in the same burst as this session's (answers
  at most ``burst_gap_s`` apart, chained) and that have not called again yet. Sessions opened together (the
  training adapter opens a step's episodes at once) are a cohort the same way. The wait ends when every member
  has called again or closed, or when none has arrived for ``stall_s`` (a member running a long tool holds the
  others up that long at most);
- a session's first call without a cohort waits until arrivals pause for ``quiet_s``;
- never longer than ``max_wait_s`` after the call arrived.

One event loop owns an Admission (the proxy's server loop); :meth:`opened` and :meth:`forget` may be called
from any thread.
"""

from __future__ import annotations

import asyncio
import threading
import time

DEFAULT_QUIET_S = 0.01
"""A first call without a cohort waits until no call has arrived for this long, seconds."""
DEFAULT_BURST_GAP_S = 0.05
"""Answers at most this far apart (seconds, one after the other) belong to one burst."""
DEFAULT_STALL_S = 0.1
"""A call stops waiting for its cohort when no member has arrived for this long, seconds."""
DEFAULT_MAX_WAIT_S = 1.0
"""The longest any call is held, seconds after it arrived."""


class Admission:
    def __init__(self, *, quiet_s: float = DEFAULT_QUIET_S, burst_gap_s: float = DEFAULT_BURST_GAP_S,
                 stall_s: float = DEFAULT_STALL_S, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> None:
        self.quiet_s = quiet_s
        self.burst_gap_s = burst_gap_s
        self.stall_s = stall_s
        self.max_wait_s = max_wait_s
        self._pending: dict[str, tuple[int, float]] = {}  # answered, not called since: session -> (burst, when)
        self._burst = 0
        self._last_answer = 0.0
        self._last_arrival = 0.0
        self._burst_arrival: dict[int, float] = {}  # burst -> when a member last arrived
        self._arrival: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def arrived(self, session: str) -> tuple[float, int | None]:
        """Note a call's arrival; returns (now, the cohort (burst) of the session's previous answer or None)."""
        self._last_arrival = now = time.monotonic()
        self._loop = asyncio.get_running_loop()
        with self._lock:
            previous = self._pending.pop(session, None)
            if previous is not None:
                self._burst_arrival[previous[0]] = now
        self._wake()
        return now, previous[0] if previous is not None else None

    def opened(self, session: str) -> None:
        """A session was opened for an episode: its first call belongs with the sessions opened with it."""
        self.answered(session)

    def answered(self, session: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_answer > self.burst_gap_s:
                self._burst += 1
                self._burst_arrival[self._burst] = now
            self._last_answer = now
            self._pending[session] = (self._burst, now)
            for s in [s for s, (_, t) in self._pending.items() if now - t > self.max_wait_s]:
                del self._pending[s]  # a session that went quiet holds nobody up any more
            for b in [b for b, t in self._burst_arrival.items() if now - t > self.max_wait_s]:
                del self._burst_arrival[b]

    def forget(self, session: str) -> None:
        """The session is over: its cohort does not wait for it (callable from any thread)."""
        with self._lock:
            self._pending.pop(session, None)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    async def wait(self, arrived: float, burst: int | None) -> None:
        """Return when this call should go to the backend (see the module docstring)."""
        deadline = arrived + self.max_wait_s
        while (now := time.monotonic()) < deadline:
            if burst is not None:
                with self._lock:
                    if not any(b == burst for b, _ in self._pending.values()):
                        return
                    last = self._burst_arrival.get(burst, arrived)
                wake = min(max(last, arrived) + self.stall_s, deadline)
            else:
                wake = min(self._last_arrival + self.quiet_s, deadline)
            if now >= wake:
                return
            if self._arrival is None:
                self._arrival = asyncio.Event()
            try:
                await asyncio.wait_for(self._arrival.wait(), timeout=wake - now)
            except TimeoutError:
                pass

    def _wake(self) -> None:
        if self._arrival is not None:  # the waiting calls look again
            self._arrival.set()
            self._arrival = None
