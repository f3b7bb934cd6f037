"""Fixtures for the attack suite: a real server on loopback, and after every attack a check that the
server still answers correctly and that nothing the attack started is still running."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from tools.client import SyncSandboxClient
from tools.embedded import EmbeddedSandbox

UID_BASE = 1_400_000_000
MAX_SESSIONS = 4
WORKERS = 2
UIDS_PER_WORKER = MAX_SESSIONS // WORKERS + 2
"""Per worker: the one-shot uids of its full and lean zygotes, then one per session slot."""
UID_SPAN = WORKERS * UIDS_PER_WORKER
ONE_SHOT_UIDS = {UID_BASE + w * UIDS_PER_WORKER + image for w in range(WORKERS) for image in (0, 1)}
SETTLE_TIMEOUT = 10.0


def sandbox_processes() -> dict[int, list[int]]:
    """uid -> pids of every process on the host running as one of this server's sandbox uids."""
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                uid_line = next(line for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        uid = int(uid_line.split()[1])
        if UID_BASE <= uid < UID_BASE + UID_SPAN:
            found.setdefault(uid, []).append(int(entry))
    return found


def leftovers() -> dict[int, list[int]]:
    """Processes beyond the one idle pre-forked spare each zygote keeps under its one-shot uid.

    A zygote tears a finished request down (kills every process of the uid and reaps the last of them)
    before it forks the next spare, so a one-shot uid never holds a remnant and a spare at once."""
    return {uid: pids for uid, pids in sandbox_processes().items() if uid not in ONE_SHOT_UIDS or len(pids) > 1}


def describe(found: dict[int, list[int]]) -> list[str]:
    lines = []
    for pids in found.values():
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                lines.append(f"{stat[:80]} | {cmd[:120]}")
            except OSError:
                lines.append(f"{pid} gone")
    return lines


@pytest.fixture(scope="session")
def server() -> Iterator[EmbeddedSandbox]:
    with EmbeddedSandbox(workers=WORKERS, max_sessions=MAX_SESSIONS, uid_base=UID_BASE) as s:
        yield s


@pytest.fixture
def sandbox(server: EmbeddedSandbox) -> Iterator[SyncSandboxClient]:
    with SyncSandboxClient(server.url, timeout=60.0) as client:
        yield client
        # After each attack: the server still answers correctly...
        nonce = uuid.uuid4().hex
        r = client.run_code(f"print('{nonce}')")
        assert r.run_result is not None and r.run_result.stdout == f"{nonce}\n", r
        # ...and no process the attack started is left (killed processes may take a moment to be reaped).
        deadline = time.monotonic() + SETTLE_TIMEOUT
        samples: list[list[str]] = []
        while (found := leftovers()) and time.monotonic() < deadline:
            if len(samples) < 3 or time.monotonic() > deadline - 0.2:
                samples.append(describe(found))
            time.sleep(0.05)
        # Sampled again: a remnant must not reappear beside the next spare (see leftovers()).
        final = leftovers()
        assert final == {}, samples + [describe(final)]
