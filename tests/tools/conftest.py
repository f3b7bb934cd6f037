"""Fixtures for the sandbox server tests: one real server on loopback for the whole module set."""

from __future__ import annotations

from collections.abc import Iterator

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
