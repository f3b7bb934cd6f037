"""What a run needs before its loop starts: the model and tokenizer, the sandbox, the env factory.

Shared by ``agentrl.train`` and ``agentrl.eval`` so both resolve models and sandboxes the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

EnvFactory = Callable[[], Any]
"""A zero-argument factory of fresh environments (``make_env_factory``)."""

log = logging.getLogger(__name__)

ENV_SANDBOX_URL = "AGENTRL_SANDBOX_URL"
ENV_SANDBOX_TOKEN = "AGENTRL_SANDBOX_TOKEN"
COMPOSE_SANDBOX_URL = "http://127.0.0.1:8080"  # where `docker compose up sandbox` publishes it
DEFAULT_PROBE_TIMEOUT_S = 0.5


def load_model(path_or_preset: str | None, *, preset: str = "tiny", seed: int = 0, dtype: str = "float32",
               device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a folder or HF id with ``from_pretrained``; a tiny preset name or None
    builds/loads the local tiny model first (same ``from_pretrained`` path)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentrl.tiny import PRESETS, build_tiny

    if path_or_preset is None or path_or_preset in PRESETS:
        path_or_preset = str(build_tiny(path_or_preset or preset, seed=seed))
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_preset)
        model = AutoModelForCausalLM.from_pretrained(path_or_preset, dtype=torch_dtype)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load model {path_or_preset!r}: {exc}. Pass a local checkpoint folder, a cached HF id, "
            "or model.path=null for the tiny local model."
        ) from exc
    if tokenizer.chat_template is None:
        raise ValueError(f"the tokenizer of {path_or_preset!r} has no chat template; agentrl needs one")
    return model.to(device), tokenizer


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=DEFAULT_PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _exported(name: str, value: str | None) -> Iterator[None]:
    """``value`` in the environment variable ``name`` while the block runs (None: left as it is)."""
    previous = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def sandbox_for(url: str | None, *, token: str | None = None) -> Iterator[str]:
    """The sandbox URL to use, exported as $AGENTRL_SANDBOX_URL (and ``token`` as $AGENTRL_SANDBOX_TOKEN)
    for the envs while the block runs.

    Order: ``url``, else $AGENTRL_SANDBOX_URL, else the docker compose service at 127.0.0.1:8080 if it
    answers /health, else an embedded server started here and stopped when the block exits.
    """
    previous = os.environ.get(ENV_SANDBOX_URL)
    embedded = None
    chosen = url or previous
    if chosen is None and _healthy(COMPOSE_SANDBOX_URL):
        chosen = COMPOSE_SANDBOX_URL
    if chosen is None:
        from tools.embedded import EmbeddedSandbox

        embedded = (EmbeddedSandbox(token=token) if token else EmbeddedSandbox()).start()
        chosen = embedded.url
        log.info("started an embedded sandbox at %s", chosen)
    try:
        with _exported(ENV_SANDBOX_URL, chosen), _exported(ENV_SANDBOX_TOKEN, token):
            yield chosen
    finally:
        if embedded is not None:
            embedded.stop()


def make_env_factory(env_id: str, kwargs: dict[str, Any] | None = None) -> EnvFactory:
    """A zero-argument factory of fresh envs; fails now (not per episode) if the id or kwargs are bad."""
    import envs

    kwargs = dict(kwargs or {})
    probe = envs.make(env_id, **kwargs)
    probe.close()
    return lambda: envs.make(env_id, **kwargs)
