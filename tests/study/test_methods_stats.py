"""Method labels -> learner configs, and the statistics the report rests on."""

from __future__ import annotations

import math

import pytest

from agentrl.study.methods import parse_sigma, resolve_method, resolve_methods
from agentrl.study.stats import paired, spread, t_cdf, t_quantile


# ------------------------------------------------------------------------------------------------ methods
def test_alp_label_resolves_noise_and_regulariser():
    m = resolve_method("alp@rel0.02", default_sigma="rel0.01", base={"lr": 1e-4}, sigma_reg=(1e-3, 2e-3))
    c = m.config
    assert (m.label, m.name, m.sigma) == ("alp@rel0.02", "alp", "rel0.02")
    assert c["noise_scale"] == "relative" and c["sigma_init"] == 0.02 and c["perturb_layers"] == "all"
    assert (c["sigma_reg_alpha"], c["sigma_reg_beta"]) == (1e-3, 2e-3)
    assert c["ratio_level"] == "sequence" and c["lr"] == 1e-4
    assert m.perturbs and m.control == "bypass"


def test_default_sigma_and_layer_variants():
    m = resolve_method("alp-late", default_sigma="abs1e-6")
    assert m.label == "alp-late@abs1e-6" and m.config["noise_scale"] == "absolute"
    assert m.config["sigma_init"] == 1e-6 and m.config["perturb_layers"] == "late"
    assert resolve_method("alp-early", default_sigma="rel0.01").config["perturb_layers"] == "early"
    assert resolve_method("alp-logits", default_sigma="rel0.01").config["perturb_layers"] == "logits"
    token = resolve_method("alp-token", default_sigma="rel0.01")
    assert token.config["ratio_level"] == "token" and token.control == "alp-token@0"


def test_sigma_zero_is_the_same_objective_without_noise():
    methods, aliases = resolve_methods(["bypass", "alp@0", "alp-late@0", "alp-token@0", "alp"],
                                       default_sigma="rel0.01")
    assert [m.label for m in methods] == ["bypass", "alp-token@0", "alp@rel0.01"]
    assert aliases == {"alp@0": "bypass", "alp-late@0": "bypass"}
    tok0 = methods[1].config
    assert tok0["perturb_layers"] == "none" and tok0["ratio_level"] == "token"
    assert tok0["epsilon_low"] == methods[2].config["epsilon_low"]  # same clip as its ALP twin
    assert not methods[1].perturbs


def test_baselines_and_the_usual_clip():
    ppo = resolve_method("bypass-ppo", default_sigma="rel0.01").config
    assert (ppo["epsilon_low"], ppo["epsilon_high"], ppo["dual_clip"]) == (0.2, 0.2, 3.0)
    bypass = resolve_method("bypass", default_sigma="rel0.01").config
    assert (bypass["epsilon_low"], bypass["epsilon_high"]) == (0.5, 3.0)
    tis = resolve_method("tis", default_sigma="rel0.01")
    assert tis.config["correction"] == "tis" and tis.config["ratio_denominator"] == "old" and tis.control is None


@pytest.mark.parametrize("label, match", [
    ("alp-tokn", "Did you mean 'alp-token'"),
    ("tis@rel0.01", "only ALP methods"),
    ("alp@rel-0.1", "sigma"),
    ("alp@0.01", "sigma"),
    ("alp@rel0", "sigma"),
])
def test_bad_labels_fail_with_the_fix(label, match):
    with pytest.raises(ValueError, match=match):
        resolve_method(label, default_sigma="rel0.01")


def test_parse_sigma():
    assert parse_sigma("rel0.01") == ("relative", 0.01)
    assert parse_sigma("abs1e-6") == ("absolute", 1e-6)
    assert parse_sigma("0") == ("none", 0.0)


def test_base_overrides_are_validated():
    with pytest.raises(ValueError, match="method 'bypass'"):
        resolve_method("bypass", default_sigma="rel0.01", base={"mini_batch_size": 0})


# -------------------------------------------------------------------------------------------------- stats
@pytest.mark.parametrize("df, q975", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (5, 2.5706), (10, 2.2281),
                                      (30, 2.0423), (1000, 1.9623)])
def test_t_quantile_matches_tables(df, q975):
    assert t_quantile(0.975, df) == pytest.approx(q975, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-q975, abs=1e-4)
    assert t_cdf(t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-9)


def test_t_inputs_are_checked():
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)


def test_paired_difference_interval():
    d = paired([1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 2.5, 2.0])  # differences 0.5, 1, 0.5, 2
    assert d.n == 4 and d.mean == pytest.approx(1.0)
    assert d.sd == pytest.approx(math.sqrt(0.5))
    half = 3.1824463 * math.sqrt(0.5) / 2
    assert (d.low, d.high) == (pytest.approx(1 - half), pytest.approx(1 + half))
    assert d.sign == 0  # the interval reaches below 0
    assert paired([2, 3, 4], [1, 2, 3.1]).sign == 1
    assert paired([1, 2, 3], [2, 3, 4.2]).sign == -1


def test_paired_drops_missing_pairs_and_refuses_unequal_lengths():
    d = paired([1.0, None, float("nan"), 2.0], [0.0, 1.0, 1.0, 1.0])
    assert d.n == 2
    one = paired([1.0], [0.0])
    assert one.n == 1 and math.isnan(one.low) and "no CI" in one.fmt()
    with pytest.raises(ValueError, match="equal length"):
        paired([1.0, 2.0], [1.0])


def test_spread_formats():
    assert spread([]).fmt() == "n/a"
    assert spread([0.5]).fmt() == "0.500"
    assert spread([1.0, 3.0]).fmt() == "2.000 ± 1.414"


# ------------------------------------------------------------------------------------------------- warm-up
def test_warmup_key_follows_the_config(tmp_path):
    from agentrl.config import load_config
    from agentrl.study.warmup import warmup_dir, warmup_key

    base = load_config(None, [])
    key = warmup_key(base)
    assert key["sft"]["steps"] == base.sft.steps and key["seed"] == base.run.seed and key["sft_code"]
    same = warmup_dir(load_config(None, []), tmp_path)
    assert same == warmup_dir(base, tmp_path) and same.parent == tmp_path
    assert warmup_dir(load_config(None, [f"sft.steps={base.sft.steps + 1}"]), tmp_path) != same
    assert warmup_dir(load_config(None, ["env.kwargs={digits: [1, 2]}"]), tmp_path) != same
    assert warmup_dir(load_config(None, ["learner.lr=0.5"]), tmp_path) == same  # RL settings do not matter


def test_ensure_warmup_builds_once_with_the_train_warm_up(tmp_path):
    import json

    from agentrl.config import load_config
    from agentrl.runtime import sandbox_for
    from agentrl.study.warmup import WARMUP_FILE, ensure_warmup

    config = load_config(None, ["sft.steps=2", "sft.demos=4", "sft.batch_size=2", "sft.copy_steps=2"])
    with sandbox_for(None):
        folder = ensure_warmup(config, root=tmp_path)
        meta = json.loads((folder / WARMUP_FILE).read_text())
        assert meta["copy_steps"] == 2 and meta["steps"] == 2 and meta["demos"] == 4
        stamp = (folder / WARMUP_FILE).stat().st_mtime_ns
        assert ensure_warmup(config, root=tmp_path) == folder  # cached: not rebuilt
        assert (folder / WARMUP_FILE).stat().st_mtime_ns == stamp
