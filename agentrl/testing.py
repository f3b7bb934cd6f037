"""pytest plugin for agentrl users (registered through the ``pytest11`` entry point).

Fixtures:

- ``sandbox`` (session): URL of a sandbox: ``$AGENTRL_SANDBOX_URL`` when set, else an embedded one
  started for the session. While it runs, ``$AGENTRL_SANDBOX_URL`` points at it, so tool envs made in
  tests use it without being told.
- ``sandbox_client``: an async ``tools.client.SandboxClient`` on that sandbox.
- ``tiny_model`` (session) / ``tiny_policy``: the kit's tiny CPU model (``agentrl.tiny.load_tiny``) and a
  ``TinyModelPolicy`` around it.
- ``episode_runner``: the ``run_episodes`` helper below.

Helpers: ``ScriptedPolicy`` (a list of turn texts, or a callable from the messages so far), and
``await run_episodes(env_or_id, policy, n, seed=0, concurrency=16)`` -> list of ``EpisodeRecord``.

An integration test of your own env is then a few lines::

    async def test_my_env(sandbox):
        policy = ScriptedPolicy(["```python\\nprint(6 * 7)\\n```", "\\\\boxed{42}"])
        records = await run_episodes("me/MyEnv-v0", policy, n=8)
        assert all(r.stop_reason == "stop" for r in records)

Async tests run as written, in a project with no pytest configuration: when pytest-asyncio runs in its
default strict mode, the plugin marks each ``async def`` test that no async plugin claims (no
``asyncio``, ``anyio`` or ``trio`` mark) with ``pytest.mark.asyncio``. A project that sets
``asyncio_mode = "auto"`` is left alone; so are async tests of other plugins.

This module stays cheap to import (pytest loads it for every run): envs, tools, torch and
transformers are imported inside the fixtures and helpers that need them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

try:  # strict-mode pytest-asyncio needs its own decorator for async fixtures
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover
    _async_fixture = pytest.fixture

SANDBOX_URL_ENV = "AGENTRL_SANDBOX_URL"
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_NEW_TOKENS = 64

Message = dict[str, str]
PolicyFn = Callable[..., "str | Awaitable[str]"]


@dataclass
class EpisodeRecord:
    """One finished episode as the test sees it."""

    seed: int
    task: dict[str, Any]
    messages: list[Message]
    """The whole conversation: initial messages, then each assistant turn and the observations."""
    rewards: list[float] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    stop_reason: str | None = None
    correct: bool | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def turns(self) -> int:
        return len(self.infos)


class ScriptedPolicy:
    """A policy from a script: a list of turn texts (turn k answers with ``script[k]``; past the end,
    the last one), or a callable ``f(messages)`` / ``f(messages, env)`` returning text (sync or async)."""

    def __init__(self, script: Sequence[str] | PolicyFn):
        if isinstance(script, str):
            script = [script]
        if not callable(script) and not script:
            raise ValueError("ScriptedPolicy needs at least one turn text or a callable")
        self.script = script
        self._wants_env = False
        if callable(script):
            try:
                params = [
                    p
                    for p in inspect.signature(script).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
                self._wants_env = len(params) >= 2
            except (TypeError, ValueError):
                self._wants_env = False

    async def __call__(self, messages: Sequence[Message], env: Any = None) -> str:
        if callable(self.script):
            out = self.script(list(messages), env) if self._wants_env else self.script(list(messages))
            if inspect.isawaitable(out):
                out = await out
            return str(out)
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        return self.script[min(turn, len(self.script) - 1)]


class TinyModelPolicy:
    """Generates each turn with an HF causal LM through its chat template (greedy by default).

    Generation runs in a worker thread under a lock (one model, many concurrent episodes).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        seed: int = 0,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self._lock = threading.Lock()

    def generate(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None = None) -> str:
        """One turn; ``tools``: the env's function schemas, rendered by the chat template."""
        import torch

        extra = {"tools": list(tools)} if tools is not None else {}
        prompt = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False, **extra)
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self._lock, torch.no_grad():
            if self.temperature > 0:
                torch.manual_seed(self.seed)
            out = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                pad_token_id=pad,
            )
        new = out[0, enc["input_ids"].shape[1] :]
        return self.tokenizer.decode(new, skip_special_tokens=True)

    async def __call__(self, messages: Sequence[Message], env: Any = None) -> str:
        return await asyncio.to_thread(self.generate, messages, getattr(env, "tool_schemas", None))


def _env_factory(env_or_id: Any, env_kwargs: dict[str, Any] | None) -> tuple[Callable[[], Any], bool]:
    """(factory, shared): a str id / ``module:Class`` or a zero-arg callable gives a fresh env per
    episode; an env instance is reused, so its episodes run one at a time."""
    if isinstance(env_or_id, str):
        import envs

        return (lambda: envs.make(env_or_id, **(env_kwargs or {}))), False
    if hasattr(env_or_id, "astep"):
        return (lambda: env_or_id), True
    if callable(env_or_id):
        return (lambda: env_or_id(**(env_kwargs or {}))), False
    raise TypeError(f"run_episodes needs an env id, a factory or an env instance, got {env_or_id!r}")


