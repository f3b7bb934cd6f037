"""Task sources: procedural generators, local files (JSONL/Parquet) and HF datasets."""

from .arithmetic import OPS as OPS_DEFAULT
from .arithmetic import ArithmeticTasks, in_test_split
from .base import Task, TaskList, TaskSource
from .files import BUNDLED, FIELD_PRESETS, FieldMap, gsm8k_answer, load_hf_tasks, load_tasks, math_answer

__all__ = [
    "BUNDLED",
    "OPS_DEFAULT",
    "FIELD_PRESETS",
    "ArithmeticTasks",
    "FieldMap",
    "Task",
    "TaskList",
    "TaskSource",
    "gsm8k_answer",
    "in_test_split",
    "load_hf_tasks",
    "load_tasks",
    "math_answer",
]
