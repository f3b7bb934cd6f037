"""The async rollout manager: many multi-turn tool-integrated episodes at once, token-in/token-out.

For a batch of tasks x ``n_samples`` (GRPO groups) it runs episodes concurrently under a concurrency bound:

    reset env -> prompt ids (bridge) -> loop {
        generate one assistant turn -> env.astep(text) -> append observation tokens (masked)
    } until terminated, truncated, max_turns, the context budget, or the wall-clock limit

and returns one :class:`~agentrl.rollout.trajectory.Trajectory` per episode plus rollout metrics. Every
trajectory carries the sampling settings it was drawn with and its group/sample ids, so packing it for the
learner (agentrl.rollout.packing) needs nothing from the config.

Stop reasons: ``stop`` (the env terminated: an answer), ``max_turns`` (the env or the manager truncated),
``length`` (the context budget ran out), ``timeout`` (wall-clock limit), ``tool_error`` (the sandbox failed
after its retries), ``error`` (the engine failed), ``aborted`` (cancelled).

Infrastructure failures (``tool_error``, ``error``, ``timeout``, ``aborted``) say nothing about the policy,
so their episodes are kept out of the loss: every sampled token is masked and ``Trajectory.excluded`` names
the reason, and the learner's GRPO statistics see only the group's remaining members (a group left with
fewer than two members contributes no gradient). They are reported in ``rollout/stop/*`` and
``rollout/excluded``.

Env-owned metrics (SkyRL style): a step's ``info["metrics"]`` (name -> number) is summed over the episode
into ``Trajectory.metrics`` and reported as the mean per episode, ``rollout/env/<name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentrl.inference.base import Backend, SamplingParams
from agentrl.rollout.bridge import ChatBridge, EpisodeTokens
from agentrl.rollout.trajectory import INFRA_STOP_REASONS, TokenKind, Trajectory

log = logging.getLogger(__name__)

# Tool-call statuses that count as a successful call (the envs say "ok"; raw sandbox records "Finished").
_TOOL_OK = frozenset({"ok", "Finished", "Success"})
# Observations longer than this many characters are tokenized in a worker thread, off the event loop.
_OFFLOAD_CHARS = 4096


@dataclass
class RolloutConfig:
    n_samples: int = 8
    """Episodes per task (the GRPO group size; TRL's num_generations)."""
    max_turns: int = 5
    """Assistant turns per episode at most (the paper's multi-turn setting: 5)."""
    max_new_tokens: int = 256
    """Tokens per assistant turn at most."""
    max_context_tokens: int = 2048
    """Tokens per episode at most (prompt + turns + observations); the episode ends with stop reason length."""
    tool_output_tokens: int = 256
    """Each observation message is cut to this many tokens (the paper: 256)."""
    mask_void_turns: bool = True
    """Keep turns with neither a tool call nor an answer out of the loss (SimpleTIR's void turns)."""
    concurrency: int = 64
    """Episodes in flight at once."""
    episode_timeout_s: float = 300.0
    """Wall-clock limit per episode, seconds; the episode ends with stop reason timeout."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    """Base seed: episode (group g, sample i, turn k) samples with a seed derived from it."""
    max_staleness: int = 1
    """With overlapped rollouts (run.async): generation runs at most k policy versions ahead of the learner,
    and a trajectory is admitted only if its oldest sampled token's version >= current - k (>= 1)."""
    partial: bool = False
    """With overlapped rollouts: a weight update lands while episodes decode (they continue under the new
    weights; each token keeps the version that sampled it) instead of waiting for the requests in flight."""

    def __post_init__(self) -> None:
        for name in ("n_samples", "max_turns", "max_new_tokens", "max_context_tokens", "tool_output_tokens",
                     "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"rollout.{name}={getattr(self, name)} must be >= 1")
        if self.max_staleness < 1:
            raise ValueError(f"rollout.max_staleness={self.max_staleness} must be >= 1 (it bounds overlapped "
                             "rollouts; synchronous training is run.async=false)")
        if self.episode_timeout_s <= 0:
            raise ValueError(f"rollout.episode_timeout_s={self.episode_timeout_s} must be > 0")
        if self.max_new_tokens >= self.max_context_tokens:
            raise ValueError(
                f"rollout.max_new_tokens={self.max_new_tokens} must be below rollout.max_context_tokens="
                f"{self.max_context_tokens}: raise max_context_tokens or lower max_new_tokens"
            )
        SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)  # validates


@dataclass
class RolloutBatch:
    trajectories: list[Trajectory]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def trainable(self) -> list[Trajectory]:
        return [t for t in self.trajectories if t.trainable]


@dataclass
class _Clock:
    generate_s: float = 0.0
    tool_s: float = 0.0


class RolloutManager:
    """Runs episodes of ``env_factory()`` environments with ``backend`` as the policy."""

    def __init__(self, backend: Backend, tokenizer: Any, env_factory: Callable[[], Any],
                 config: RolloutConfig | None = None, *, bridge: ChatBridge | None = None,
                 group_offset: int = 0, group_stride: int = 1) -> None:
        """``group_offset``/``group_stride``: the i-th group this manager runs gets the id offset + stride * i
        (rank r of w ranks running every w-th task uses r and w, so group ids are the same as in one process
        and unique across ranks)."""
        self.backend = backend
        self.group_offset, self.group_stride = group_offset, group_stride
        self.tokenizer = tokenizer
        self.env_factory = env_factory
        self.config = config or RolloutConfig()
        self.bridge = bridge or ChatBridge(tokenizer)
        self._generating = 0  # generate calls outstanding now
        self._busy_since = 0.0
        self._busy_s = 0.0

    def _group_id(self, index: int) -> int:
        return self.group_offset + self.group_stride * index

    def generator_busy_s(self) -> float:
        """Seconds so far during which at least one generate call of this manager was outstanding (the
        generator's busy time; its idle share over a window is 1 - busy / wall)."""
        open_interval = time.perf_counter() - self._busy_since if self._generating else 0.0
        return self._busy_s + open_interval

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        """Counts the block as an outstanding generate call (the generator's busy time), for generate calls
        made on this manager's behalf elsewhere (an agent episode's calls through agentrl.proxy)."""
        self._generation_started()
        try:
            yield
        finally:
            self._generation_ended()

    def _generation_started(self) -> None:
        if self._generating == 0:
            self._busy_since = time.perf_counter()
        self._generating += 1

    def _generation_ended(self) -> None:
        self._generating -= 1
        if self._generating == 0:
            self._busy_s += time.perf_counter() - self._busy_since

    # -- batch -----------------------------------------------------------------------------------
    async def run(self, task_seeds: Sequence[int], *, reset_options: dict[str, Any] | None = None) -> RolloutBatch:
        """One episode per (task, sample): group g holds the ``n_samples`` episodes of ``task_seeds[g]``."""
        cfg = self.config
        semaphore = asyncio.Semaphore(cfg.concurrency)
        start = time.perf_counter()
        drift_before = self.bridge.drift_count
        clock = _Clock()

        async def bounded(group: int, sample: int) -> Trajectory:
            async with semaphore:
                return await self.run_episode(task_seeds[group], group_id=self._group_id(group), sample_id=sample,
                                              reset_options=reset_options, clock=clock)

        jobs = [bounded(g, i) for g in range(len(task_seeds)) for i in range(cfg.n_samples)]
        trajectories = _flatten(await asyncio.gather(*jobs))
        wall = time.perf_counter() - start
        return RolloutBatch(trajectories, self.summarize(trajectories, wall, clock,
                                                         drift=self.bridge.drift_count - drift_before))

    async def stream(self, task_seeds: Iterable[int], *, gate: Callable[[int], Awaitable[None]] | None = None,
                     max_buffered: int | None = None,
                     reset_options: dict[str, Any] | None = None) -> AsyncIterator[RolloutBatch]:
        """Overlapped mode: keep episodes in flight and yield each finished group as soon as it is done.

        A producer task starts groups from ``task_seeds`` in order (group ids 0, 1, 2, ...) while at most
        ``concurrency`` episodes run, independently of the consumer, so generation goes on while the consumer
        trains and a group may hold tokens of several policy versions (see :func:`admit`). Before starting
        group g it awaits ``gate(g)`` (the trainer's staleness bound), and it waits while ``max_buffered``
        finished groups (default: two rounds of the concurrency) wait for the consumer: the queue between
        producer and consumer is bounded. Closing the generator cancels what is in flight.
        """
        cfg = self.config
        semaphore = asyncio.Semaphore(cfg.concurrency)
        slots = asyncio.Semaphore(max(1, -(-cfg.concurrency // cfg.n_samples)))  # groups filling the bound
        buffered = asyncio.Semaphore(max_buffered or 2 * max(1, -(-cfg.concurrency // cfg.n_samples)))
        finished: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()
        in_flight: set[asyncio.Task] = set()

        async def group(group_id: int, seed: int) -> RolloutBatch:
            clock = _Clock()
            start = time.perf_counter()

            async def one(sample: int) -> Trajectory:
                async with semaphore:
                    return await self.run_episode(seed, group_id=group_id, sample_id=sample,
                                                  reset_options=reset_options, clock=clock)

            try:
                trajs = _flatten(await asyncio.gather(*(one(i) for i in range(cfg.n_samples))))
            finally:
                slots.release()
            return RolloutBatch(trajs, self.summarize(trajs, time.perf_counter() - start, clock))

        async def produce() -> None:
            try:
                for group_id, seed in enumerate(task_seeds):
                    if gate is not None:
                        await gate(group_id)
                    await buffered.acquire()  # released when the consumer takes a group
                    await slots.acquire()  # released when a group finishes
                    task = asyncio.create_task(group(self._group_id(group_id), seed))
                    in_flight.add(task)
                    task.add_done_callback(finished.put_nowait)
            finally:
                await asyncio.gather(*in_flight, return_exceptions=True)
                finished.put_nowait(None)  # no more groups

        producer = asyncio.create_task(produce())
        try:
            while (task := await finished.get()) is not None:
                in_flight.discard(task)
                buffered.release()
                yield task.result()
            producer.result()  # raise what stopped the producer, if anything did
        finally:
            producer.cancel()
            for task in in_flight:
                task.cancel()
            await asyncio.gather(producer, *in_flight, return_exceptions=True)

    # -- one episode -----------------------------------------------------------------------------
    async def run_episode(self, task_seed: int, *, group_id: int = 0, sample_id: int = 0,
                          reset_options: dict[str, Any] | None = None,
                          clock: _Clock | None = None) -> Trajectory | list[Trajectory]:
        """One episode's Trajectory; a list for an agent function's episode (agentrl.proxy.AgentEnv), whose
        proxy session may hold several samples sharing the reward."""
        cfg = self.config
        clock = clock or _Clock()
        run_agent_episode = getattr(self.env_factory, "run_agent_episode", None)
        if run_agent_episode is not None:
            return await run_agent_episode(self, task_seed, group_id=group_id, sample_id=sample_id,
                                           reset_options=reset_options, clock=clock)
        state: dict[str, Any] = {"episode": None, "env": None, "tool_calls": [], "turn_rewards": [],
                                 "info": {}, "metrics": Counter(), "timings": {"generate_s": 0.0, "tool_s": 0.0}}
        started = time.perf_counter()
        try:
            stop_reason = await asyncio.wait_for(
                self._episode_loop(task_seed, group_id, sample_id, reset_options, state, clock),
                timeout=cfg.episode_timeout_s,
            )
        except TimeoutError:
            stop_reason = "timeout"
        except asyncio.CancelledError:
            await self._close_env(state["env"])
            raise
        except Exception as exc:  # an engine or env fault ends this episode, never the batch
            log.warning("episode (group %d, sample %d) failed: %r", group_id, sample_id, exc)
            state["info"]["error"] = repr(exc)
            stop_reason = "error"
        await self._close_env(state["env"])
        state["timings"]["total_s"] = time.perf_counter() - started
        return self._finish(state, stop_reason, group_id, sample_id, task_seed)

    async def _episode_loop(self, task_seed: int, group_id: int, sample_id: int,
                            reset_options: dict[str, Any] | None, state: dict[str, Any], clock: _Clock) -> str:
        cfg = self.config
        env = self.env_factory()
        state["env"] = env
        observation, info = await env.areset(seed=task_seed, options=reset_options)
        state["info"]["task"] = _jsonable(getattr(env, "task", None))
        max_turns = min(cfg.max_turns, getattr(env, "max_turns", cfg.max_turns))
        episode = EpisodeTokens(self.bridge, list(observation), policy_version=self.backend.version,
                                tools=getattr(env, "tool_schemas", None))
        state["episode"] = episode
        for turn in range(max_turns):
            budget = cfg.max_context_tokens - len(episode)
            if budget <= 0:
                return "length"
            sampling = SamplingParams(
                temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                max_new_tokens=min(cfg.max_new_tokens, budget),
                seed=_mix(cfg.seed, group_id, sample_id, turn, self.backend.version),
            )
            t0 = time.perf_counter()
            self._generation_started()
            try:
                completion = (await self.backend.generate(list(episode.token_ids), sampling))[0]
            finally:
                self._generation_ended()
            dt = time.perf_counter() - t0
            state["timings"]["generate_s"] += dt
            clock.generate_s += dt
            text = episode.add_turn(completion.token_ids, completion.logprobs, policy_version=completion.versions)
            if completion.finish_reason == "abort":
                return "aborted"
            t0 = time.perf_counter()
            step = await env.astep(text)
            dt = time.perf_counter() - t0
            state["timings"]["tool_s"] += dt
            clock.tool_s += dt
            observation, reward, terminated, truncated, info = step
            state["turn_rewards"].append(float(reward))
            state["tool_calls"].extend(info.get("tool_calls", []))
            state["metrics"].update({str(k): float(v) for k, v in (info.get("metrics") or {}).items()})
            state["info"].update({k: _jsonable(info[k]) for k in ("correct", "answer", "reward_breakdown")
                                  if k in info})
            if info.get("tool_error"):
                return "tool_error"
            if cfg.mask_void_turns and info.get("void_turn"):
                episode.mask_last_turn()
            if terminated:
                return "stop"
            if truncated:
                reason = info.get("stop_reason") or "max_turns"
                return reason if reason in ("max_turns", "error", "tool_error") else "max_turns"
            if completion.finish_reason == "length" and len(episode) >= cfg.max_context_tokens:
                return "length"
            if not observation:
                continue
            observation = await self._truncate(observation)
            if sum(len(m["content"]) for m in observation) > _OFFLOAD_CHARS:
                ids = await asyncio.to_thread(episode.observation_ids, observation)
            else:
                ids = episode.observation_ids(observation)
            if len(episode) + len(ids) >= cfg.max_context_tokens:
                return "length"  # no room for the observation and another turn
            episode.add_observation(observation, ids)
        return "max_turns"

    async def _truncate(self, observation: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        """Cut every message's content to ``tool_output_tokens`` tokens (the ids are re-made by the bridge)."""
        limit = self.config.tool_output_tokens
        out = []
        for message in observation:
            content = message["content"]
            if len(content) > limit:  # a token is at least one character: shorter text cannot be over
                encode = self.tokenizer.encode
                ids = (await asyncio.to_thread(encode, content, add_special_tokens=False)
                       if len(content) > _OFFLOAD_CHARS else encode(content, add_special_tokens=False))
                if len(ids) > limit:
                    content = self.tokenizer.decode(ids[:limit]) + "\n...[truncated]\n"
            out.append({**message, "content": content})
        return out

    def _finish(self, state: dict[str, Any], stop_reason: str, group_id: int, sample_id: int,
                task_seed: int) -> Trajectory:
        cfg = self.config
        episode: EpisodeTokens | None = state["episode"]
        excluded = stop_reason if stop_reason in INFRA_STOP_REASONS else None
        common = {"stop_reason": stop_reason, "group_id": group_id, "sample_id": sample_id,
                  "task_id": str(task_seed), "timings": state["timings"], "info": state["info"],
                  "excluded": excluded, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k,
                  "metrics": dict(state["metrics"])}
        if episode is None:  # failed before the prompt existed: a one-token stand-in, excluded
            common["excluded"] = excluded or stop_reason
            return Trajectory(token_ids=[self.bridge.eos_token_id], loss_mask=[0], behavior_logprobs=[0.0],
                              turn_ids=[0], policy_version=[-1], token_kinds=[TokenKind.PROMPT], prompt_length=1,
                              **common)
        if excluded is not None:
            episode.mask_all()
        return episode.to_trajectory(
            reward=sum(state["turn_rewards"]) if excluded is None else 0.0,
            turn_rewards=state["turn_rewards"],
            tool_calls=state["tool_calls"],
            env_id=str(getattr(getattr(state["env"], "spec", None), "id", "") or ""),
            correct=state["info"].get("correct"),
            **common,
        )

    @staticmethod
    async def _close_env(env: Any) -> None:
        if env is None:
            return
        aclose = getattr(env, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
            else:
                env.close()
        except Exception:  # closing is best effort; the episode's record is what matters
            log.debug("env close failed", exc_info=True)

    # -- metrics ---------------------------------------------------------------------------------
    @staticmethod
    def summarize(trajs: list[Trajectory], wall: float, clock: _Clock | None = None, *,
                  drift: int = 0) -> dict[str, float]:
        """Rollout metrics of a set of trajectories (``rollout/*`` and ``perf/*``)."""
        clock = clock or _Clock()
        n = max(len(trajs), 1)
        reasons = Counter(t.stop_reason for t in trajs)
        calls = [c for t in trajs for c in t.tool_calls]
        ok_calls = sum(1 for c in calls if c.get("status") in _TOOL_OK)
        sampled = sum(len(t.policy_versions) for t in trajs)
        trainable = [t for t in trajs if t.excluded is None]
        metrics = {
            "rollout/episodes": float(len(trajs)),
            "rollout/excluded": float(len(trajs) - len(trainable)),
            "rollout/reward_mean": sum(t.reward for t in trainable) / max(len(trainable), 1),
            "rollout/accuracy": sum(1 for t in trainable if t.correct) / max(len(trainable), 1),
            "rollout/turns_mean": sum(t.num_turns for t in trajs) / n,
            "rollout/tool_calls_per_episode": len(calls) / n,
            "rollout/tool_call_rate": sum(1 for t in trajs if t.tool_calls) / n,
            "rollout/tool_success_rate": ok_calls / max(len(calls), 1),
            "rollout/response_length_mean": sum(t.response_length for t in trajs) / n,
            "rollout/sampled_tokens": float(sampled),
            "rollout/template_drift": float(drift),
            "perf/rollout_s": wall,
            "perf/rollout_tokens_per_s": sampled / max(wall, 1e-9),
            "perf/generate_s": clock.generate_s,
            "perf/tool_s": clock.tool_s,
        }
        for reason, count in reasons.items():
            metrics[f"rollout/stop/{reason}"] = float(count)
        for name in sorted({k for t in trajs for k in t.metrics}):
            metrics[f"rollout/env/{name}"] = sum(t.metrics.get(name, 0.0) for t in trajs) / n
        return metrics


def admit(trajectories: Sequence[Trajectory], current_version: int,
          max_staleness: int) -> tuple[list[Trajectory], list[Trajectory]]:
    """Split into (admitted, rejected): admitted if the oldest sampled token's version >= current - k."""
    admitted, rejected = [], []
    for t in trajectories:
        versions = t.policy_versions
        oldest = min(versions) if versions else current_version
        (admitted if oldest >= current_version - max_staleness else rejected).append(t)
    return admitted, rejected


def _flatten(results: Iterable[Trajectory | list[Trajectory]]) -> list[Trajectory]:
    """Episodes' trajectories in order (an agent episode gives a list, an env episode one)."""
    return [t for r in results for t in (r if isinstance(r, list) else [r])]


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (deterministic across processes, unlike hash())."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(value))
    return str(value)
