"""An agent function as training episodes: ``env.id=module:function`` for ``python -m agentrl.train``.

The agent is any function (sync or async) that takes an OpenAI ``base_url`` and a ``task`` and talks to
the model only through that URL::

    def solve(base_url: str, task: dict) -> str | float | None:
        client = openai.OpenAI(base_url=base_url, api_key="unused")
        ...

``make_env_factory`` recognises it (a ``module:function`` whose function has a ``base_url`` parameter) and
returns an :class:`AgentEnv`; ``RolloutManager`` sees its ``run_agent_episode`` and hands each episode to
it. One episode:

1. the *task env* (``tasks``, default ``agentrl/Arithmetic-v0``, built with the remaining env kwargs, so a
   recipe's ``env.kwargs`` and ``eval_kwargs: {split: test}`` still apply) is reset with the episode's seed;
   the agent's ``task`` is its Task (question, answer, id, metadata) plus ``messages``, the env's initial
   chat messages;
2. a proxy session is opened on the rollout backend, with the rollout config's sampling settings, token
   limits (``max_new_tokens`` per call, ``max_context_tokens``), ``max_turns`` model calls and a per-episode
   seed imposed (the agent's own temperature/seed are recorded, not used: GRPO needs the training
   distribution and different samples per group member);
3. the agent runs under ``rollout.episode_timeout_s`` (sync agents in a thread pool of
   ``rollout.concurrency`` threads); tool calls are the agent's own business, e.g. the sandbox at
   ``$AGENTRL_SANDBOX_URL``;
4. the reward: a number the agent returns; else a string it returns (its final answer) scored by the task
   env (``score``, the same verifier its own episodes use); else a reward POSTed to the session; else the
   last completion's text scored by the task env;
5. the session's samples become Trajectories with the episode's group/sample ids, sampling settings and
   reward. An agent that raises or times out is an infrastructure failure (stop reason ``error`` /
   ``timeout``, excluded from the loss), except after the proxy refused a call for the episode's limits
   (stop reason ``length`` or ``max_turns``: the policy ran out of room, and that trains).

Tool-call format: the proxy returns ``tool_calls`` parsed from Hermes ``<tool_call>`` tags or the kit's
python fences (see :mod:`agentrl.proxy.tool_calls`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentrl.inference.base import Completion, SamplingParams
from agentrl.rollout.manager import _mix
from agentrl.rollout.trajectory import INFRA_STOP_REASONS, TokenKind, Trajectory

log = logging.getLogger(__name__)

DEFAULT_TASKS = "agentrl/Arithmetic-v0"
"""The task env of an agent whose env kwargs name none."""

AgentFn = Callable[..., Any]


def load_agent(env_id: str) -> AgentFn | None:
    """The agent function ``env_id`` names (``module:function`` with a ``base_url`` parameter), else None.

    None also when the module cannot be imported: ``envs.make`` then reports that error as for any env.
    """
    if ":" not in env_id:
        return None
    from envs.registration import load_entry_point

    try:
        obj = load_entry_point(env_id)
    except Exception:  # noqa: BLE001 - not loadable here: let envs.make raise its own, clearer error
        return None
    if inspect.isclass(obj):
        return None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return None
    return obj if "base_url" in params else None


class AgentEnv:
    """Env factory for an agent function (see the module docstring).

    Calling it returns a fresh task env, so code that needs a plain env (the SFT warm-up's demonstrations)
    still gets one; ``RolloutManager`` calls :meth:`run_agent_episode` instead of running the env itself.
    ``agent_kwargs`` are passed to the agent as keyword arguments.
    """

    def __init__(self, agent: AgentFn, *, tasks: str = DEFAULT_TASKS, agent_kwargs: dict[str, Any] | None = None,
                 **task_kwargs: Any) -> None:
        import envs

        if not callable(agent):
            raise TypeError(f"agent must be a function (base_url, task), got {agent!r}")
        self.agent = agent
        self.agent_id = f"{getattr(agent, '__module__', '?')}:{getattr(agent, '__qualname__', repr(agent))}"
        self.tasks = tasks
        self.task_kwargs = task_kwargs
        self.agent_kwargs = dict(agent_kwargs or {})
        self._make = lambda: envs.make(tasks, **task_kwargs)
        probe = self._make()  # a bad task env or kwargs fails now, not per episode
        try:
            for method in ("areset", "score", "extract_answer"):
                if not callable(getattr(probe, method, None)):
                    raise TypeError(f"the task env {tasks!r} has no {method}(); an agent's tasks come from a TextEnv "
                                    "(agentrl/Arithmetic-v0, agentrl/Math-v0, or your own)")
        finally:
            probe.close()
        self._servers: dict[int, Any] = {}
        self._executors: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._servers, self._executors)
        # The openai client logs every request at INFO through httpx2; the kit keeps HTTP clients quiet.
        if logging.getLogger("httpx2").level == logging.NOTSET:
            logging.getLogger("httpx2").setLevel(logging.WARNING)

    def __call__(self) -> Any:
        return self._make()

    def __repr__(self) -> str:
        return f"AgentEnv({self.agent_id}, tasks={self.tasks!r})"

    # -- the proxy -----------------------------------------------------------------------------------
    def server(self, tokenizer: Any, backend: Any) -> Any:
        """This process's proxy server for ``tokenizer`` (started on first use, stopped by :meth:`close`)."""
        from agentrl.inference.hf import HFBackend
        from agentrl.proxy.admission import Admission
        from agentrl.proxy.app import ProxyServer
        from agentrl.proxy.proxy import Proxy

        with self._lock:
            server = self._servers.get(id(tokenizer))
            if server is None:
                # Holding bursts together pays only for a backend that batches between batches (HF).
                admission = Admission() if isinstance(backend, HFBackend) else None
                server = ProxyServer(Proxy(None, tokenizer, auto_sessions=False, admission=admission)).start()
                self._servers[id(tokenizer)] = server
            return server

    def _pool(self, workers: int) -> ThreadPoolExecutor:
        with self._lock:
            if not self._executors:
                self._executors.append(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agentrl-agent"))
            return self._executors[0]

    def close(self) -> None:
        """Stop the proxy servers and the agent threads; idempotent."""
        self._finalizer()

    # -- one episode ---------------------------------------------------------------------------------
    async def run_agent_episode(self, manager: Any, task_seed: int, *, group_id: int = 0, sample_id: int = 0,
                                reset_options: dict[str, Any] | None = None, clock: Any = None) -> list[Trajectory]:
        """Run the agent on the task of ``task_seed``; one Trajectory per sample of its session. A failure (of
        the agent, the task env, the verifier) ends this episode as excluded, never the batch."""
        from agentrl.proxy.session import SessionRules

        cfg = manager.config
        info: dict[str, Any] = {"agent": self.agent_id}
        ids = {"group_id": group_id, "sample_id": sample_id, "task_id": str(task_seed)}
        env = self()
        try:
            try:
                observation, _ = await env.areset(seed=task_seed, options=reset_options)
                info["task"] = task = {**env.task.to_dict(), "messages": [dict(m) for m in observation]}
                server = self.server(manager.tokenizer, manager.backend)
            except Exception as exc:  # the task env or the proxy could not start the episode
                info["error"] = f"{type(exc).__name__}: {exc}"[:500]
                return [self._stand_in(manager, "error", info, **ids)]
            session_id = f"g{group_id}-s{sample_id}-{uuid.uuid4().hex[:12]}"
            rules = SessionRules(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                 max_new_tokens=cfg.max_new_tokens, max_context_tokens=cfg.max_context_tokens,
                                 seed=_mix(cfg.seed, group_id, sample_id, manager.backend.version),
                                 max_calls=cfg.max_turns)
            server.proxy.open_session(session_id, backend=_CountedBackend(manager), rules=rules)
            result, stop_reason = None, None
            try:
                result = await asyncio.wait_for(self._call(server.base_url(session_id), task, cfg.concurrency),
                                                timeout=cfg.episode_timeout_s)
            except TimeoutError:
                stop_reason = "timeout"
            except Exception as exc:  # the agent's failure ends this episode, never the batch
                stop_reason = "error"
                info["error"] = f"{type(exc).__name__}: {exc}"[:500]
            finally:
                session = server.proxy.close_session(session_id)
            if stop_reason is None and not (result is None or isinstance(result, (str, int, float))):
                stop_reason = "error"
                info["error"] = (f"the agent returned {type(result).__name__}; return a reward (number), its final "
                                 "answer (str) or None")
            if stop_reason == "error" and session.refused is not None:
                stop_reason = session.refused  # the agent stopped on a refusal: the policy's doing, not a fault
            if clock is not None:
                clock.generate_s += session.generate_s
            if not session.samples:
                info.setdefault("error", "the agent made no model call")
                return [self._stand_in(manager, stop_reason or "error", info, **ids)]
            reward, correct = 0.0, None
            if stop_reason not in INFRA_STOP_REASONS:
                try:
                    reward, correct = await self._score(env, env.task, result, session, info)
                except Exception as exc:  # the verifier failed: nothing to say about the policy
                    stop_reason = "error"
                    info["error"] = f"scoring failed: {type(exc).__name__}: {exc}"[:500]
        finally:
            env.close()
        excluded = stop_reason if stop_reason in INFRA_STOP_REASONS else None
        trajectories = session.trajectories(
            reward=reward if excluded is None else 0.0, stop_reason=stop_reason or "stop", excluded=excluded,
            env_id=self.agent_id, info=info, **ids,
        )
        # Episode-level outcome and counts on the last sample only, so sums over trajectories count episodes.
        trajectories[-1].correct = correct
        trajectories[-1].metrics = {"proxy_calls": float(len(session.calls)),
                                    "proxy_splits": float(sum(session.splits.values())),
                                    "malformed_tool_calls": float(session.malformed_tool_calls),
                                    **{f"proxy_split_{why}": float(n) for why, n in session.splits.items()}}
        return trajectories

    async def _call(self, base_url: str, task: dict[str, Any], workers: int) -> Any:
        if inspect.iscoroutinefunction(self.agent):
            return await self.agent(base_url, task, **self.agent_kwargs)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool(workers), lambda: self.agent(base_url, task, **self.agent_kwargs))
        return await result if inspect.isawaitable(result) else result

    @staticmethod
    async def _score(env: Any, task: Any, result: Any, session: Any, info: dict[str, Any]) -> tuple[float, bool | None]:
        """(reward, correct) from what the agent returned (see the module docstring, step 4)."""
        if isinstance(result, bool):
            return float(result), result
        if isinstance(result, (int, float)):
            return float(result), None
        if result is None and session.reward is not None:
            return float(session.reward), None
        text = result if isinstance(result, str) else session.last_text or ""
        answer = env.extract_answer(text)
        reward, _, details = await asyncio.to_thread(env.score, task, answer, text)
        info["answer"] = task.answer
        info["extracted_answer"] = answer
        return float(reward), details.get("correct")

    @staticmethod
    def _stand_in(manager: Any, stop_reason: str, info: dict[str, Any], **ids: Any) -> Trajectory:
        """An episode with no model call: a one-token record kept out of the loss (as the manager does)."""
        cfg = manager.config
        return Trajectory(token_ids=[manager.bridge.eos_token_id], loss_mask=[0], behavior_logprobs=[0.0],
                          turn_ids=[0], policy_version=[-1], token_kinds=[TokenKind.PROMPT], prompt_length=1,
                          stop_reason=stop_reason, excluded=stop_reason if stop_reason in INFRA_STOP_REASONS
                          else "error", info=info, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                          **ids)


class _CountedBackend:
    """The manager's backend, with each generate call counted as the manager's own (its busy-time metrics)."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    @property
    def version(self) -> int:
        return self.manager.backend.version

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams) -> list[Completion]:
        with self.manager.generating():
            return await self.manager.backend.generate(prompt_token_ids, sampling)

    def update_weights(self, weights: Any) -> int:
        return self.manager.backend.update_weights(weights)

    async def aclose(self) -> None:
        """The manager's backend belongs to the trainer: not closed here."""


def _shutdown(servers: dict[int, Any], executors: list[ThreadPoolExecutor]) -> None:
    for server in list(servers.values()):
        server.stop()
    servers.clear()
    for executor in executors:
        executor.shutdown(wait=False, cancel_futures=True)
    executors.clear()
