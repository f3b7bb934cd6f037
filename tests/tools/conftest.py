"""Fixtures for the sandbox server tests: one real server on loopback for the whole module set."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tools.client import SyncSandboxClient
from tools.embedded import EmbeddedSandbox

TEST_TOKEN = "test-token-123"


@pytest.fixture(scope="session")
def sandbox() -> Iterator[EmbeddedSandbox]:
    with EmbeddedSandbox(workers=2, max_sessions=8, uid_base=1_200_000_000) as server:
        yield server


@pytest.fixture(scope="session")
def sandbox_url(sandbox: EmbeddedSandbox) -> str:
    return sandbox.url


@pytest.fixture
def client(sandbox_url: str) -> Iterator[SyncSandboxClient]:
    with SyncSandboxClient(sandbox_url, timeout=30.0) as c:
        yield c


@pytest.fixture(scope="session")
def token_sandbox() -> Iterator[EmbeddedSandbox]:
    with EmbeddedSandbox(workers=1, token=TEST_TOKEN, preload="math", uid_base=1_300_000_000) as server:
        yield server


def live_descendants(pid: int) -> list[int]:
    """The live (non-zombie) processes below ``pid``, read from /proc (independently of the server's code)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], list(children.get(pid, []))
    while stack:
        p = stack.pop()
        found.append(p)
        stack += children.get(p, [])
    return found


@pytest.fixture
def descendants() -> Callable[[int], list[int]]:
    """``live_descendants`` for tests that count or watch a server's processes."""
    return live_descendants
