"""Learner: exact micro-batch aggregation, determinism, resume, metrics, presets and config errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from alp_models import make_batch, tiny_llama, tiny_qwen2

from alp import PRESETS, Learner, LearnerConfig, TrainBatch, get_preset
from alp.batch import pack_micro_batches


def _grads(learner: Learner) -> list[torch.Tensor]:
    return [p.grad.clone() for g in learner.optimizer.param_groups for p in g["params"]]


@pytest.mark.parametrize(
    "preset,extra",
    [
        ("alp", {}),
        ("alp-token", {"noise_scale": "relative", "sigma_init": 0.05}),
        ("gspo", {}),
        ("tis", {"loss_agg_mode": "seq-mean-token-sum"}),
    ],
)
def test_micro_batch_size_invariance(preset, extra):
    """Same gradients and loss (1e-6) whether sequences go one by one or all at once."""
    model = tiny_qwen2()
    batch = make_batch(model=model)
    results = []
    for budget in (8, 10_000):
        cfg = get_preset(
            preset, lr=0.0, sigma_lr=0.0, micro_batch_tokens=budget, **{"sigma_init": 0.02, **extra}
        )
        learner = Learner(copy.deepcopy(model), cfg)
        metrics = learner.update(batch)
        results.append((metrics, _grads(learner)))
    (m0, g0) = results[0]
    assert m0["perf/micro_batches"] == len(batch)  # budget 8 < every length: one sequence per micro-batch
    assert results[-1][0]["perf/micro_batches"] == 1
    for m, g in results[1:]:
        assert m["loss/policy"] == pytest.approx(m0["loss/policy"], abs=1e-6)
        assert m["ratio/mean"] == pytest.approx(m0["ratio/mean"], abs=1e-6)
        for a, b in zip(g0, g, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cpu_runs_repeat_exactly():
    batch = make_batch()
    outs = []
    for _ in range(2):
        learner = Learner(tiny_qwen2(), get_preset("alp", lr=1e-3, sigma_lr=1e-2, mini_batch_size=3))
        m = learner.update(batch)
        outs.append((m, [p.detach().clone() for p in learner.model.parameters()], learner.perturbation.sigma))
    assert {k: v for k, v in outs[0][0].items() if not k.startswith("perf/")} == {
        k: v for k, v in outs[1][0].items() if not k.startswith("perf/")
    }
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(outs[0][2], outs[1][2])


def test_update_metrics_and_sigma_moves():
    model = tiny_qwen2()
    batch = make_batch(model=model, temperature=0.8)
    learner = Learner(model, get_preset("alp", lr=1e-3, sigma_lr=0.05, sigma_init=0.01, mini_batch_size=2))
    m = learner.update(batch)
    assert learner.step == 3 and m["perf/optimizer_steps"] == 3
    for key in ("loss/policy", "loss/total", "ratio/mean", "ratio/std", "ratio/min", "ratio/max", "ratio/q01",
                "ratio/q50", "ratio/q99", "clip/low_frac", "clip/high_frac", "clip/dual_frac", "clip/frac",
                "kl/mu_pi_k1", "kl/mu_pi_k3", "sigma/0", "sigma/3", "sigma/mean", "entropy", "grad_norm",
                "perf/tokens_per_s", "perf/seconds"):  # fmt: skip
        assert key in m, key
        assert isinstance(m[key], float)
    assert all(v == v for v in m.values())  # no NaN
    assert m["ratio/min"] <= m["ratio/q01"] <= m["ratio/q50"] <= m["ratio/q99"] <= m["ratio/max"]
    sigma = learner.perturbation.sigma.detach()
    assert not torch.allclose(sigma, torch.full_like(sigma, 0.01))
    assert m["entropy"] > 0


def test_behavior_equal_to_model_gives_unit_ratio():
    model = tiny_qwen2()
    batch = make_batch(model=model)
    batch.behavior_logprobs = batch.behavior_logprobs.clone()
    # exact own logprobs (make_batch adds mismatch noise): recompute without it
    from alp.logprobs import sampling_logprobs

    with torch.no_grad():
        lp = sampling_logprobs(model(batch.token_ids).logits, batch.token_ids)
    batch.behavior_logprobs = lp * batch.loss_mask
    for preset in ("alp-token", "bypass", "ppo-decoupled"):
        learner = Learner(copy.deepcopy(model), get_preset(preset, sigma_init=1e-8))
        m = learner.update(batch)
        assert m["ratio/max"] == pytest.approx(1.0, abs=1e-4), preset
        assert m["ratio/min"] == pytest.approx(1.0, abs=1e-4), preset
        assert abs(m["kl/mu_pi_k1"]) < 1e-5


def test_state_dict_resume_is_exact(tmp_path):
    b1, b2 = make_batch(seed=1), make_batch(seed=2)
    cfg = get_preset("alp", lr=1e-3, sigma_lr=1e-2, sigma_init=0.01)
    a = Learner(tiny_qwen2(), cfg)
    a.update(b1)
    torch.save(a.state_dict(), tmp_path / "ckpt.pt")
    ma = a.update(b2)
    b = Learner(tiny_qwen2(seed=5), cfg)
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt"))
    assert b.step == 1
    mb = b.update(b2)
    assert ma["loss/policy"] == mb["loss/policy"]
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(a.perturbation.log_sigma, b.perturbation.log_sigma)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_updates_on_llama(name):
    model = tiny_llama(layers=3)
    kw = {"lr": 1e-3}
    ref = None
    if name == "alp-single-turn":
        ref = copy.deepcopy(model)
    m = Learner(model, get_preset(name, **kw), ref_model=ref).update(
        make_batch(model=model, lengths=(10, 8, 12, 9))
    )
    assert m["loss/total"] == m["loss/total"]
    assert m["grad_norm"] > 0
    if name == "alp-single-turn":
        assert "kl/ref_low_var_kl" in m
    if PRESETS[name].get("ratio_denominator") == "old":
        assert "kl/mu_old_k3" in m


def test_gradient_checkpointing_option_same_update():
    batch = make_batch()
    grads = []
    for ckpt in (False, True):
        learner = Learner(tiny_qwen2(), get_preset("alp", sigma_init=0.02, gradient_checkpointing=ckpt))
        learner.update(batch)
        grads.append(_grads(learner))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_entropy_and_kl_terms_and_advantages_given():
    model = tiny_qwen2()
    batch = make_batch(model=model)
    batch.advantages = torch.linspace(-1, 1, len(batch))
    cfg = get_preset("alp", entropy_coef=0.01, kl_coef=0.1, kl_estimator="k3", logprob_chunk_tokens=0)
    with pytest.raises(ValueError, match="ref_model"):
        Learner(model, cfg)
    m = Learner(model, cfg, ref_model=copy.deepcopy(model)).update(batch)
    assert m["loss/entropy"] > 0 and "kl/ref_k3" in m
    assert m["loss/total"] == pytest.approx(
        m["loss/policy"] + 0.1 * m["loss/kl"] - 0.01 * m["loss/entropy"], rel=1e-5
    )


def test_pack_micro_batches():
    lengths = torch.tensor([5, 9, 3, 9, 4])
    mbs = pack_micro_batches(lengths, torch.arange(5), token_budget=18)
    assert [mb.tolist() for mb in mbs] == [[1, 3], [0, 4, 2]]
    assert [mb.tolist() for mb in pack_micro_batches(lengths, torch.arange(5), 1)] == [
        [1],
        [3],
        [0],
        [4],
        [2],
    ]


def test_config_and_preset_errors():
    with pytest.raises(KeyError, match="alp-token"):
        get_preset("alp-tokn")
    with pytest.raises(ValueError, match="ratio_level"):
        LearnerConfig(ratio_level="seq")
    with pytest.raises(ValueError, match="epsilon_low"):
        LearnerConfig(epsilon_low=1.5)
    with pytest.raises(ValueError, match="dual_clip"):
        LearnerConfig(dual_clip=0.5)
    with pytest.raises(TypeError):
        get_preset("alp", no_such_field=1)
    assert get_preset("alp") == LearnerConfig()
    assert get_preset("gspo").ratio_level == "geometric"


def test_sampling_settings_reach_the_logprobs():
    """A token outside the rollout's top-k gets ratio 0 (clamped), so top-k is really applied."""
    model = tiny_qwen2()
    b = make_batch(model=model, lengths=(8, 8))
    batch = TrainBatch(
        token_ids=b.token_ids, loss_mask=b.loss_mask, behavior_logprobs=b.behavior_logprobs, advantages=[1.0, -1.0],
        temperature=1.0, top_k=1,
    )  # fmt: skip
    m = Learner(model, get_preset("alp-token", log_ratio_clamp=20.0)).update(batch)
    assert m["ratio/min"] < 1e-6


@pytest.mark.parametrize("preset", ["alp", "tis", "gspo"])
def test_truncated_sampling_with_prompt_tokens_outside_the_set_stays_finite(preset):
    """Prompt and padding tokens outside a top-k set have logprob -inf; masked out, they must not turn the
    sequence sums (or pi_old / mu) into NaN."""
    model = tiny_qwen2()
    b = make_batch(model=model, lengths=(8, 5))
    batch = TrainBatch(
        token_ids=b.token_ids, loss_mask=b.loss_mask, behavior_logprobs=b.behavior_logprobs, advantages=[1.0, -1.0],
        temperature=1.0, top_k=2, lengths=b.lengths,
    )  # fmt: skip
    m = Learner(model, get_preset(preset, kl_coef=0.0)).update(batch)
    for key in ("loss/policy", "grad_norm", "kl/mu_pi_k3"):
        assert math.isfinite(m[key]), (key, m[key])
