"""python -m agentrl.eval: settings from a run folder (or the default recipe), flags over them, the paired gain,
and the command reproducing a training run's own held-out evaluation."""

from __future__ import annotations

import json

import pytest

from agentrl.config import ConfigError, dump_config, load_config
from agentrl.eval import _parse, accuracy_gain, find_run_dir, main, resolve_settings


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as agentrl.train leaves it (config.yaml, final/, a checkpoint's model/), with settings that
    differ from every default."""
    config = load_config(None, ["env.kwargs={digits: [1, 3], system_prompt: ''}", "env.eval_kwargs={split: test}",
                                "rollout.max_new_tokens=40", "rollout.max_turns=2", "eval.tasks=7",
                                "eval.samples=3", "eval.temperature=0.7", "run.seed=5"])
    root = tmp_path / "runs" / "x"
    (root / "final").mkdir(parents=True)
    (root / "checkpoints" / "step_000003" / "model").mkdir(parents=True)
    dump_config(config, root / "config.yaml")
    return root


def settings(*argv):
    return resolve_settings(_parse(list(argv)))


def test_a_model_inside_a_run_folder_is_evaluated_as_the_run_evaluates(run_dir):
    for argv in (["--run", str(run_dir)], ["--model", str(run_dir / "checkpoints/step_000003/model")],
                 ["--model", str(run_dir / "final")]):
        s = settings(*argv)
        assert s.env_id == "agentrl/Arithmetic-v0"
        assert s.env_kwargs == {"digits": [1, 3], "system_prompt": "", "split": "test"}
        assert (s.rollout.max_new_tokens, s.rollout.max_turns) == (40, 2)
        assert (s.tasks, s.samples, s.temperature, s.seed) == (7, 3, 0.7, 5)
        assert s.source == str(run_dir / "config.yaml")
    assert settings("--run", str(run_dir)).model == str(run_dir / "final")
    assert find_run_dir(str(run_dir.parent)) is None  # above the run: not inside it


def test_explicit_flags_win(run_dir):
    s = settings("--run", str(run_dir), "--n", "3", "--samples", "1", "--temperature", "0", "--seed", "9",
                 "--max-new-tokens", "30", "--env-kwargs", '{"split": "train"}')
    assert (s.tasks, s.samples, s.temperature, s.seed, s.rollout.max_new_tokens) == (3, 1, 0.0, 9, 30)
    assert s.env_kwargs == {"digits": [1, 3], "system_prompt": "", "split": "train"}  # merged over the run's
    other = settings("--run", str(run_dir), "--env", "agentrl/PythonMath-v0", "--env-kwargs", '{"limit": 4}')
    assert other.env_id == "agentrl/PythonMath-v0" and other.env_kwargs == {"limit": 4}  # not the run's env


def test_outside_a_run_the_default_recipe_is_the_task(tmp_path):
    """The default is what the default training run evaluates, not the env's own defaults."""
    recipe = load_config(None)
    s = settings("--model", "tiny")
    assert s.env_kwargs == {**recipe.env.kwargs, **recipe.env.eval_kwargs}
    assert s.env_kwargs["digits"] == [1, 2] and s.env_kwargs["system_prompt"] == "" and s.env_kwargs["split"] == "test"
    assert s.rollout.max_new_tokens == recipe.rollout.max_new_tokens and s.tasks == recipe.eval.tasks
    recipe_file = tmp_path / "mine.yaml"
    recipe_file.write_text("env: {id: agentrl/Arithmetic-v0, kwargs: {digits: 3}}\nrollout: {max_new_tokens: 20}\n")
    mine = settings("--model", "tiny", "--config", str(recipe_file))
    assert mine.env_kwargs == {"digits": 3, "split": "test"} and mine.rollout.max_new_tokens == 20


def test_bad_input_fails_before_any_model_loads(tmp_path, run_dir, capsys):
    assert main(["--run", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["--run", str(run_dir), "--env-kwargs", "{oops"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["--run", str(run_dir), "--env-kwargs", '{"digits": 99}']) == 2  # the env refuses its kwargs
    with pytest.raises(ConfigError, match="--model"):
        settings()


def test_gain_interval_is_paired_when_tasks_are_known():
    before = {"eval/accuracy": 0.5, "eval/tasks": 4.0, "eval/samples": 2.0}
    after = {"eval/accuracy": 0.75, "eval/tasks": 4.0, "eval/samples": 2.0}
    g = accuracy_gain(before, after, [0.0, 0.5, 1.0, 0.5], [0.5, 1.0, 1.0, 0.5])
    assert g.paired and g.mean == pytest.approx(0.25)
    # differences 0.5, 0.5, 0, 0: sd 0.2887, t(0.975, 3) = 3.182 -> half width 0.4594
    assert g.high - g.mean == pytest.approx(3.1824 * 0.288675 / 2, rel=1e-3)
    u = accuracy_gain(before, after)  # no per-task lists: two proportions of 8 samples each
    assert not u.paired and u.high - u.mean == pytest.approx(1.96 * (0.25 / 8 + 0.1875 / 8) ** 0.5)


@pytest.fixture(scope="module")
def sandbox_url():
    from tools.embedded import EmbeddedSandbox

    with EmbeddedSandbox() as sandbox:
        yield sandbox.url


def test_the_command_reproduces_the_runs_own_held_out_eval(tmp_path, sandbox_url, capsys):
    from agentrl.train import main as train_main

    assert train_main([f"run.output_dir={tmp_path}", f"sandbox.url={sandbox_url}", "run.steps=1",
                       "run.tasks_per_step=2", "rollout.n_samples=2", "rollout.max_turns=2",
                       "rollout.max_new_tokens=24", "rollout.max_context_tokens=256", "sft.steps=3", "sft.demos=4",
                       "sft.batch_size=4", "sft.copy_steps=2", "eval.tasks=6", "eval.samples=2", "eval.greedy=true",
                       "run.progress=false", "run.log_trajectories=0"]) == 0
    run = tmp_path / "tiny-arithmetic"
    evals = json.loads((run / "eval.json").read_text())
    assert all("eval/greedy_accuracy" in evals[label] for label in ("base", "before", "after"))
    assert len(json.loads((run / "eval_tasks.json").read_text())["after"]) == 6
    capsys.readouterr()
    # the post-SFT model (RUN_DIR/sft) was evaluated as "before" at policy version 0, as a fresh backend is: the
    # sampling seeds match, so the command must give the same numbers on the same tasks
    assert main(["--model", str(run / "sft"), "--sandbox-url", sandbox_url]) == 0
    out = capsys.readouterr()
    assert '"digits": [1, 2]' in out.err and "6 tasks x 2 samples" in out.err
    printed = {line.split()[0]: float(line.split()[1]) for line in out.out.splitlines() if line.startswith("eval/")}
    for key in ("eval/accuracy", "eval/response_length_mean", "eval/turns_mean", "eval/tool_call_rate"):
        assert printed[key] == pytest.approx(evals["before"][key], abs=1e-4), key
