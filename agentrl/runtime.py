"""What a run needs before its loop starts: the model and tokenizer, the sandbox, the env factory, the rollout
backend and how new weights reach it.

Shared by ``agentrl.train`` and ``agentrl.eval`` so both resolve models and sandboxes the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

EnvFactory = Callable[[], Any]
"""A zero-argument factory of fresh environments (``make_env_factory``)."""

log = logging.getLogger(__name__)

ENV_SANDBOX_URL = "AGENTRL_SANDBOX_URL"
ENV_SANDBOX_TOKEN = "AGENTRL_SANDBOX_TOKEN"
DEFAULT_OUTAGE_SHARE = 0.5
"""A step is checked for a sandbox outage when at least this share of its episodes ended on tool errors."""
DEFAULT_HEALTH_BACKOFF_S = (0.5, 10.0)
"""First and largest wait between /health probes while the sandbox is down, seconds (doubling)."""
COMPOSE_SANDBOX_URL = "http://127.0.0.1:8080"  # where `docker compose up sandbox` publishes it
DEFAULT_PROBE_TIMEOUT_S = 0.5


def load_model(path_or_preset: str | None, *, preset: str = "tiny", seed: int = 0, dtype: str = "float32",
               device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a folder or HF id with ``from_pretrained``; a tiny preset name or None
    builds/loads the local tiny model first (same ``from_pretrained`` path)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path_or_preset = model_folder(path_or_preset, preset=preset, seed=seed)
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
    """True when the sandbox at ``url`` (or any server of a comma-separated pool) answers /health."""
    import httpx

    for one in url.split(","):
        try:
            if httpx.get(f"{one.strip()}/health", timeout=DEFAULT_PROBE_TIMEOUT_S).status_code == 200:
                return True
        except httpx.HTTPError:
            continue
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
    """The sandbox URL to use (a comma-separated list is a pool), exported as $AGENTRL_SANDBOX_URL (and
    ``token`` as $AGENTRL_SANDBOX_TOKEN) for the envs while the block runs.

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


class SandboxOutage(RuntimeError):
    """The sandbox stopped answering and did not come back within sandbox.outage_timeout_s."""


