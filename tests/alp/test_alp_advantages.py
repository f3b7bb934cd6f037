"""GRPO / Dr.GRPO / RLOO advantages and the batch constructor."""

from __future__ import annotations

import math

import pytest
import torch

from alp import TrainBatch, compute_advantages
from alp.advantages import broadcast_advantages

R = torch.tensor([1.0, 0.0, 1.0, 0.0, 5.0])
G = torch.tensor([0, 0, 0, 0, 1])  # the last group has one member: no baseline, advantage 0


def test_grpo():
    adv = compute_advantages(R, G, estimator="grpo")
    std = math.sqrt(4 * 0.25 / 3)  # unbiased
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 0.5, -0.5, 0.0]) / torch.tensor([std] * 4 + [1.0]),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_grpo_no_std_and_dr_grpo():
    for est in ("grpo_no_std", "dr_grpo"):
        torch.testing.assert_close(
            compute_advantages(R, G, estimator=est), torch.tensor([0.5, -0.5, 0.5, -0.5, 0.0])
        )


def test_rloo():
    adv = compute_advantages(R, G, estimator="rloo")
    torch.testing.assert_close(adv, torch.tensor([1 - 1 / 3, 0 - 2 / 3, 1 - 1 / 3, 0 - 2 / 3, 0.0]))


def test_equal_rewards_give_zero():
    adv = compute_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long), estimator="grpo")
    assert adv.abs().max().item() == 0.0


def test_unknown_estimator():
    with pytest.raises(ValueError, match="rloo"):
        compute_advantages(R, G, estimator="ppo")


def test_broadcast():
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(
        broadcast_advantages(torch.tensor([2.0, -1.0]), mask), torch.tensor([[0, 2, 2], [0, 0, -1.0]])
    )


def test_batch_from_lists_pads_and_validates():
    b = TrainBatch.from_lists(
        token_ids=[[1, 2, 3], [4, 5]], loss_mask=[[0, 1, 1], [0, 1]], behavior_logprobs=[[0, -1, -2], [0, -3]],
        rewards=[1, 0], group_ids=["p", "p"], temperature=0.7, top_p=0.9, top_k=5,
    )  # fmt: skip
    assert b.token_ids.tolist() == [[1, 2, 3], [4, 5, 0]]
    assert b.lengths.tolist() == [3, 2]
    assert b.group_ids.tolist() == [0, 0]
    assert (b.temperature, b.top_p, b.top_k) == (0.7, 0.9, 5)
    with pytest.raises(ValueError, match="position 0"):
        TrainBatch.from_lists(
            token_ids=[[1, 2]], loss_mask=[[1, 1]], behavior_logprobs=[[0, 0]], advantages=[1.0]
        )
    with pytest.raises(ValueError, match="align"):
        TrainBatch.from_lists(
            token_ids=[[1, 2]], loss_mask=[[0]], behavior_logprobs=[[0, 0]], advantages=[1.0]
        )
    with pytest.raises(ValueError, match="rewards and group_ids"):
        TrainBatch.from_lists(token_ids=[[1, 2]], loss_mask=[[0, 1]], behavior_logprobs=[[0, -1]])
