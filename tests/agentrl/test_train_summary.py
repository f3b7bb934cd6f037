"""What a training run tells its user: the progress line and the final summary (untrained -> SFT -> RL, RL's
gain with its paired interval, greedy accuracy beside it)."""

from __future__ import annotations

import json
import time

import pytest

from agentrl.config import load_config
from agentrl.ranks import Ranks
from agentrl.train import HeldOut, finish, progress_postfix


def test_progress_shows_excluded_episodes_only_when_there_are_some():
    metrics = {"rollout/reward_mean": 0.5, "rollout/accuracy": 0.5, "rollout/episodes": 128.0,
               "rollout/excluded": 0.0, "groups/all_equal_frac": 0.25}
    assert "excluded" not in progress_postfix(metrics)
    assert progress_postfix(metrics)["flat"] == "0.25"
    shown = progress_postfix({**metrics, "rollout/excluded": 24.0})
    assert shown["excluded"] == "24/128" and list(shown)[:3] == ["reward", "acc", "excluded"]


def _eval(accuracy: float, greedy: float) -> dict[str, float]:
    return {"eval/accuracy": accuracy, "eval/greedy_accuracy": greedy, "eval/tasks": 4.0, "eval/samples": 2.0,
            "eval/tool_call_rate": 1.0}


def test_summary_prints_the_three_phases_and_rl_gain_with_its_paired_interval(tmp_path, capsys):
    from agentrl.runtime import load_model

    config = load_config(None, ["eval.tasks=4", "eval.samples=2"])
    model, tokenizer = load_model(None)
    held_out = HeldOut(tmp_path, config, tokenizer, lambda: None, resume=False)
    held_out.evals = {"base": _eval(0.0, 0.0), "before": _eval(0.5, 0.5), "after": _eval(0.75, 1.0)}
    held_out.task_accuracy = {"before": [0.0, 0.5, 1.0, 0.5], "after": [0.5, 1.0, 1.0, 0.5]}
    summary = finish(config, tmp_path, model, tokenizer, held_out, Ranks(), sft_steps=7, started=time.perf_counter())
    out = capsys.readouterr().out
    assert "(4 tasks x 2 samples, temperature 1): untrained 0.000 -> after SFT 0.500 -> after RL 0.750" in out
    assert "greedy accuracy: 0.000 -> 0.500 -> 1.000" in out
    assert "RL gain +0.250 (95% CI [-0.209, +0.709], paired over tasks)" in out  # t(3) interval of the differences
    assert summary["rl_gain"]["paired"] and summary["rl_gain"]["mean"] == pytest.approx(0.25)
    assert (tmp_path / "final" / "config.json").is_file()


def test_per_task_accuracy_survives_resume(tmp_path):
    from agentrl.run_dir import write_evals

    write_evals(tmp_path, {"before": _eval(0.5, 0.5)})
    (tmp_path / HeldOut.TASKS_FILE).write_text(json.dumps({"before": [0.0, 1.0]}))
    held_out = HeldOut(tmp_path, load_config(None), None, lambda: None, resume=True)
    assert held_out.task_accuracy == {"before": [0.0, 1.0]} and "before" in held_out.evals
    assert HeldOut(tmp_path, load_config(None), None, lambda: None, resume=False).task_accuracy == {}
