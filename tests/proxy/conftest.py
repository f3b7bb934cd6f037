"""Fixtures for the proxy tests: the tiny model behind the real HF backend, scripted backends, servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentrl.inference.base import Completion, SamplingParams
from agentrl.inference.hf import HFBackend

REPO = Path(__file__).resolve().parents[2]


class RecordingBackend(HFBackend):
    """The real HF backend, keeping what it was asked and what it sampled (a spy, not a stand-in)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[list[int], SamplingParams, Completion]] = []

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> list[Completion]:
        out = await super().generate(prompt_token_ids, sampling)
        self.log.append((list(prompt_token_ids), sampling, out[0]))
        return out


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny local preset."""
    from agentrl.runtime import load_model

    return load_model(None)


@pytest.fixture
def hf_backend(tiny):
    model, tokenizer = tiny
    backend = RecordingBackend(model, tokenizer, seed=0)
    yield backend
    backend.close()


@pytest.fixture
def serve():
    """serve(proxy) -> a started ProxyServer, stopped after the test."""
    from agentrl.proxy import ProxyServer

    servers = []

    def start(proxy):
        servers.append(ProxyServer(proxy).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def examples_importable(monkeypatch):
    """The repository root on sys.path, as `python -m agentrl.train` run from it has (examples/ is not
    installed)."""
    monkeypatch.syspath_prepend(str(REPO))
    yield
    for name in [m for m in sys.modules if m == "examples" or m.startswith("examples.")]:
        sys.modules.pop(name, None)
