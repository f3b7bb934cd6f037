"""What an episode is about: a ``Task`` (question, reference answer, metadata) and where tasks come from."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Task:
    """One problem. ``answer`` is the reference the verifier compares against (a string)."""

    question: str
    answer: str
    id: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A fresh, JSON-friendly copy (safe to put in ``info``)."""
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "metadata": copy.deepcopy(dict(self.metadata)),
        }

    @classmethod
    def from_value(cls, value: Task | Mapping[str, Any]) -> Task:
        """Accept a Task or a mapping with question/answer (and optional id/metadata)."""
        if isinstance(value, Task):
            return value
        if isinstance(value, Mapping) and "question" in value and "answer" in value:
            return cls(
                question=str(value["question"]),
                answer=str(value["answer"]),
                id=str(value.get("id", "")),
                metadata=dict(value.get("metadata") or {}),
            )
        raise TypeError(f"expected a Task or a mapping with 'question' and 'answer', got {value!r:.200}")


@runtime_checkable
class TaskSource(Protocol):
    """Anything an env can draw tasks from. ``sample`` must depend only on ``rng`` (seeded resets)."""

    def sample(self, rng: np.random.Generator) -> Task: ...


class TaskList:
    """A fixed list of tasks (a loaded file or dataset). Sampling is uniform with the given rng."""

    def __init__(self, tasks: Sequence[Task], name: str = "tasks"):
        if not tasks:
            raise ValueError(f"{name}: no tasks")
        self.tasks = tuple(tasks)
        self.name = name

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]

    def __iter__(self):
        return iter(self.tasks)

    def sample(self, rng: np.random.Generator) -> Task:
        return self.tasks[int(rng.integers(len(self.tasks)))]

    def __repr__(self) -> str:
        return f"TaskList({self.name!r}, {len(self.tasks)} tasks)"
