import pytest

from agentrl.config import ConfigError, load_config
from agentrl.train import main


def test_defaults_resolve_and_presets_apply():
    cfg = load_config()
    assert cfg.learner.build().perturb_layers == "all" and cfg.learner.build().ratio_level == "sequence"
    tis = load_config(None, ["learner.preset=tis", "learner.tis_cap=3"]).learner.build()
    assert tis.correction == "tis" and tis.tis_cap == 3.0


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  steps: 7\nlearner:\n  preset: bypass\n  lr: 1e-5\nenv:\n  kwargs: {digits: 3}\n")
    cfg = load_config(path, ["run.steps=9", "rollout.temperature=0.7"])
    assert cfg.run.steps == 9 and cfg.rollout.temperature == 0.7 and cfg.env.kwargs == {"digits": 3}
    assert cfg.learner.build().lr == 1e-5 and cfg.learner.build().perturb_layers == "none"


@pytest.mark.parametrize("override,message", [
    ("rollout.n_sample=4", "Did you mean 'n_samples'"),
    ("rolout.n_samples=4", "Did you mean 'rollout'"),
    ("learner.lrr=1e-6", "Did you mean 'lr'"),
    ("learner.preset=alpp", "Did you mean 'alp'"),
    ("rollout.n_samples=four", "wrong type: expected int"),
    ("model.dtype=fp8", "one of 'float32'"),
    ("rollout.n_samples=1", "at least 2 samples"),
    ("rollout.max_new_tokens=4096", "max_context_tokens"),
    ("rollout.temperature=0", "greedy"),
    ("backend.kind=openai", "backend.urls"),
    ("rollout.partial=true", "run.async=true"),
    ("rollout.max_staleness=0", "max_staleness"),
    ("backend.sleep=true", "backend.kind=vllm"),
    ("model.lora.r=-1", "model.lora.r"),
    ("run.keep_last=0", "run.keep_last"),
    ("eval.samples=0", "eval.samples"),
    ("run.steps", "key=value"),
    ("sft.warmup=1.5", "sft.warmup"),
    ("sft.final_lr=2", "sft.final_lr"),
    ("sft.stop_loss=0", "sft.stop_loss"),
])
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_cli_reports_config_errors_before_any_work(capsys):
    assert main(["rollout.n_sample=4"]) == 2
    assert "Did you mean 'n_samples'" in capsys.readouterr().err


def test_shipped_recipes_load_or_say_what_they_need():
    from agentrl.config import recipes

    assert {"tiny_cpu", "qwen2.5-7b-python-tool", "qwen2.5-math-1.5b-single-turn"} <= set(recipes())
    for name in recipes():
        try:
            cfg = load_config(name)
        except ConfigError as exc:  # the GPU recipes here: no vLLM installed, or no CUDA for its sleep mode
            assert "needs vLLM" in str(exc) or "no CUDA device" in str(exc), (name, exc)
            cfg = load_config(name, ["backend.kind=hf", "backend.sleep=false"])  # everything else still checked
        assert cfg.run.steps > 0, name


def test_backend_combinations_fail_when_the_config_is_built():
    with pytest.raises(ConfigError, match="only hf can"):
        load_config(None, ["run.async=true", "rollout.partial=true", "backend.kind=openai",
                           "backend.urls=[http://127.0.0.1:1]"])
    with pytest.raises(ConfigError, match="run.async=false"):
        load_config(None, ["run.async=true", "backend.sleep=true"])
    cfg = load_config(None, ["run.async=true", "rollout.partial=true", "model.lora.r=4"])
    assert cfg.run.async_ and cfg.to_dict()["run"]["async"] is True and cfg.model.lora.r == 4
    assert cfg.model.lora.target_modules == "all-linear"  # the rest of a nested section keeps its defaults


def test_no_config_means_the_tiny_cpu_recipe():
    from agentrl.config import RECIPES_DIR

    assert load_config().to_dict() == load_config("tiny_cpu").to_dict()
    assert load_config(RECIPES_DIR / "tiny_cpu.yaml").to_dict() == load_config().to_dict()
    with pytest.raises(ConfigError, match="Did you mean 'tiny_cpu'"):
        load_config("tiny_cpuu")


def test_a_recipe_without_lr_gets_the_presets_lr_not_the_cpu_demos(tmp_path):
    # The bug: every learner section had the CPU demo's lr=1e-4 merged in, so a 7B config that omitted lr
    # trained at 1e-4 instead of the preset's 1e-6.
    from alp.presets import get_preset

    path = tmp_path / "big.yaml"
    path.write_text("model:\n  path: Qwen/Qwen2.5-7B\nlearner:\n  preset: alp\n")
    learner = load_config(path).learner.build()
    assert learner.lr == get_preset("alp").lr == 1e-6
    assert learner.mini_batch_size == get_preset("alp").mini_batch_size
    assert load_config().learner.build().lr == 3e-4  # the CPU demo sets its own, in its recipe


def test_rollout_defaults_live_in_rollout_config(tmp_path):
    from agentrl.rollout import RolloutConfig

    path = tmp_path / "r.yaml"
    path.write_text("run:\n  steps: 3\n")
    assert load_config(path).rollout == RolloutConfig()


def test_resume_refuses_a_second_config(tmp_path):
    (tmp_path / "config.yaml").write_text("run:\n  steps: 3\n")
    assert main(["--resume", str(tmp_path), "--config", "tiny_cpu"]) == 2
