"""When a ready call goes to the backend: calls that belong together go together.

Agents whose answers came out of one backend batch call again at nearly the same time, but through HTTP one by
one, milliseconds apart. A backend that admits requests only between batches (HFBackend gathers for 2 ms, then
decodes its batch to the end) would take the first few into a small batch and leave the rest waiting for it
to finish: those calls' latency nearly doubles. So a ready call waits, at most ``max_wait_s`` after it
arrived:

- for its *cohort*, the sessions whose previous answers went out in the same burst as this session's (answers
  at most ``burst_gap_s`` apart, chained) and that have not called again yet (a closed session is dropped);
- a session's first call has no cohort: it waits until arrivals pause for ``quiet_s``.

One event loop owns an Admission (the proxy's server loop); :meth:`forget` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import threading
import time

DEFAULT_QUIET_S = 0.01
"""A session's first call waits until no call has arrived for this long, seconds."""
DEFAULT_BURST_GAP_S = 0.02
"""Answers at most this far apart (seconds, one after the other) belong to one burst."""
DEFAULT_MAX_WAIT_S = 0.1
"""The longest any call is held, seconds after it arrived."""


class Admission:
    def __init__(self, *, quiet_s: float = DEFAULT_QUIET_S, burst_gap_s: float = DEFAULT_BURST_GAP_S,
                 max_wait_s: float = DEFAULT_MAX_WAIT_S) -> None:
        self.quiet_s = quiet_s
        self.burst_gap_s = burst_gap_s
        self.max_wait_s = max_wait_s
        self._pending: dict[str, tuple[int, float]] = {}  # answered, not called since: session -> (burst, when)
        self._burst = 0
        self._last_answer = 0.0
        self._last_arrival = 0.0
        self._arrival: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def arrived(self, session: str) -> tuple[float, int | None]:
        """Note a call's arrival; returns (now, the burst of the session's previous answer or None)."""
        self._last_arrival = now = time.monotonic()
        self._loop = asyncio.get_running_loop()
        with self._lock:
            previous = self._pending.pop(session, None)
        self._wake()
        return now, previous[0] if previous is not None else None

    def answered(self, session: str) -> None:
        now = time.monotonic()
        if now - self._last_answer > self.burst_gap_s:
            self._burst += 1
        self._last_answer = now
        with self._lock:
            self._pending[session] = (self._burst, now)
            for s in [s for s, (_, t) in self._pending.items() if now - t > self.max_wait_s]:
                del self._pending[s]  # a session that went quiet holds nobody up any more

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
                    waiting_for = any(b == burst for b, _ in self._pending.values())
                if not waiting_for:
                    return
                wake = deadline
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
