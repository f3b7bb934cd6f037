"""The study report on a synthetic study folder with known numbers: scalars, spikes, paired CIs, verdicts, docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentrl.study.report import (
    DOCS_BEGIN,
    DOCS_END,
    aggregate,
    claims,
    load_study,
    run_scalars,
    spike_threshold,
    write_docs,
    write_report,
)

STEPS = 6


def _rows(kl: list[float], reward: float, acc: float, ratio_max: float, sigma: float | None = None):
    rows = []
    for s in range(STEPS):
        r = {"step": s, "rollout/reward_mean": reward + 0.01 * s, "mm/kl_k3": kl[s], "mm/ratio_q99": 1.0 + kl[s],
             "mm/ratio_max": ratio_max if s == 3 else 1.1, "mm/seq_abs_log_ratio_max": 0.5,
             "mm/outside_band": 0.01, "ratio/q99": 1.05, "clip/frac": 0.0, "entropy": 0.3}
        if sigma is not None:
            r["sigma/mean"] = sigma
        if s == STEPS - 1:
            r["eval/accuracy"] = acc
        rows.append(r)
    return rows


def make_study(root: Path) -> Path:
    """bypass: KL spikes at steps 2 and 4; alp: none, higher accuracy in every seed; tis: equal to bypass."""
    quiet, spiky = [1e-3] * STEPS, [1e-3, 1e-3, 1e-1, 1e-3, 1e-1, 1e-3]
    runs = {
        "bypass": lambda s: _rows(spiky, 0.2, 0.10 + 0.01 * s, 5.0),
        "tis": lambda s: _rows(spiky, 0.2, 0.10 + 0.01 * s, 5.0),
        "alp@rel0.01": lambda s: _rows(quiet, 0.25, 0.15 + 0.01 * s + 0.002 * (s % 2), 2.0, sigma=0.01),
        "alp-token@rel0.01": lambda s: _rows(quiet, 0.2, 0.12 + 0.01 * s, 2.0, sigma=0.01),
        "alp@abs0.05": lambda s: _rows(quiet, 0.1, 0.05 + 0.01 * s, 2.0, sigma=0.05),
    }
    layout = {"stale4+bf16": {"describe": "rollout weights 4 updates old, rollout model in bf16",
                              "methods": {m: {} for m in runs}, "aliases": {"alp@0": "bypass"},
                              "controls": {"alp@rel0.01": "bypass", "alp-token@rel0.01": "alp-token@0"}}}
    meta = {"plan": {"name": "test", "preset": "tiny", "steps": STEPS, "seeds": 3, "sigma": "rel0.01",
                     "sigma_reg": [1e-3, 1e-3], "updates_per_rollout": 1},
            "command": "python -m agentrl.study mismatch --test", "train_config": {}, "start": "/x/tiny-abc",
            "layout": layout, "versions": {"cpus": "2", "torch": "x"}, "workers": 2, "wall_s": 60.0,
            "started": "a", "finished": "b"}
    root.mkdir(parents=True)
    (root / "study.json").write_text(json.dumps(meta))
    (root / "start_eval.json").write_text(json.dumps({"eval/accuracy": 0.1}))
    for method, make in runs.items():
        for seed in range(3):
            d = root / "runs" / "stale4+bf16" / method / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make(seed)))
            (d / "summary.json").write_text(json.dumps({"status": "done", "cell": "stale4+bf16", "method": method,
                                                        "mismatch": "stale4+bf16", "seed": seed}))
    unfinished = root / "runs" / "stale4+bf16" / "gspo" / "seed0"
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.jsonl").write_text(json.dumps(_rows(quiet, 0.2, 0.1, 1.0)[0]) + "\n")
    return root


def test_scalars_and_spike_threshold(tmp_path):
    study = load_study(make_study(tmp_path / "s"))
    assert study["incomplete"] == ["runs/stale4+bf16/gspo/seed0"]
    by_method = study["runs"]["stale4+bf16"]
    assert set(by_method) == {"bypass", "tis", "alp@rel0.01", "alp-token@rel0.01", "alp@abs0.05"}
    th = spike_threshold(by_method)
    assert th == pytest.approx(4 * 1e-3)  # the pooled median KL is 1e-3
    sc = run_scalars(by_method["bypass"][0], th)
    assert sc["spikes"] == 2 and sc["ratio_max"] == 5.0 and sc["acc"] == pytest.approx(0.10)
    assert sc["reward"] == pytest.approx(0.2 + 0.01 * 4)  # mean over steps 3, 4, 5
    assert sc["sigma"] is None
    assert run_scalars(by_method["alp@rel0.01"][1], th)["spikes"] == 0


def test_paired_verdicts(tmp_path):
    study = load_study(make_study(tmp_path / "s"))
    cell = aggregate(study)["stale4+bf16"]
    text = dict(claims(cell))
    tails = " ".join(text["Smaller ratio tails with ALP: the trainer's pi vs mu over training (vs the same "
                          "objective and clip without noise)"])
    assert "`alp@rel0.01` vs `bypass`, pi/mu max: holds" in tails
    assert "alp-token" not in tails  # its control alp-token@0 was not run
    assert "KL spikes: holds" in " ".join(text["Fewer KL spikes with ALP"])
    loss = " ".join(text["Smaller ratio tails with ALP: the ratio inside the loss (pi_delta/mu vs the control's pi/mu)"])
    assert "loss-ratio p99: no difference: equal in all 3 seeds" in loss
    seq = " ".join(text["Sequence-level ALP beats token-level ALP"])
    assert "held-out acc: holds" in seq
    better = text["Better final accuracy with ALP than the corrections in use"]
    assert any("vs `tis`, held-out acc: holds" in x for x in better)
    assert text["All layers > partial layers > logits only"] == []


def test_write_report_and_docs(tmp_path):
    root = make_study(tmp_path / "s")
    summary = write_report(root)
    report = (root / "report.md").read_text()
    assert "python -m agentrl.study mismatch --test" in report
    assert "| `alp@rel0.01` | 3 |" in report and "Paired differences vs `bypass`" in report
    assert "Incomplete runs left out: runs/stale4+bf16/gspo/seed0" in report
    assert all(Path(p).is_file() for p in summary["plots"])
    assert {Path(p).name for p in summary["plots"]} == {"stale4_bf16.png", "stale4_bf16-sigma.png"}
    assert "sigma sweep](plots/stale4_bf16-sigma.png)" in report
    docs = tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text("# Results\n\n## Training-inference mismatch\n\nvLLM numbers stay.\n")
    write_docs(root, docs)
    first = docs.read_text()
    assert "vLLM numbers stay." in first and DOCS_BEGIN in first and DOCS_END in first
    assert (tmp_path / "docs" / "study" / "test-stale4_bf16.png").is_file()
    assert "](study/test-stale4_bf16.png)" in first
    docs.write_text(first.replace(DOCS_END, DOCS_END + "\n\nHand-written reading after the block.\n"))
    write_docs(root, docs)  # regenerating replaces only the block
    second = docs.read_text()
    assert second.count(DOCS_BEGIN) == 1 and "Hand-written reading after the block." in second
    assert "vLLM numbers stay." in second


def test_not_a_study_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="study.json"):
        load_study(tmp_path)


def test_drift_on_a_study_folder_points_to_its_runs(tmp_path):
    from agentrl.study.drift import analyse

    with pytest.raises(FileNotFoundError, match="is a study folder: pass one of its runs"):
        analyse(make_study(tmp_path / "s"))
