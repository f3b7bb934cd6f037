"""Base classes: ``TextEnv`` (gymnasium.Env over chat messages) and ``ToolEnv`` (adds tools and a sandbox).

Observation: a tuple of chat messages to append (``{"role", "content"}`` dicts); ``reset`` returns the
initial messages (system prompt if any, then the user question). Action: the assistant's text for one
turn. ``step`` returns ``StepResult(observation, reward, terminated, truncated, info)``, a NamedTuple
and still a plain 5-tuple.

Termination vs truncation (gymnasium's distinction, kept apart on purpose):

- terminated: the episode reached its natural end, an answer (``\\boxed{}``), or a turn with neither a
  tool call nor an answer when ``void_turn="end"`` (SimpleTIR). ``stop_reason = "stop"``.
- truncated: cut short from outside: ``max_turns`` reached (``"max_turns"``), or the tool's service
  failed (``"tool_error"``, with ``info["tool_error"] = True``; keep such episodes out of the loss),
  or a tool raised an unexpected exception (``"error"``, with ``info["error"]``; logged).

``info`` on every step: stop_reason, is_tool_call, is_answer, void_turn, tool_error, tool_calls (one
record per call: name, status, execution_time, truncated), reward_breakdown, correct (None until
decided), turn, metrics; and at the end also answer (the ground truth), extracted_answer, verdict.

``info["metrics"]``: this step's counters (str -> float; the rollout manager sums them per episode and
reports the mean per episode as ``rollout/env/<name>``). Tool envs count ``tool_calls`` (calls run),
``tool_calls_failed`` (ran and failed: exception, non-zero exit, timeout), ``tool_calls_malformed``
(turns whose call could not be run) and ``tool_calls_malformed_<kind>`` for each kind in
``envs.parsers.ERROR_KINDS``. Subclasses add their own keys to ``metric_keys``.

Interactive envs: ``feedback(answer, action)`` may answer a ``\\boxed{}`` answer before the last turn
with a message instead of ending the episode (a hint, a test report); ``ascore`` is the async form of
``score`` for scoring that awaits a service (the sandbox).

A new env is usually: pass ``tasks`` (any object with ``sample(rng) -> Task``), maybe a ``system_prompt``,
maybe your own ``Tool`` subclasses, maybe override ``score``. See docs/envs.md.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium as gym

from .errors import ToolUnavailable
from .functions import as_tool
from .parsers import ERROR_KINDS, ParseResult, make_parser
from .sandbox import (
    EpisodeSession,
    background_loop,
    infrastructure_errors,
    resolve_sandbox_url,
    run_sync,
    shared_client,
)
from .spaces import Messages, UnicodeText
from .tasks.base import Task, TaskSource
from .tool import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_RUN_TIMEOUT, PythonTool, Tool, ToolOutput
from .verify.extract import last_boxed

logger = logging.getLogger(__name__)
Message = dict[str, str]
STOP_REASONS = ("stop", "max_turns", "tool_error", "error")
BOXED_INSTRUCTION = "Put your final answer within \\boxed{}."
TOOL_METRICS = (
    "tool_calls",
    "tool_calls_failed",
    "tool_calls_malformed",
    *(f"tool_calls_malformed_{kind}" for kind in ERROR_KINDS),
)
VOID_TURN_NUDGE = (
    "Your last message had neither a tool call nor a final answer. Continue, and give the final answer "
    "within \\boxed{}."
)


class StepResult(NamedTuple):
    observation: tuple[Message, ...]
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class TextEnv(gym.Env[tuple, str]):
    """A text environment: the model answers a task in one or more turns; reward from the answer.

    Without tools, a turn either answers (``\\boxed{}`` terminates) or is a void turn. Subclasses
    override ``score`` (reward), ``extract_answer``, ``initial_messages`` or ``sample_task``.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    metric_keys: tuple[str, ...] = ()
    """Keys of ``info["metrics"]``, present (0.0 unless counted) on every step. A subclass adds its own
    as ``metric_keys = ToolEnv.metric_keys + ("mine",)``."""

    def __init__(
        self,
        tasks: TaskSource | Sequence[Task | Mapping[str, Any]] | None = None,
        *,
        max_turns: int = 1,
        system_prompt: str | None = None,
        void_turn: str = "end",
        correct_reward: float = 1.0,
        wrong_reward: float = 0.0,
        verify_timeout: float | None = None,
    ):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if void_turn not in ("end", "continue"):
            raise ValueError(f"void_turn must be 'end' or 'continue', got {void_turn!r}")
        if tasks is not None and not hasattr(tasks, "sample"):
            from .tasks.base import TaskList

            tasks = TaskList([Task.from_value(t) for t in tasks])
        self.tasks = tasks
        self.max_turns = int(max_turns)
        self.system_prompt = system_prompt
        self.void_turn = void_turn
        self.correct_reward = float(correct_reward)
        self.wrong_reward = float(wrong_reward)
        self.verify_timeout = verify_timeout
        self.observation_space = Messages()
        self.action_space = UnicodeText()
        self.task: Task | None = None
        self.turn = 0
        self.done = True
        self.session_id: str | None = None

    # ---- hooks -------------------------------------------------------------------------------------
    def sample_task(self) -> Task:
        """The next task; must use only ``self.np_random`` so a seeded reset repeats it."""
        if self.tasks is None:
            raise ValueError(f"{type(self).__name__} has no tasks: pass tasks=... or override sample_task()")
        return Task.from_value(self.tasks.sample(self.np_random))

    def initial_messages(self, task: Task) -> list[Message]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": task.question})
        return messages

    def extract_answer(self, action: str) -> str | None:
        """The final answer in a turn (the last complete ``\\boxed{}``), or None."""
        answer = last_boxed(action)
        return answer if answer else None

    def score(self, task: Task, answer: str | None, action: str) -> tuple[float, dict[str, float], dict[str, Any]]:
        """(reward, reward breakdown, details) for a final answer (None: the episode ended unanswered).

        ``details["correct"]`` (bool) is reported as ``info["correct"]``. Runs in a worker thread
        under ``astep``, so it may block (the default calls the process-pool verifier).
        """
        if answer is None:
            return self.wrong_reward, {"correct": 0.0}, {"correct": False, "verdict": "no answer"}
        from .verify import check

        verdict = check(answer, task.answer, timeout=self.verify_timeout)
        reward = self.correct_reward if verdict.correct else self.wrong_reward
        return reward, {"correct": float(verdict.correct)}, {"correct": verdict.correct, "verdict": verdict.reason}

    async def ascore(self, task: Task, answer: str | None, action: str) -> tuple[float, dict[str, float], dict[str, Any]]:
        """``score`` for the event loop: by default ``score`` in a worker thread. Override this instead of
        ``score`` when scoring awaits a service (tests run in the sandbox)."""
        return await asyncio.to_thread(self.score, task, answer, action)

    async def feedback(self, answer: str, action: str) -> str | None:
        """A reply to an answer given before the last turn, or None (the default) to end the episode.

        A text continues the episode with it as a user message (a hint, a test report): the model may
        answer again. The answer of the last turn is always final.
        """
        return None

    def parse_tool_calls(self, action: str) -> ParseResult:
        return ParseResult()

    async def call_tools(self, parsed: ParseResult) -> list[tuple[str, ToolOutput]]:
        return []

    def tool_message(self, text: str) -> Message:
        return {"role": "user", "content": text}

    async def on_episode_end(self) -> None:
        """Release per-episode resources (sandbox sessions...). Errors here are swallowed."""

    # ---- gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[tuple, dict]:
        super().reset(seed=seed)
        options = options or {}
        if "task" in options:
            self.task = Task.from_value(options["task"])
        elif "index" in options:
            if not hasattr(self.tasks, "__getitem__"):
                raise ValueError("options['index'] needs a task list (a loaded file), not a generator")
            self.task = Task.from_value(self.tasks[int(options["index"])])  # type: ignore[index]
        else:
            self.task = self.sample_task()
        self.turn = 0
        self.done = False
        self.session_id = None
        observation = tuple(dict(m) for m in self.initial_messages(self.task))
        return observation, {"task": self.task.to_dict(), "max_turns": self.max_turns}

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[tuple, dict]:
        return self.reset(seed=seed, options=options)

    def step(self, action: str) -> StepResult:  # type: ignore[override]
        return run_sync(self.astep(action))

    async def astep(self, action: str) -> StepResult:
        if self.task is None or self.done:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"action must be the assistant's text (str), got {type(action).__name__}")
        self.turn += 1
        info: dict[str, Any] = {
            "stop_reason": None,
            "is_tool_call": False,
            "is_answer": False,
            "void_turn": False,
            "tool_error": False,
            "tool_calls": [],
            "reward_breakdown": {},
            "correct": None,
            "turn": self.turn,
            "metrics": dict.fromkeys(self.metric_keys, 0.0),
        }
        metrics = info["metrics"]
        last_turn = self.turn >= self.max_turns
        parsed = self.parse_tool_calls(action)
        if parsed.attempted:
            info["is_tool_call"] = True
            if parsed.error is not None:
                info["tool_calls"].append({"name": None, "status": "malformed", "execution_time": None, "truncated": False})
                metrics["tool_calls_malformed"] = 1.0
                metrics[f"tool_calls_malformed_{parsed.error_kind or 'format'}"] = 1.0
                if last_turn:
                    return await self._finish(info, "max_turns", None)
                return StepResult((self.tool_message(parsed.error),), 0.0, False, False, info)
            if last_turn:
                # The tools would run for an observation nobody reads: the episode is over.
                return await self._finish(info, "max_turns", None)
            try:
                outputs = await self.call_tools(parsed)
            except infrastructure_errors() as e:
                info["tool_error"] = True
                info["tool_error_message"] = str(e)[:500]
                return await self._finish(info, "tool_error", None)
            except Exception as e:  # noqa: BLE001 - a bug in a tool must not take a whole training run down
                logger.exception("tool raised in %s; ending the episode with stop_reason 'error'", type(self).__name__)
                info["error"] = f"{type(e).__name__}: {e}"[:500]
                return await self._finish(info, "error", None)
            info["tool_calls"] = [out.record(name) for name, out in outputs]
            for _, out in outputs:
                if out.status == "malformed":  # a tool the parser could not check: unknown at run time
                    metrics["tool_calls_malformed"] = 1.0
                    metrics["tool_calls_malformed_unknown_tool"] = 1.0
                else:
                    metrics["tool_calls"] = metrics.get("tool_calls", 0.0) + 1.0
                    metrics["tool_calls_failed"] = metrics.get("tool_calls_failed", 0.0) + float(out.status != "ok")
            observation = tuple(self.tool_message(self._format(name, out)) for name, out in outputs)
            return StepResult(observation, 0.0, False, False, info)
        answer = self.extract_answer(action)
        if answer is not None:
            info["is_answer"] = True
            reply = None if last_turn else await self.feedback(answer, action)
            if reply is not None:
                return StepResult(({"role": "user", "content": reply},), 0.0, False, False, info)
            return await self._finish(info, "stop", answer, action)
        info["void_turn"] = True
        if self.void_turn == "end" or self.max_turns == 1:
            return await self._finish(info, "stop", None, action)
        if last_turn:
            return await self._finish(info, "max_turns", None)
        return StepResult((self.tool_message(VOID_TURN_NUDGE),), 0.0, False, False, info)

    def _format(self, name: str, output: ToolOutput) -> str:
        tool = getattr(self, "tools", {}).get(name)
        return tool.format(output) if tool is not None else output.text

    async def _finish(self, info: dict[str, Any], reason: str, answer: str | None, action: str = "") -> StepResult:
        assert reason in STOP_REASONS
        assert self.task is not None
        self.done = True
        info["stop_reason"] = reason
        info["answer"] = self.task.answer
        info["extracted_answer"] = answer
        reward = 0.0
        if reason in ("tool_error", "error"):
            info["reward_breakdown"] = {}
        else:
            try:
                reward, breakdown, details = await self.ascore(self.task, answer, action)
            except infrastructure_errors() as e:
                # Scoring needed a service that failed (tests in a dead sandbox): no reward, out of the loss.
                reason = info["stop_reason"] = "tool_error"
                info["tool_error"] = True
                info["tool_error_message"] = str(e)[:500]
                breakdown, details = {}, {}
            info["reward_breakdown"] = dict(breakdown)
            info["correct"] = details.get("correct")
            if "verdict" in details:
                info["verdict"] = details["verdict"]
        try:
            await self.on_episode_end()
        except Exception:  # noqa: BLE001 - cleanup is best effort by contract
            pass
        terminated = reason == "stop"
        return StepResult((), float(reward), terminated, not terminated, info)

    def close(self) -> None:
        self.done = True


