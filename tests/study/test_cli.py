"""``python -m agentrl.study``: help, dry runs and bad input (no training here)."""

from __future__ import annotations

import json

import pytest

from agentrl.study.__main__ import main
from agentrl.study.mismatch import QUICK


def test_quick_dry_run_lists_the_paired_runs(capsys, tmp_path):
    assert main(["mismatch", "--quick", "--dry-run", "--out", str(tmp_path / "s")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["plan"] == "quick" and plan["runs"] == len(QUICK.cells[0].methods) * QUICK.seeds
    assert list(plan["cells"]) == ["stale4+bf16"]
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_overrides_reach_the_plan(capsys):
    argv = ["mismatch", "--dry-run", "--mismatch", "bf16", "fp8-logits", "--methods", "bypass", "alp@0", "tis",
            "--seeds", "3", "--steps", "5", "--updates-per-rollout", "4", "--set", "run.tasks_per_step=4"]
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["runs"] == 2 * 2 * 3  # alp@0 is bypass: run once
    from agentrl.config import load_config

    assert plan["episodes_per_step"] == 4 * load_config(None, []).rollout.n_samples
    assert set(plan["cells"]) == {"bf16", "fp8-logits"}
    assert plan["cells"]["bf16"]["aliases"] == {"alp@0": "bypass"}


@pytest.mark.parametrize("argv, message", [
    (["mismatch", "--dry-run", "--methods", "alp-tokn"], "Did you mean 'alp-token'"),
    (["mismatch", "--dry-run", "--mismatch", "stale-1"], "cannot read"),
    (["mismatch", "--dry-run", "--set", "run.tasks_per_stp=4"], "tasks_per_step"),
    (["mismatch", "--dry-run", "--log-steps", "99"], "log steps"),
])
def test_bad_input_exits_2_with_the_reason(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_numbers_stop_before_any_work():
    with pytest.raises(SystemExit):
        main(["mismatch", "--dry-run", "--seeds", "0"])
    with pytest.raises(SystemExit):
        main(["mismatch", "--dry-run", "--sigma-reg", "1e-3"])


def test_report_and_drift_on_missing_folders(capsys, tmp_path):
    assert main(["report", str(tmp_path)]) == 2
    assert "study.json" in capsys.readouterr().err
    assert main(["drift", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_help_names_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "mismatch" in out and "drift" in out and "report" in out
