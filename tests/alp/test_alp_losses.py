"""Pinned loss values: PPO clip, dual clip, TIS, MIS, IcePop, GSPO and the sequence (Seq-ALP) ratio."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from alp import losses
from alp.config import LearnerConfig


def spec(**settings):
    """A LossSpec with LearnerConfig's defaults (the only place they live) and `settings` on top."""
    return LearnerConfig(**settings).loss_spec()

RATIOS = torch.tensor([[0.5, 1.0, 10.0]])  # [B=1, T=3]
ADV = torch.tensor([[1.0, -1.0, -4.0]])
MASK = torch.ones(1, 3)


def test_vanilla_ppo_pinned():
    loss, m = losses.ppo_clip_loss(RATIOS.log(), ADV, MASK, epsilon_low=0.2, epsilon_high=0.2)
    assert loss.sum().item() == pytest.approx(40.5)
    assert m["clip/low"].item() == 0 and m["clip/high"].item() == 0


def test_dual_clip_pinned():
    loss, m = losses.ppo_clip_loss(RATIOS.log(), ADV, MASK, epsilon_low=0.2, epsilon_high=0.2, dual_clip=3.0)
    assert loss.sum().item() == pytest.approx(12.5)
    assert m["clip/dual"].item() == 1


def _spec(**extra):
    return spec(ratio_level="token", epsilon_low=0.2, epsilon_high=0.2, dual_clip=None, **extra)


def test_bypass_token_sum_matches_ppo():
    logp = RATIOS.log()
    loss, _ = losses.policy_loss(_spec(loss_agg_mode="seq-mean-token-sum"), logp, torch.zeros(1, 3), ADV, MASK)
    assert loss.item() == pytest.approx(40.5)
    loss, _ = losses.policy_loss(_spec(loss_agg_mode="token-mean"), logp, torch.zeros(1, 3), ADV, MASK)
    assert loss.item() == pytest.approx(13.5)


def test_tis_pinned():
    # pi_old = denominator (decoupled), pi_old / mu = [0.5, 3, 1] -> weights min(., 2) = [0.5, 2, 1]
    behavior = -torch.tensor([[0.5, 3.0, 1.0]]).log()
    loss, m = losses.policy_loss(
        _spec(correction="tis", tis_cap=2.0, loss_agg_mode="seq-mean-token-sum"), RATIOS.log(), torch.zeros(1, 3),
        ADV, MASK, logp_behavior=behavior, logp_old=torch.zeros(1, 3),
    )  # fmt: skip
    assert loss.item() == pytest.approx(-0.5 * 0.5 + 1 * 2 + 40 * 1)  # 41.75
    assert m["clip/tis_capped"].item() == 1


def test_mis_pinned():
    # two sequences; prod pi_old / mu = 1.5 (kept) and 3 (masked out of [0.5, 2])
    logp = RATIOS.log().repeat(2, 1)
    adv = ADV.repeat(2, 1)
    corr = torch.tensor([[1.5, 1.0, 1.0], [1.5, 2.0, 1.0]]).log()
    loss, m = losses.policy_loss(
        _spec(correction="mis", mis_low=0.5, mis_high=2.0, loss_agg_mode="seq-mean-token-sum"), logp,
        torch.zeros(2, 3), adv, torch.ones(2, 3), logp_behavior=-corr, logp_old=torch.zeros(2, 3),
    )  # fmt: skip
    assert loss.item() == pytest.approx(40.5 / 2)  # seq 1 kept, seq 2 zeroed, both counted in N_seqs
    assert m["clip/correction_masked"].item() == 3


def test_icepop_pinned():
    corr = torch.tensor([[0.4, 1.0, 6.0]]).log()  # only the middle token is inside [0.5, 5]
    loss, m = losses.policy_loss(
        _spec(correction="icepop", icepop_low=0.5, icepop_high=5.0, loss_agg_mode="seq-mean-token-sum"),
        RATIOS.log(), torch.zeros(1, 3), ADV, MASK, logp_behavior=-corr, logp_old=torch.zeros(1, 3),
    )  # fmt: skip
    assert loss.item() == pytest.approx(1.0)
    assert m["clip/correction_masked"].item() == 2


def test_corrections_without_old_use_detached_current_policy():
    logp = torch.zeros(1, 3, requires_grad=True)
    behavior = torch.tensor([[0.0, 0.0, -math.log(10.0)]])  # pi / mu = [1, 1, 10] -> token 3 masked
    loss, m = losses.policy_loss(_spec(correction="icepop", loss_agg_mode="seq-mean-token-sum"), logp, behavior,
                                 -ADV, MASK, logp_behavior=behavior)  # fmt: skip
    assert m["clip/correction_masked"].item() == 1
    loss.backward()
    assert logp.grad[0, 2].item() == 0.0