async def run_episode(env: Any, policy: Callable[..., Awaitable[str]], *, seed: int) -> EpisodeRecord:
    """One episode of ``env`` driven by ``policy(messages, env)``."""
    observation, info = await env.areset(seed=seed)
    record = EpisodeRecord(seed=seed, task=dict(info.get("task", {})), messages=list(observation))
    for _ in range(int(getattr(env, "max_turns", 32)) + 1):
        action = await policy(record.messages, env)
        record.messages.append({"role": "assistant", "content": action})
        observation, reward, terminated, truncated, info = await env.astep(action)
        record.messages.extend(observation)
        record.rewards.append(float(reward))
        record.infos.append(info)
        record.tool_calls.extend(info.get("tool_calls", []))
        if terminated or truncated:
            record.terminated, record.truncated = bool(terminated), bool(truncated)
            record.stop_reason = info.get("stop_reason")
            record.correct = info.get("correct")
            return record
    raise AssertionError(f"episode (seed {seed}) did not end within max_turns + 1 steps")


async def run_episodes(
    env_or_id: Any,
    policy: Callable[..., Awaitable[str]] | Sequence[str],
    n: int,
    *,
    seed: int = 0,
    concurrency: int = DEFAULT_CONCURRENCY,
    env_kwargs: dict[str, Any] | None = None,
) -> list[EpisodeRecord]:
    """Run ``n`` episodes (seeds ``seed .. seed+n-1``), up to ``concurrency`` at once; records in seed order.

    ``policy``: a ScriptedPolicy / TinyModelPolicy / any async ``f(messages, env) -> str``, or a list
    of turn texts (wrapped in ScriptedPolicy).
    """
    if not callable(policy):
        policy = ScriptedPolicy(policy)
    factory, shared = _env_factory(env_or_id, env_kwargs)
    limit = asyncio.Semaphore(1 if shared else max(1, concurrency))

    async def one(i: int) -> EpisodeRecord:
        async with limit:
            env = factory()
            try:
                return await run_episode(env, policy, seed=seed + i)  # type: ignore[arg-type]
            finally:
                if not shared:
                    env.close()

    return list(await asyncio.gather(*(one(i) for i in range(n))))


# ---- async tests without configuration -----------------------------------------------------------------
ASYNC_MARKS = frozenset({"asyncio", "anyio", "trio"})
"""Marks by which an async plugin claims a test; a test with one of them is left to that plugin."""


def _pytest_asyncio_is_strict(config: pytest.Config) -> bool:
    if not config.pluginmanager.has_plugin("asyncio"):
        return False  # no pytest-asyncio: pytest itself says an async plugin is needed
    mode = config.getoption("asyncio_mode", None) or config.getini("asyncio_mode")
    return mode == "strict"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: object) -> None:
    """Mark an unclaimed ``async def`` test for pytest-asyncio in strict mode (see the module docstring).

    Runs before pytest builds the test item (and so before pytest-asyncio looks at its marks); returns
    None so that pytest's own collection goes on.
    """
    if not (inspect.iscoroutinefunction(obj) and collector.istestfunction(obj, name)):
        return None
    marks = {m.name for m in getattr(obj, "pytestmark", [])} | {m.name for m in collector.iter_markers()}
    if not marks & ASYNC_MARKS and _pytest_asyncio_is_strict(collector.config):
        pytest.mark.asyncio(obj)
    return None


# ---- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sandbox() -> Any:
    """URL of a running sandbox for the test session ($AGENTRL_SANDBOX_URL, else an embedded one)."""
    external = os.environ.get(SANDBOX_URL_ENV)
    if external:
        yield external
        return
    from tools.embedded import EmbeddedSandbox

    with EmbeddedSandbox() as box:
        os.environ[SANDBOX_URL_ENV] = box.url
        try:
            yield box.url
        finally:
            os.environ.pop(SANDBOX_URL_ENV, None)


@_async_fixture
async def sandbox_client(sandbox: str) -> Any:
    """An async SandboxClient on the session's sandbox (closed after the test)."""
    from tools.client import SandboxClient

    async with SandboxClient(sandbox) as client:
        yield client


@pytest.fixture(scope="session")
def tiny_model() -> tuple[Any, Any]:
    """(model, tokenizer) of the kit's tiny preset (built locally, cached; no download)."""
    from agentrl.tiny import load_tiny

    return load_tiny("tiny", seed=0)


@pytest.fixture
def tiny_policy(tiny_model: tuple[Any, Any]) -> TinyModelPolicy:
    model, tokenizer = tiny_model
    return TinyModelPolicy(model, tokenizer)


@pytest.fixture
def episode_runner() -> Callable[..., Awaitable[list[EpisodeRecord]]]:
    """The ``run_episodes`` helper, as a fixture."""
    return run_episodes


__all__ = [
    "EpisodeRecord",
    "ScriptedPolicy",
    "TinyModelPolicy",
    "run_episode",
    "run_episodes",
]
