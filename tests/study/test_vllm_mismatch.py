"""The real mismatch: a study run whose rollouts come from the vLLM engine (marker ``vllm``; make test-vllm).

Skips where vllm is not importable (the main .venv). With vLLM's fp32 CPU kernels the engine matches the
trainer to float32 rounding at step 0, and the rollouts carry the stale wrapper's true versions.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from agentrl.inference.vllm import vllm_available

_OK, _WHY = vllm_available()
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200),
              pytest.mark.skipif(not _OK, reason=f"vllm not importable: {_WHY}")]
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def test_study_run_with_vllm_rollouts(tmp_path, tiny_path, sandbox):
    from agentrl.config import load_config
    from agentrl.study.methods import resolve_method
    from agentrl.study.run import RunSpec, train_run

    # the untrained tiny model writes void turns: keep them in the loss so the mismatch has tokens to measure
    config = load_config(None, ["run.tasks_per_step=2", "rollout.n_samples=2", "eval.tasks=4",
                                "rollout.mask_void_turns=false"])
    method = resolve_method("bypass", default_sigma="rel0.01", base=dict(config.learner.overrides))
    spec = RunSpec(run_dir=str(tmp_path / "run"), start=str(tiny_path), mismatch="vllm+stale1", method="bypass",
                   learner=method.config, seed=0, steps=3, train_config=config.to_dict(), log_steps=[0, 2])
    summary = asyncio.run(train_run(spec))
    assert summary["status"] == "done" and summary["mismatch"] == "stale1+vllm"
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["mm/staleness"] for r in rows] == [0.0, 1.0, 1.0]
    assert abs(rows[0]["mm/ratio_max"] - 1) < 1e-4 and abs(rows[0]["mm/ratio_min"] - 1) < 1e-4
    assert rows[2]["mm/kl_k3"] > rows[0]["mm/kl_k3"]
