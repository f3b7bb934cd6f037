"""Tasks from local JSONL / Parquet files and from HF ``datasets``, with a configurable field mapping.

GSM8K and MATH shapes work out of the box (``fields="gsm8k"`` / ``fields="math"``), and the two
bundled evaluation sets load by name: ``load_tasks("gsm8k")``, ``load_tasks("math500")``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..verify.extract import last_boxed
from .base import Task, TaskList

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BUNDLED = {"gsm8k": DATA_DIR / "gsm8k_test.jsonl", "math500": DATA_DIR / "math500.jsonl"}
"""Bundled sets (test splits, MIT licensed; see envs/data/README.md)."""

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def gsm8k_answer(text: str) -> str:
    """The number after ``####`` in a GSM8K solution, commas removed (as GSM8K's own extract_answer)."""
    match = _GSM8K_FINAL.search(text)
    return (match.group(1) if match else text).replace(",", "").strip()


def math_answer(text: str) -> str:
    """The last ``\\boxed{}`` of a MATH solution (the whole text when it has none)."""
    boxed = last_boxed(text)
    return boxed if boxed is not None else text.strip()


@dataclass(frozen=True)
class FieldMap:
    """Which record fields hold the question, the answer and the id.

    ``answer_from``: optional fallback field to extract the answer from when ``answer`` is missing
    (``answer_extract`` turns that text into the answer, e.g. GSM8K's ``#### N`` or MATH's last box).
    """

    question: str = "question"
    answer: str = "answer"
    id: str | None = "id"
    answer_from: str | None = None
    answer_extract: Callable[[str], str] | None = None

    def to_task(self, record: Mapping[str, Any], index: int, source: str) -> Task:
        if self.question not in record:
            raise KeyError(f"{source}: record {index} has no field {self.question!r} (fields: {sorted(record)})")
        if self.answer in record and record[self.answer] is not None:
            answer = str(record[self.answer])
            # GSM8K's original ``answer`` field is the whole worked solution ending in "#### N".
            if self.answer_extract is not None and "####" in answer:
                answer = self.answer_extract(answer)
        elif self.answer_from and self.answer_from in record:
            extract = self.answer_extract or (lambda s: s)
            answer = extract(str(record[self.answer_from]))
        else:
            raise KeyError(f"{source}: record {index} has no answer field {self.answer!r} (fields: {sorted(record)})")
        task_id = str(record[self.id]) if self.id and self.id in record else f"{source}-{index}"
        metadata = {k: v for k, v in record.items() if k not in (self.question, self.answer)}
        return Task(question=str(record[self.question]), answer=answer.strip(), id=task_id, metadata=metadata)


FIELD_PRESETS: dict[str, FieldMap] = {
    "default": FieldMap(),
    "gsm8k": FieldMap(question="question", answer="answer", id="id", answer_extract=gsm8k_answer),
    "math": FieldMap(
        question="problem", answer="answer", id="unique_id", answer_from="solution", answer_extract=math_answer
    ),
}


def _field_map(fields: str | FieldMap | Mapping[str, Any] | None) -> FieldMap:
    if fields is None:
        return FIELD_PRESETS["default"]
    if isinstance(fields, FieldMap):
        return fields
    if isinstance(fields, str):
        if fields not in FIELD_PRESETS:
            raise ValueError(f"unknown field preset {fields!r}; choose one of {sorted(FIELD_PRESETS)} or pass a FieldMap")
        return FIELD_PRESETS[fields]
    return FieldMap(**dict(fields))


def _read_records(path: Path) -> Iterable[Mapping[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            if suffix == ".json":
                data = json.load(f)
                yield from (data if isinstance(data, list) else data.get("data", []))
                return
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{line_no}: not valid JSON ({e})") from None
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
        yield from pq.read_table(path).to_pylist()
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json or .parquet)")


def load_tasks(
    source: str | Path,
    *,
    fields: str | FieldMap | Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> TaskList:
    """Load tasks from a bundled set name (``gsm8k``, ``math500``) or a JSONL/JSON/Parquet path.

    ``fields`` picks the field mapping: a preset name (``gsm8k``, ``math``, ``default``), a FieldMap,
    or a dict of FieldMap arguments, e.g. ``{"question": "prompt", "answer": "target"}``.
    """
    if isinstance(source, str) and source in BUNDLED:
        path = BUNDLED[source]
        if fields is None:
            fields = "gsm8k" if source == "gsm8k" else "math"
    else:
        path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"task file {path} not found (bundled sets: {sorted(BUNDLED)})")
    fmap = _field_map(fields)
    tasks = []
    for i, record in enumerate(_read_records(path)):
        if limit is not None and i >= limit:
            break
        tasks.append(fmap.to_task(record, i, path.stem))
    return TaskList(tasks, name=str(source))


def load_hf_tasks(
    name: str,
    *,
    split: str = "train",
    config: str | None = None,
    fields: str | FieldMap | Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> TaskList:
    """Tasks from a Hugging Face dataset (needs ``pip install datasets``), e.g. ``load_hf_tasks("openai/gsm8k",
    config="main", fields="gsm8k")``."""
    try:
        import datasets
    except ImportError:
        raise ImportError("load_hf_tasks needs the `datasets` package: pip install datasets") from None
    ds = datasets.load_dataset(name, config, split=split)
    fmap = _field_map(fields)
    tasks = []
    for i, record in enumerate(ds):
        if limit is not None and i >= limit:
            break
        tasks.append(fmap.to_task(record, i, f"{name}:{split}"))
    return TaskList(tasks, name=f"{name}:{split}")