class ToolEnv(TextEnv):
    """A text env with tools: the model calls them (``parser`` decides the format), the env runs them
    and appends the results, up to ``max_turns``; a ``\\boxed{}`` answer ends the episode.

    ``sandbox``: a URL, or an async ``tools.client.SandboxClient`` (shared by many envs; for ``astep``),
    or None ($AGENTRL_SANDBOX_URL, else a per-process embedded sandbox, started at the first call).
    ``tools``: the tools offered: ``Tool`` instances or typed functions (``envs.functions``); default
    the sandboxed ``python`` tool. ``parser``: how calls are written; default ``"python_block"`` for
    the default tool, ``"tool_call"`` (function calling, schemas in ``tool_schemas``) otherwise.
    ``stateful``: keep one sandbox session per episode so variables persist between code blocks
    (default off: each block is fresh).
    """

    metric_keys = TOOL_METRICS

    def __init__(
        self,
        tasks: TaskSource | Sequence[Task | Mapping[str, Any]] | None = None,
        *,
        tools: Sequence[Tool | Callable[..., Any]] | None = None,
        parser: str | Any | None = None,
        sandbox: str | Any | None = None,
        max_turns: int = 5,
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
        max_output_chars: int | None = DEFAULT_MAX_OUTPUT_CHARS,
        max_output_tokens: int | None = None,
        tokenizer: Any = None,
        stateful: bool = False,
        observation_role: str = "tool",
        system_prompt: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(tasks, max_turns=max_turns, system_prompt=system_prompt, **kwargs)
        if parser is None:
            parser = "python_block" if tools is None else "tool_call"
        if tools is None:
            tools = [
                PythonTool(
                    run_timeout=run_timeout,
                    max_output_chars=max_output_chars,
                    max_output_tokens=max_output_tokens,
                    tokenizer=tokenizer,
                )
            ]
        tools = [as_tool(t) for t in tools]
        self.tools: dict[str, Tool] = {t.name: t for t in tools}
        if len(self.tools) != len(tools):
            raise ValueError("tool names must be unique")
        self.parser = make_parser(parser)
        self.stateful = stateful
        self.observation_role = observation_role
        self._sandbox = sandbox
        self._sandbox_url: str | None = sandbox if isinstance(sandbox, str) else None
        self._session: EpisodeSession | None = None
        if self.system_prompt is None:
            self.system_prompt = self.default_system_prompt()

    @property
    def tool_schemas(self) -> list[dict[str, Any]] | None:
        """OpenAI function schemas of the tools, for the chat template's ``tools`` argument; None when
        the parser describes the tools itself (fenced python blocks)."""
        if not getattr(self.parser, "uses_tool_schemas", False):
            return None
        return [tool.schema() for tool in self.tools.values()]

    def default_system_prompt(self) -> str:
        return (
            "Solve the problem step by step. "
            + self.parser.instructions(self.tools)
            + "\nWhen you know the answer, stop calling tools and "
            + BOXED_INSTRUCTION[0].lower()
            + BOXED_INSTRUCTION[1:]
        )

    # ---- sandbox -----------------------------------------------------------------------------------
    def sandbox_client(self) -> Any:
        """The async client for the running loop: the one passed in, else the shared one for the URL."""
        if self._sandbox is not None and not isinstance(self._sandbox, str):
            if asyncio.get_running_loop() is background_loop.loop:
                # Synchronous step: the passed client belongs to the caller's loop; use a twin here.
                return shared_client(self._sandbox.url)
            return self._sandbox
        if self._sandbox_url is None:
            self._sandbox_url = resolve_sandbox_url(None)
        return shared_client(self._sandbox_url)

    # ---- turn --------------------------------------------------------------------------------------
    def parse_tool_calls(self, action: str) -> ParseResult:
        return self.parser.parse(action, self.tools)

    async def call_tools(self, parsed: ParseResult) -> list[tuple[str, ToolOutput]]:
        if self.stateful and self.session_id is None:
            self.session_id = uuid.uuid4().hex
            self._session = EpisodeSession(self.session_id, self.sandbox_client(), asyncio.get_running_loop())
        outputs = []
        for call in parsed.calls:  # in order: later calls may depend on earlier ones (stateful sessions)
            tool = self.tools.get(call.name)
            if tool is None:
                text = f"Unknown tool {call.name!r}; available: {', '.join(sorted(self.tools))}."
                outputs.append((call.name, ToolOutput(text, status="malformed")))
                continue
            try:
                outputs.append((call.name, await tool.run(call.arguments, self)))
            except infrastructure_errors():
                raise
            except (KeyError, TypeError, ValueError) as e:
                # Bad arguments for this tool: feedback for the model, not a crash.
                outputs.append((call.name, ToolOutput(f"Error: {type(e).__name__}: {e}", status="error")))
        return outputs

    def tool_message(self, text: str) -> Message:
        return {"role": self.observation_role, "content": text}

    async def on_episode_end(self) -> None:
        session, self._session, self.session_id = self._session, None, None
        if session is not None:
            await session.aclose()

    def _abandon_session(self) -> None:
        """An episode left unfinished (reset or close mid-episode) gives its session back too."""
        session, self._session, self.session_id = self._session, None, None
        if session is not None:
            session.close_soon()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[tuple, dict]:
        self._abandon_session()
        return super().reset(seed=seed, options=options)

    def close(self) -> None:
        self._abandon_session()
        super().close()


__all__ = ["BOXED_INSTRUCTION", "STOP_REASONS", "TOOL_METRICS", "StepResult", "TextEnv", "ToolEnv", "ToolUnavailable"]
