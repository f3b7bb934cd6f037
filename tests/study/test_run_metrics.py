"""The study run's mismatch metrics: pi_theta vs mu on the loss tokens."""

from __future__ import annotations

import math

import pytest
import torch

from agentrl.study.run import mismatch_stats, staleness_of, task_seeds


def test_identical_policies_have_no_mismatch():
    logp = torch.log(torch.rand(3, 6) * 0.9 + 0.05)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0]], dtype=torch.float32)
    s = mismatch_stats(logp, logp.clone(), mask)
    assert s["mm/ratio_max"] == s["mm/ratio_min"] == 1.0
    assert s["mm/kl_k3"] == 0.0 and s["mm/kl_k1"] == 0.0 and s["mm/outside_band"] == 0.0
    assert s["mm/tokens"] == 8.0


def test_known_ratios_tails_and_sequences():
    mu = torch.zeros(2, 5)
    log_r = torch.tensor([[0.0, math.log(2.0), 0.0, 0.0, 5.0], [0.0, 0.05, -0.2, 0.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.float32)  # the 5.0 is masked out
    s = mismatch_stats(mu + log_r, mu, mask)
    tok = torch.tensor([math.log(2.0), 0.0, 0.05, -0.2, 0.0], dtype=torch.float64)
    assert s["mm/ratio_max"] == pytest.approx(2.0)
    assert s["mm/ratio_min"] == pytest.approx(math.exp(-0.2))
    assert s["mm/outside_band"] == pytest.approx(2 / 5)  # 2.0 and exp(-0.2) = 0.82 leave [0.9, 1.1]
    assert s["mm/kl_k3"] == pytest.approx(float((tok.exp() - 1 - tok).mean()))
    assert s["mm/kl_k1"] == pytest.approx(float(-tok.mean()))
    assert s["mm/seq_abs_log_ratio_max"] == pytest.approx(math.log(2.0))
    assert mismatch_stats(mu, mu, torch.zeros(2, 5)) == {}


def test_clamp_bounds_the_log_ratio():
    s = mismatch_stats(torch.tensor([[0.0, 50.0]]), torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]), clamp=20.0)
    assert s["mm/ratio_max"] == pytest.approx(math.exp(20.0))


def test_task_seeds_depend_on_seed_and_step_only():
    assert task_seeds(0, 3, 8) == task_seeds(0, 3, 8)
    assert task_seeds(0, 3, 8) != task_seeds(1, 3, 8) != task_seeds(0, 4, 8)
    assert task_seeds(0, 3, 4) == task_seeds(0, 3, 8)[:4]


def test_staleness_counts_sampled_tokens_only():
    from agentrl.rollout.trajectory import Trajectory

    t = Trajectory(token_ids=[1, 2, 3, 4, 5], loss_mask=[0, 1, 0, 1, 0], behavior_logprobs=[0.0, -1.0, 0.0, -1.0, 0.0],
                   turn_ids=[0, 1, 1, 2, 3], policy_version=[-1, 2, -1, 3, 4], token_kinds=[0, 1, 2, 1, 3],
                   prompt_length=1)
    assert staleness_of([t], 5) == pytest.approx(2.0)  # sampled tokens, the masked void turn too: (3 + 2 + 1) / 3
    excluded = Trajectory(**{**t.to_dict(), "loss_mask": [0] * 5, "behavior_logprobs": [0.0] * 5,
                             "token_kinds": [0, 3, 2, 3, 3], "excluded": "tool_error"})
    assert staleness_of([excluded], 5) == 0.0 and staleness_of([], 5) == 0.0
