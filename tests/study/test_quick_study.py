"""The mismatch study's --quick plan, run for real (marker ``study``: ``pytest -m study tests/study``).

About 10 minutes on 2 cores once the warm-up policy is cached under $AGENTRL_HOME (the first run builds it:
~9 more minutes). Asserts what the study's design promises, not which method wins.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytestmark = [pytest.mark.study, pytest.mark.timeout(1800)]


def test_quick_study_end_to_end(tmp_path):
    from agentrl.inference.mismatch import MismatchSpec
    from agentrl.study.drift import analyse
    from agentrl.study.mismatch import QUICK, run_study
    from agentrl.study.report import load_study

    plan = replace(QUICK)
    out = tmp_path / "quick"
    summary = run_study(plan, out, workers=2, command="pytest -m study", progress=False)
    assert not summary["incomplete"]
    study = load_study(out)
    (cell,) = study["runs"]
    k = MismatchSpec.parse(plan.cells[0].mismatch).staleness
    runs = study["runs"][cell]
    assert len(runs) == len(plan.cells[0].methods) and all(len(v) == plan.seeds for v in runs.values())
    for seed in range(plan.seeds):
        first = [by_seed[seed][0] for by_seed in runs.values()]
        # paired design: at step 0 every method samples the same tokens (same weights, tasks, sampling streams);
        # the bf16 engine's logprobs of them vary slightly with the dynamic batch they were decoded in
        assert len({(r["rollout/reward_mean"], r["rollout/sampled_tokens"]) for r in first}) == 1
        kls = [r["mm/kl_k3"] for r in first]
        assert max(kls) < 1.5 * min(kls)
    for label, by_seed in runs.items():
        for rows in by_seed.values():
            assert [r["mm/staleness"] for r in rows] == [float(min(r["step"], k)) for r in rows]
            assert max(r["mm/kl_k3"] for r in rows[k:]) > rows[0]["mm/kl_k3"]  # staleness adds to bf16
            assert ("sigma/mean" in rows[-1]) == (label.startswith("alp") and not label.endswith("@0"))
            assert "eval/accuracy" in rows[-1]
    report = (out / "report.md").read_text()
    assert "Paired differences vs `bypass`" in report and "The paper's claims" in report
    run_dir = out / "runs" / cell / "bypass" / "seed0"
    res = analyse(run_dir)
    assert 0 in res["by_gap"] and k in res["by_gap"]
    assert res["by_gap"][k]["kl_k3"] > res["by_gap"][0]["kl_k3"]
    assert json.loads((out / "study.json").read_text())["wall_s"] > 0
