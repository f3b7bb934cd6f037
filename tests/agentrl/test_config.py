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


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.run.steps > 0, path


def test_tiny_cpu_yaml_is_the_default():
    from pathlib import Path

    path = Path(__file__).parents[2] / "configs" / "tiny_cpu.yaml"
    assert load_config(path).to_dict() == load_config().to_dict()