class SandboxWatch:
    """Tells a step lost to a sandbox outage from tool errors a policy causes, and waits the outage out.

    After each step's rollouts: if at least ``DEFAULT_OUTAGE_SHARE`` of the episodes ended with stop reason
    ``tool_error`` and the sandbox's ``/health`` does not answer, it warns, pauses (polling /health with a
    doubling backoff) and answers "redo" once the sandbox is back, so the caller redoes the step instead of
    training on (or counting) the lost one; past ``timeout_s`` it answers "down" (``error`` says why).
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.error = ""

    async def check(self, stop_reasons: list[str], step: int) -> str:
        """"ok", "redo" (the sandbox was down and is back) or "down" (it did not come back in time)."""
        failed = sum(r == "tool_error" for r in stop_reasons)
        if not stop_reasons or failed < DEFAULT_OUTAGE_SHARE * len(stop_reasons):
            return "ok"
        if await asyncio.to_thread(_healthy, self.url):
            return "ok"  # the sandbox answers: the tool errors are the episodes' own
        log.warning("step %d: %d of %d episodes failed on tool errors and the sandbox at %s does not answer "
                    "/health; pausing rollouts until it does (up to %.0f s; sandbox.outage_timeout_s)", step,
                    failed, len(stop_reasons), self.url, self.timeout_s)
        started = time.monotonic()
        wait, longest = DEFAULT_HEALTH_BACKOFF_S
        while not await asyncio.to_thread(_healthy, self.url):
            if time.monotonic() - started >= self.timeout_s:
                self.error = (f"the sandbox at {self.url} did not answer /health for {self.timeout_s:.0f} s "
                              "(sandbox.outage_timeout_s); the last completed step is checkpointed: restart the "
                              "sandbox and continue with --resume")
                return "down"
            await asyncio.sleep(min(wait, max(self.timeout_s - (time.monotonic() - started), 0.0)))
            wait = min(2 * wait, longest)
        log.warning("the sandbox at %s is back after %.0f s; redoing step %d (the lost episodes are not counted)",
                    self.url, time.monotonic() - started, step)
        return "redo"


def overlap_threads(overlap: bool, device: str) -> int | None:
    """Torch intra-op threads for each of the generator and the learner when rollouts overlap updates on CPU
    (half the pool each), else None (leave torch's setting). With the whole pool each, the two oversubscribe the
    cores: on 2 cores overlap gave 1.26x the synchronous episodes/s, with half each 1.3-1.4x
    (benchmarks/pipeline.py)."""
    import torch

    threads = torch.get_num_threads()
    if not overlap or not device.startswith("cpu") or threads < 2:
        return None
    return threads // 2


def make_env_factory(env_id: str, kwargs: dict[str, Any] | None = None) -> EnvFactory:
    """A zero-argument factory of fresh envs; fails now (not per episode) if the id or kwargs are bad.

    ``module:function`` naming an agent function (one with a ``base_url`` parameter) gives an
    ``agentrl.proxy.AgentEnv``: its episodes run the agent against the OpenAI-compatible proxy.
    """
    import envs
    from agentrl.proxy.agent_env import AgentEnv, load_agent

    kwargs = dict(kwargs or {})
    agent = load_agent(env_id)
    if agent is not None:
        return AgentEnv(agent, **kwargs)
    probe = envs.make(env_id, **kwargs)
    probe.close()
    return lambda: envs.make(env_id, **kwargs)


# ---------------------------------------------------------------------------------------------------
# The rollout backend of a training run, and how new weights reach it
# ---------------------------------------------------------------------------------------------------
def model_folder(path_or_preset: str | None, *, preset: str = "tiny", seed: int = 0) -> str:
    """The checkpoint folder (or HF id) ``load_model`` reads for this model setting."""
    from agentrl.tiny import PRESETS, build_tiny

    if path_or_preset is None or path_or_preset in PRESETS:
        return str(build_tiny(path_or_preset or preset, seed=seed))
    return path_or_preset


def apply_lora(model: Any, lora: Any) -> Any:
    """``model`` with trainable LoRA adapters (peft) as ``lora`` (an agentrl.config.LoraConfig) says; only the
    adapters train. ALP's perturbation and every loss see the wrapped model as any other."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


@contextlib.contextmanager
def _only_local_gpu() -> Iterator[None]:
    """Under torchrun on GPUs, the processes vLLM spawns for its engine see this rank's GPU alone (they take the
    first visible device), while this process keeps all of them for NCCL. Elsewhere: nothing changes."""
    local = os.environ.get("LOCAL_RANK")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if local is None or int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= 1:
        yield
        return
    devices = visible.split(",") if visible else [str(i) for i in range(int(os.environ["LOCAL_WORLD_SIZE"]))]
    with _exported("CUDA_VISIBLE_DEVICES", devices[int(local)]):
        yield


def make_backend(config: Any, model: Any, tokenizer: Any, *, start_folder: str, initial_version: int) -> Any:
    """The rollout backend ``config.backend`` names (``config`` is an agentrl.config.TrainConfig), holding the
    weights of ``model`` (in process) or of ``start_folder`` (an engine's or a server's starting point)."""
    import torch

    b = config.backend
    if b.kind == "hf":
        from agentrl.inference.hf import HFBackend

        return HFBackend(model, tokenizer, max_batch_size=b.max_batch_size, seed=config.run.seed,
                         initial_version=initial_version, allow_partial=config.rollout.partial)
    if b.kind == "vllm":
        from agentrl.inference.vllm import VLLMBackend

        lora = config.model.lora
        eager = b.enforce_eager if b.enforce_eager is not None else not torch.cuda.is_available()
        with _only_local_gpu():
            return VLLMBackend(start_folder, dtype=b.dtype, seed=config.run.seed,
                               gpu_memory_utilization=b.gpu_memory_utilization,
                               max_model_len=config.rollout.max_context_tokens, enable_sleep_mode=b.sleep,
                               enforce_eager=eager, initial_version=initial_version, enable_lora=lora.r > 0,
                               max_lora_rank=max(lora.r, 1), bucket_mb=b.bucket_mb, engine_kwargs=b.engine_kwargs)
    from agentrl.inference.openai import OpenAICompletionsBackend

    return OpenAICompletionsBackend(b.urls, model=b.served_model, api_key=b.api_key, weight_sync=b.weight_sync,
                                    health_interval_s=b.health_interval_s, initial_version=initial_version)


class WeightPublisher:
    """After each update, the learner's weights reach the backend by the backend's own mechanism:

    - hf: the state dict, copied in place into the backend's model (adapters only with LoRA);
    - vllm: the named tensors, streamed to the engine in buckets (a LoRA adapter: saved, then loaded);
    - openai: saved with ``save_pretrained`` to ``weights_dir`` (the adapter alone with LoRA), which every
      server reloads.

    A sharded learner's tensors are gathered whole on the way (every rank takes part). When every rank of a
    job has its own backend (``ranks.every_rank``), each rank sends to its own engine, and for servers, which
    the ranks share, the lead rank makes them load the weights and the others adopt the new version.
    """

    def __init__(self, kind: str, model: Any, backend: Any, weights_dir: Path, ranks: Any) -> None:
        self.kind, self.model, self.backend, self.weights_dir, self.ranks = kind, model, backend, Path(weights_dir), ranks
        self.lora = hasattr(model, "peft_config")

    async def publish(self) -> int:
        """Send the current weights; returns the backend's new version."""
        from alp.distributed import full_named_tensors, full_state_dict

        if self.kind == "hf":
            state = full_state_dict(self.model)
            if self.lora:
                state = {k: v for k, v in state.items() if "lora_" in k}
            return await self.backend.aupdate_weights(state)
        if self.kind == "vllm" and not self.lora:
            return await self.backend.aupdate_weights(full_named_tensors(self.model))
        folder = self.weights_dir / (f"adapter-v{self.backend.version + 1}" if self.lora else "policy")
        state = None if self.lora else full_state_dict(self.model)  # peft saves the adapters on its own
        if self.ranks.lead:
            await asyncio.to_thread(self.model.save_pretrained, folder, state_dict=state)
        if self.kind == "openai" and not self.ranks.lead:
            self.ranks.barrier()  # the lead has reloaded the shared servers
            return self.backend.adopt_update(folder)
        if self.kind != "openai":
            self.ranks.barrier()  # the folder is written: every rank's engine loads it
        version = await self.backend.aupdate_weights(folder)
        if self.kind == "openai":
            self.ranks.barrier()
        return version


