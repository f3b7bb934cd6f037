"""Task sources: bundled files, field mappings, procedural generator determinism."""

import json

import numpy as np
import pytest

from envs.tasks import ArithmeticTasks, FieldMap, Task, gsm8k_answer, load_tasks


def test_bundled_sets_load_with_their_shapes():
    gsm = load_tasks("gsm8k")
    assert len(gsm) == 1319 and gsm[0].id == "gsm8k_test_0000" and gsm[0].answer == "18"
    math = load_tasks("math500")
    assert len(math) == 500 and math[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math[0].id == "test/precalculus/807.json" and math[0].metadata["level"] == 2


def test_gsm8k_original_shape_extracts_final_number(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "q?", "answer": "work <<2*3=6>>\n#### 1,234"}) + "\n")
    (task,) = load_tasks(path, fields="gsm8k")
    assert task.answer == "1234" and gsm8k_answer("#### -3") == "-3"


def test_math_shape_falls_back_to_the_solution_box(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "so \\boxed{\\frac{1}{2}}."}) + "\n")
    assert load_tasks(path, fields="math")[0].answer == "\\frac{1}{2}"


def test_custom_field_mapping():
    from envs.tasks.files import DATA_DIR

    tasks = load_tasks(DATA_DIR / "tiny_custom.jsonl", fields={"question": "prompt", "answer": "target", "id": "key"})
    assert [t.id for t in tasks] == ["c1", "c2", "c3", "c4", "c5"] and tasks[1].answer == "36"
    with pytest.raises(KeyError, match="no field 'question'"):
        load_tasks(DATA_DIR / "tiny_custom.jsonl")
    assert isinstance(FieldMap(), FieldMap)


def test_parquet_when_pyarrow_is_installed(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"question": ["1+1?"], "answer": ["2"]}), path)
    assert load_tasks(path)[0].answer == "2"


def test_errors_are_helpful(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundled sets"):
        load_tasks(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_tasks(bad)


def test_arithmetic_is_seeded_and_exact():
    gen = ArithmeticTasks(digits=(20, 25), ops=["mul", "mod"])
    a = [gen.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [gen.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    for t in a:
        x, y = t.metadata["operands"]
        assert len(str(x)) >= 20
        expected = x * y if t.metadata["op"] == "mul" else None
        if expected is not None:
            assert t.answer == str(expected)
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTasks(ops=["pow"])
    with pytest.raises(ValueError, match="split"):
        ArithmeticTasks(split="val")


def test_task_from_value():
    assert Task.from_value({"question": "q", "answer": 3}).answer == "3"
    with pytest.raises(TypeError):
        Task.from_value({"q": 1})


def test_hf_loader_with_a_stand_in_datasets_module(monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("datasets")

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "2+2?", "answer": "work\n#### 4"}, {"question": "3+3?", "answer": "#### 6"}]

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    from envs.tasks import load_hf_tasks

    tasks = load_hf_tasks("openai/gsm8k", config="main", split="test", fields="gsm8k", limit=1)
    assert calls == [("openai/gsm8k", "main", "test")] and [t.answer for t in tasks] == ["4"]
