"""In-process Hugging Face backend with dynamic batching (the CPU default).

Concurrent ``generate`` calls from many episodes land in one queue. A dedicated worker thread takes every
request waiting there (up to ``max_batch_size``, those sharing the first one's temperature/top-p/top-k),
left-pads them into one batch and decodes it step by step with a KV cache; rows leave the batch as they
finish, and requests that arrive meanwhile join the next batch. The forward passes run in that thread
(torch releases the GIL inside its kernels), so the asyncio event loop is never blocked by the model.

Sampling follows the convention in :mod:`agentrl.inference.base`: each token is drawn from
``alp.logprobs.sampling_distribution`` (temperature, then top-k / top-p with renormalisation) and its
logprob under that same distribution is returned, so the learner's recomputation matches.

Weight updates wait for the batch in flight (every completion then has one version), unless
``allow_partial=True`` (partial rollouts): an update then lands between two decoding steps, the rows in
flight continue under the new weights with the KV cache they have, and every token reports the version of
the weights that sampled it (``Completion.token_versions``). A version bump never aborts a request. A PEFT
(LoRA) model takes adapter-only state dicts.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agentrl.inference.base import BackendStats, Completion, SamplingParams

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_GATHER_WINDOW_S = 0.002  # wait this long for more requests before starting a batch
_SEED_MASK = (1 << 63) - 1  # torch generators take a signed 64-bit seed
_YIELD_S = 0.0005  # partial mode: how long the decoding loop sleeps while an update waits for the weights
_STOP_WINDOW_TOKENS = 16  # decode this many trailing tokens (plus the stop string's length) for stop strings


@dataclass
class _Request:
    prompt: list[int]
    sampling: SamplingParams
    seed: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    out_ids: list[int] = field(default_factory=list)
    out_logprobs: list[float] = field(default_factory=list)
    out_versions: list[int] = field(default_factory=list)
    finish: str | None = None

    @property
    def key(self) -> tuple[float, float, int]:
        s = self.sampling
        return (s.temperature, s.top_p, s.top_k)


class HFBackend:
    """Backend over an in-process ``transformers`` causal LM.

    ``copy_model=True`` (default) samples from a private copy, so a learner may update its own model while
    rollouts run; weights reach the backend only through :meth:`update_weights`.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any = None, *, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 gather_window_s: float = DEFAULT_GATHER_WINDOW_S, copy_model: bool = True, seed: int = 0,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 initial_version: int = 0, allow_partial: bool = False) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size} must be >= 1")
        self.model = copy.deepcopy(model) if copy_model else model
        self.model.to(device=device, dtype=dtype).eval()
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        config = self.model.config
        eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
        eos = eos if eos is not None else config.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos]) - {None}
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        self.pad_id: int = pad if pad is not None else (config.pad_token_id or 0)
        self.max_batch_size = max_batch_size
        self.gather_window_s = gather_window_s
        self.allow_partial = allow_partial
        self.threads: int | None = None
        """Torch intra-op threads of the decoding thread (None: torch's setting when the backend started); the
        trainer halves it while rollouts overlap updates on CPU."""
        self._default_threads = torch.get_num_threads()
        self._adapter_only = hasattr(self.model, "peft_config")  # a LoRA model: updates carry adapters only
        self.stats = BackendStats()
        self._version = initial_version  # a resumed run continues its version count
        self._seed_counter = seed * 1_000_003
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._deferred: list[_Request] = []
        self._weights_lock = threading.Lock()
        self._update_wanted = threading.Event()  # partial mode: the decoding loop lets a waiting update in
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name="agentrl-hf-backend", daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> list[Completion]:
        if self._closed:
            raise RuntimeError("HFBackend is closed")
        if not prompt_token_ids:
            raise ValueError("empty prompt: the backend needs at least one prompt token")
        loop = asyncio.get_running_loop()
        requests = []
        for i in range(sampling.n):
            if sampling.seed is not None:
                seed = (sampling.seed * 1_000_003 + i) & _SEED_MASK
            else:
                self._seed_counter += 1
                seed = self._seed_counter & _SEED_MASK
            req = _Request(list(prompt_token_ids), sampling, seed, loop.create_future(), loop)
            requests.append(req)
            self._queue.put(req)
        self.stats.requests += len(requests)
        try:
            return list(await asyncio.gather(*(r.future for r in requests)))
        except asyncio.CancelledError:
            for r in requests:
                r.future.cancel()  # the worker sees it and drops the row at its next step
            raise

    def update_weights(self, weights: dict[str, Any] | str | Path) -> int:
        """Load new weights (a state dict or a checkpoint folder/file) between batches; returns the version."""
        state = _load_state(weights)
        self._update_wanted.set()
        try:
            with self._weights_lock:  # waits for the batch (or, partial, the decoding step) in flight
                missing, unexpected = self.model.load_state_dict(state, strict=False)
                real_missing = [k for k in missing if not k.endswith("lm_head.weight")  # tied embeddings
                                and not self._adapter_only]
                if real_missing or unexpected:
                    raise ValueError(f"weights do not fit the model: missing {real_missing[:5]}, unexpected "
                                     f"{unexpected[:5]}")
                self._version += 1
                return self._version
        finally:
            self._update_wanted.clear()

    async def aupdate_weights(self, weights: dict[str, Any] | str | Path) -> int:
        """:meth:`update_weights` in a thread, so the event loop keeps running rollouts meanwhile."""
        return await asyncio.to_thread(self.update_weights, weights)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- worker thread ---------------------------------------------------------------------------
    def _next_batch(self) -> list[_Request] | None:
        pending = self._deferred
        self._deferred = []
        if not pending:
            first = self._queue.get()
            if first is None:
                return None
            pending = [first]
            time.sleep(self.gather_window_s)  # let concurrent episodes' requests arrive
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            pending.append(item)
        pending = [r for r in pending if not r.future.cancelled()]
        if not pending:
            return []
        key = pending[0].key
        batch = [r for r in pending if r.key == key][: self.max_batch_size]
        chosen = {id(r) for r in batch}
        self._deferred = [r for r in pending if id(r) not in chosen]
        return batch

    def _worker(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            if not batch:
                continue
            if torch.get_num_threads() != (self.threads or self._default_threads):
                torch.set_num_threads(self.threads or self._default_threads)
            start = time.perf_counter()
            try:
                if self.allow_partial:  # updates may land between decoding steps
                    self._run_batch(batch)
                else:
                    with self._weights_lock:
                        self._run_batch(batch)
            except Exception as exc:  # an engine fault fails these requests, never the worker
                log.exception("HF backend batch failed")
                for r in batch:
                    _resolve(r, exc=exc)
                continue
            finally:
                self.stats.busy_s += time.perf_counter() - start
            self.stats.batches += 1
            self.stats.batch_sizes.append(len(batch))
            for r in batch:
                versions = tuple(r.out_versions)
                _resolve(r, result=Completion(r.out_ids, r.out_logprobs, r.finish or "abort", versions[0],
                                              versions if len(set(versions)) > 1 else None))

    def _run_batch(self, batch: list[_Request]) -> None:
        from alp.logprobs import sampling_distribution

        temperature, top_p, top_k = batch[0].key
        lengths = [len(r.prompt) for r in batch]
        width = max(lengths)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):  # left padding: every row's next token sits in the last column
            ids[i, width - len(r.prompt):] = torch.tensor(r.prompt)
            attn[i, width - len(r.prompt):] = 1
        self.stats.prompt_tokens += sum(lengths)
        ids, attn = ids.to(self.device), attn.to(self.device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        generators = [torch.Generator(device="cpu").manual_seed(r.seed) for r in batch]
        active = list(range(len(batch)))  # batch rows still decoding, in cache order
        from transformers import DynamicCache

        cache = DynamicCache()
        out, version = self._forward(input_ids=ids, attention_mask=attn, position_ids=positions, cache=cache,
                                     use_cache=True, logits_to_keep=1)
        next_pos = positions[:, -1:] + 1  # (B, 1)
        step = 0
        while active:
            logits = out.logits[:, -1, :].float()  # (B, V)
            if temperature == 0:
                logp = torch.log_softmax(logits, dim=-1)
                tokens = logp.argmax(dim=-1)  # (B,)
            else:
                logp = sampling_distribution(logits, temperature=temperature, top_p=top_p, top_k=top_k)
                probs = logp.exp()
                tokens = torch.stack([
                    torch.multinomial(probs[j], 1, generator=generators[row])[0] for j, row in enumerate(active)
                ])
            chosen_lp = logp.gather(-1, tokens[:, None])[:, 0]
            keep = []
            for j, row in enumerate(active):
                r = batch[row]
                tok = int(tokens[j])
                r.out_ids.append(tok)
                r.out_logprobs.append(float(chosen_lp[j]))
                r.out_versions.append(version)
                if r.future.cancelled():
                    r.finish = "abort"
                elif tok in self.eos_ids or tok in r.sampling.stop_token_ids or self._hit_stop_string(r):
                    r.finish = "stop"
                elif len(r.out_ids) >= r.sampling.max_new_tokens:
                    r.finish = "length"
                else:
                    keep.append(j)
            step += 1
            self.stats.generated_tokens += len(active)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                attn, next_pos, tokens = attn[index], next_pos[index], tokens[index]
                active = [active[j] for j in keep]
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)  # (B, T+1)
            out, version = self._forward(input_ids=tokens[:, None], attention_mask=attn, position_ids=next_pos,
                                         cache=cache, use_cache=True)
            next_pos = next_pos + 1

    def _forward(self, **inputs: Any) -> tuple[Any, int]:
        """One forward pass and the version of the weights it ran with (under the weights lock when updates
        may land between decoding steps; otherwise the caller holds it for the whole batch)."""
        if not self.allow_partial:
            return self.model(**inputs), self._version
        while self._update_wanted.is_set():  # a lock is not fair: step aside so a waiting update gets in
            time.sleep(_YIELD_S)
        with self._weights_lock:
            return self.model(**inputs), self._version

    def _hit_stop_string(self, r: _Request) -> bool:
        if not r.sampling.stop or self.tokenizer is None:
            return False
        window = _STOP_WINDOW_TOKENS + max(len(s) for s in r.sampling.stop)
        tail = self.tokenizer.decode(r.out_ids[-window:], skip_special_tokens=False)
        return any(s in tail for s in r.sampling.stop)


def _resolve(r: _Request, *, result: Completion | None = None, exc: BaseException | None = None) -> None:
    def settle() -> None:
        if r.future.done():
            return
        if exc is not None:
            r.future.set_exception(exc)
        else:
            r.future.set_result(result)

    try:
        r.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop closed while the request was in flight
        pass


def _load_state(weights: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(weights, dict):
        return weights
    path = Path(weights)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {path}; pass a checkpoint folder saved by save_pretrained")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"weights path {path} does not exist")
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state
