"""Built-in math environments.

- ``agentrl/Math-v0``: single turn; the response's last ``\\boxed{}`` is compared with the reference.
- ``agentrl/PythonMath-v0``: multi-turn tool-integrated reasoning (SimpleTIR style, the ALP paper's
  multi-turn setting): ```python blocks run in the sandbox, "Code execution result: ..." comes back,
  up to ``max_turns`` turns, final answer in ``\\boxed{}``.

Both take ``dataset``: a bundled name (``math500``, ``gsm8k``), a JSONL/Parquet path (with ``fields``),
a TaskSource, or a list of tasks.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from .base import BOXED_INSTRUCTION, TextEnv, ToolEnv
from .tasks import BUNDLED, FieldMap, Task, TaskSource, load_tasks

MATH_SYSTEM_PROMPT = "Solve the math problem step by step. " + BOXED_INSTRUCTION
PYTHON_MATH_SYSTEM_PROMPT = (
    "Solve the math problem step by step. You can run Python code: write it in a fenced block\n"
    "```python\n# your code\nprint(result)\n```\n"
    'and it is executed; its output comes back as "Code execution result: ...". Use print() to see '
    "values. When you know the answer, stop writing code and put the final answer within \\boxed{}."
)


def resolve_tasks(
    dataset: str | TaskSource | Sequence[Task | Mapping[str, Any]],
    fields: str | FieldMap | Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> Any:
    if isinstance(dataset, str):
        if dataset in BUNDLED and fields is None:
            return _bundled(dataset, limit)
        return load_tasks(dataset, fields=fields, limit=limit)
    return dataset


@functools.lru_cache(maxsize=8)
def _bundled(name: str, limit: int | None) -> Any:
    # Many env instances (one per concurrent episode) share one immutable TaskList.
    return load_tasks(name, limit=limit)


class MathEnv(TextEnv):
    """Single-turn math: the one response is final; reward 1 when its boxed answer is equivalent."""

    def __init__(
        self,
        dataset: str | TaskSource | Sequence[Task | Mapping[str, Any]] = "math500",
        *,
        fields: str | FieldMap | Mapping[str, Any] | None = None,
        limit: int | None = None,
        system_prompt: str | None = MATH_SYSTEM_PROMPT,
        **kwargs: Any,
    ):
        kwargs.setdefault("max_turns", 1)
        super().__init__(resolve_tasks(dataset, fields, limit), system_prompt=system_prompt, **kwargs)


class PythonMathEnv(ToolEnv):
    """Multi-turn math with a sandboxed Python tool (defaults: 5 turns, 3 s per run, 1024 output chars)."""

    def __init__(
        self,
        dataset: str | TaskSource | Sequence[Task | Mapping[str, Any]] = "math500",
        *,
        fields: str | FieldMap | Mapping[str, Any] | None = None,
        limit: int | None = None,
        system_prompt: str | None = PYTHON_MATH_SYSTEM_PROMPT,
        **kwargs: Any,
    ):
        kwargs.setdefault("max_turns", 5)
        super().__init__(resolve_tasks(dataset, fields, limit), system_prompt=system_prompt, **kwargs)