def test_gspo_geometric_ratio_pinned():
    logp = RATIOS.log().clone().requires_grad_(True)
    s = 5.0 ** (1 / 3)  # geometric mean of [0.5, 1, 10]
    adv = -torch.ones(1, 3)
    gspo = spec(ratio_level="geometric", epsilon_low=0.2, epsilon_high=0.2, dual_clip=None,
                loss_agg_mode="seq-mean-token-mean")
    loss, _ = losses.policy_loss(gspo, logp, torch.zeros(1, 3), adv, MASK)
    assert loss.item() == pytest.approx(s, rel=1e-6)
    loss.backward()
    # r_t = sg[s] pi_t / sg[pi_t]: d/dlogp_t of mean_t(-A r_t) = s / 3
    torch.testing.assert_close(logp.grad, torch.full((1, 3), s / 3))
    loss, _ = losses.policy_loss(gspo, RATIOS.log(), torch.zeros(1, 3), torch.ones(1, 3), MASK)
    assert loss.item() == pytest.approx(-1.2)  # clipped at 1 + eps for A > 0


def test_sequence_ratio_pinned():
    logp = RATIOS.log().clone().requires_grad_(True)
    adv = -torch.ones(1, 3)
    log_r = losses.sequence_log_ratio(logp, torch.zeros(1, 3), MASK)
    torch.testing.assert_close(log_r, torch.full((1, 3), math.log(5.0)))  # rho = 0.5 * 1 * 10
    # paper clip [0.5, 4.0], A < 0: -A * max(r, clip(r)) = 5 per token; dual clip 3 -> 3
    loss, _ = losses.policy_loss(spec(ratio_level="sequence", dual_clip=None), logp, torch.zeros(1, 3), adv, MASK)
    assert loss.item() == pytest.approx(5.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.full((1, 3), 5.0 / 3))
    loss, m = losses.policy_loss(spec(ratio_level="sequence", dual_clip=3.0), logp, torch.zeros(1, 3), adv, MASK)
    assert loss.item() == pytest.approx(3.0)
    assert m["clip/dual"].item() == 3


def test_log_ratio_clamp_on_sequence_sum():
    logp = torch.full((1, 3), 10.0)
    log_r = losses.sequence_log_ratio(logp, torch.zeros(1, 3), MASK, clamp=20.0)
    torch.testing.assert_close(log_r, torch.full((1, 3), 20.0))
    _, m = losses.policy_loss(spec(ratio_level="sequence"), logp, torch.zeros(1, 3), ADV, MASK)
    assert m["clip/log_ratio_clamped"].item() == 3


def test_aggregation_modes():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert losses.aggregate(per_token, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert losses.aggregate(per_token, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert losses.aggregate(per_token, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    # global normalisers: two halves sum to the whole
    whole = losses.aggregate(per_token, mask, "token-mean")
    halves = sum(
        losses.aggregate(per_token[i : i + 1], mask[i : i + 1], "token-mean", num_tokens=4) for i in (0, 1)
    )
    torch.testing.assert_close(whole, halves)


def test_kl_estimators():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(losses.kl_penalty(logp, ref, "k1"), logp - ref)
    d = ref - logp
    torch.testing.assert_close(losses.kl_penalty(logp, ref, "k3"), d.exp() - d - 1)
    assert (losses.kl_penalty(logp, ref, "low_var_kl") >= 0).all()
    m = losses.mismatch_kl(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    assert m["k1"].item() == 0 and m["k3"].item() == 0


def test_unknown_options_name_the_choices():
    with pytest.raises(ValueError, match="token"):
        losses.log_ratio("tokens", RATIOS, RATIOS, MASK)
    with pytest.raises(ValueError, match="icepop"):
        losses.policy_loss(dataclasses.replace(spec(), correction="ice"), RATIOS, RATIOS, ADV, MASK)


def test_loss_spec_rejects_unknown_settings():
    # a misspelt setting fails instead of being ignored (the variants used to end in **_)
    with pytest.raises(TypeError, match="tis_capp"):
        dataclasses.replace(spec(), tis_capp=3.0)
    with pytest.raises(TypeError):
        losses.LossSpec(correction="none")  # no defaults here: they live in LearnerConfig
    with pytest.raises(ValueError, match="logp_behavior"):
        losses.policy_loss(spec(correction="tis"), RATIOS, RATIOS, ADV, MASK)
