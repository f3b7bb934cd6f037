"""The drift lab on run folders built here: real tiny-model samples, known staleness, dtype and turns."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
import yaml

from agentrl.inference.base import SamplingParams
from agentrl.inference.mismatch import MismatchSpec, make_rollout_backend
from agentrl.rollout.trajectory import Trajectory, write_jsonl
from agentrl.study.drift import analyse, to_markdown, weight_versions

OBSERVATION = [10, 11, 12, 13]  # stand-in tool-output tokens (masked)


def _two_turn_trajectories(model, tokenizer, spec: str, n: int = 4) -> list[Trajectory]:
    backend = make_rollout_backend(MismatchSpec.parse(spec), model, tokenizer, seed=0)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 7 * 8?"}],
                                           add_generation_prompt=True, tokenize=True, return_dict=False)
    out = []
    try:
        for i in range(n):
            c1 = asyncio.run(backend.generate(prompt, SamplingParams(max_new_tokens=12, seed=i)))[0]
            second = prompt + c1.token_ids + OBSERVATION
            c2 = asyncio.run(backend.generate(second, SamplingParams(max_new_tokens=12, seed=100 + i)))[0]
            P, A, Ob, B = len(prompt), len(c1.token_ids), len(OBSERVATION), len(c2.token_ids)
            out.append(Trajectory(
                token_ids=second + c2.token_ids, loss_mask=[0] * P + [1] * A + [0] * Ob + [1] * B,
                behavior_logprobs=[0.0] * P + c1.logprobs + [0.0] * Ob + c2.logprobs,
                turn_ids=[0] * P + [1] * (A + Ob) + [2] * B, policy_version=[-1] * P + [0] * A + [-1] * Ob + [0] * B,
                token_kinds=[0] * P + [1] * A + [2] * Ob + [1] * B, prompt_length=P, num_turns=2, group_id=i))
    finally:
        backend.close()
    return out


def make_run(root: Path, tiny, tiny_path: Path, spec: str) -> Path:
    from safetensors.torch import save_file

    model, tokenizer = tiny
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({
        "study_run": {"mismatch": spec}, "model": {"path": str(tiny_path)},
        "rollout": {"temperature": 1.0, "top_p": 1.0, "top_k": 0}}))
    (root / "trajectories").mkdir()
    write_jsonl(root / "trajectories" / "step_000000.jsonl", _two_turn_trajectories(model, tokenizer, spec))
    g = torch.Generator().manual_seed(0)
    newer = {k: (v + 0.02 * torch.randn(v.shape, generator=g)).contiguous() for k, v in model.state_dict().items()}
    (root / "weights").mkdir()
    save_file({k: v.clone() for k, v in newer.items()}, str(root / "weights" / "version_000002.safetensors"))
    (root / "weights.json").write_text(json.dumps({"0": str(tiny_path), "2": "weights/version_000002.safetensors"}))
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "sigma/layer_0": 0.01 + s * 1e-4,
                                                            "sigma/layer_1": 0.01, "sigma/mean": 0.01}) + "\n"
                                                for s in range(3)))
    return root


def test_drift_splits_engine_staleness_dtype_and_turns(tmp_path, tiny, tiny_path):
    torch.manual_seed(0)
    run = make_run(tmp_path / "bf16", tiny, tiny_path, "bf16")
    res = analyse(run)
    assert res["sampled_versions"] == [0] and res["weight_versions"] == [0, 2]
    gap0, gap2 = res["by_gap"][0], res["by_gap"][2]
    assert 1e-5 < gap0["abs_max"] < 0.1  # the bf16 engine vs the fp32 trainer, same weights
    assert gap2["abs_p99"] > 3 * gap0["abs_p99"]  # two versions of staleness dominate
    assert res["reference"] == {"gap": 0, "pairs": [{"weights": 0, "sampler": 0}]}
    causes = res["causes"]
    assert causes["truncation: none in this run (top_p=1, top_k=0)"]["abs_max"] == 0.0
    assert causes["batch+chunk: one sequence, plain path vs learner micro-batch, chunked"]["abs_max"] < 1e-4
    assert causes["dtype: bf16 trainer vs fp32 trainer"]["abs_max"] > 1e-4
    assert set(res["by_turn"]) == {1, 2}
    assert "first token after a tool output (turn >= 2)" in res["by_boundary"]
    assert sum(v["tokens"] for v in res["by_certainty"].values()) == res["loss_tokens"]
    assert res["sigma"]["layers"]["layer_0"] == (0.01, pytest.approx(0.0102))
    text = to_markdown(res)
    assert "## Staleness" in text and "## By cause" in text and "| layer_0 |" in text


def test_fp32_engine_replays_to_rounding(tmp_path, tiny, tiny_path):
    res = analyse(make_run(tmp_path / "none", tiny, tiny_path, "none"))
    assert res["by_gap"][0]["abs_max"] < 1e-4
    assert res["by_gap"][0]["outside_band"] == 0.0


def test_drift_bad_inputs(tmp_path, tiny, tiny_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        analyse(tmp_path)
    run = make_run(tmp_path / "r", tiny, tiny_path, "none")
    with pytest.raises(ValueError, match="logged steps: \\[0\\]"):
        analyse(run, steps=[5])
    (run / "weights.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="kept no model weights"):
        analyse(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text("rollout: {}\n")
    with pytest.raises(FileNotFoundError, match="no step_"):
        analyse(empty)


def test_weight_versions_of_a_train_run(tmp_path):
    run = tmp_path / "train"
    for n in (3, 7):
        (run / "checkpoints" / f"step_{n:06d}" / "model").mkdir(parents=True)
    (run / "final").mkdir()
    versions = weight_versions(run, {"run": {"steps": 8}, "sft": {"steps": 800}, "model": {"path": None}})
    assert versions == {4: run / "checkpoints/step_000003/model", 8: run / "checkpoints/step_000007/model"}
    base = tmp_path / "base"
    base.mkdir()
    versions = weight_versions(run, {"run": {"steps": 9}, "sft": {"steps": 0}, "model": {"path": str(base)}})
    assert versions[0] == base and versions[9] == run / "final"
