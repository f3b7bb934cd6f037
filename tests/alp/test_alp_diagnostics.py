"""Learner diagnostics on constructed batches: what the noise itself does (noise/*) beside the rollout/trainer
mismatch (mismatch/*), and the share of groups whose rewards are all equal (groups/*)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from alp_models import make_batch, tiny_qwen2

from alp import Learner, get_preset
from alp.advantages import flat_groups
from alp.logprobs import sampling_logprobs, score
from alp.perturb import noise_key


def _log_ratio_stats(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """k3 per token, token log-ratio std and the std of per-sequence sums of log a - log b on mask."""
    log_r = (a - b) * mask
    n = mask.sum()
    k3 = float(((log_r.exp() - 1 - log_r) * mask).sum() / n)
    mean = float(log_r.sum() / n)
    std = math.sqrt(float((log_r**2).sum() / n) - mean**2)
    seq = log_r.sum(1).double()  # [B]
    return {"kl_k3": k3, "log_ratio_std": std, "seq_log_ratio_std": float(seq.std()) if len(seq) > 1 else 0.0}


@pytest.mark.parametrize("denominator", ["behavior", "old"])
def test_noise_and_mismatch_are_measured_apart(denominator):
    """noise/*: the perturbed policy (the update's own forward, same keys) against the unperturbed one at the
    same weights; mismatch/*: the unperturbed policy against mu. Both recomputed here by hand."""
    model = tiny_qwen2()
    batch = make_batch(model=model)  # mu = the model's logprobs + N(0, 0.05) per token: a known mismatch
    cfg = get_preset("alp", lr=1e-3, sigma_init=0.2, noise_scale="relative", ratio_denominator=denominator)
    learner = Learner(copy.deepcopy(model), cfg)
    learner.model.train()
    clean = score(learner.model, batch)  # [B, T]
    seq_ids = torch.arange(len(batch))
    with torch.no_grad(), learner.perturbation.active(step=0, micro_batch=0, sequence_ids=seq_ids,
                                                      lengths=batch.lengths):  # the update's keys: the same eps
        perturbed = sampling_logprobs(learner.model(batch.token_ids).logits, batch.token_ids)  # [B, T]
    m = learner.update(batch)  # one mini-batch: every sequence is in the probe

    for name, (a, b) in {"noise": (perturbed, clean), "mismatch": (clean, batch.behavior_logprobs)}.items():
        for key, value in _log_ratio_stats(a, b, batch.loss_mask).items():
            assert m[f"{name}/{key}"] == pytest.approx(value, rel=1e-4, abs=1e-7), (name, key)
    assert m["noise/kl_k3"] > 1e-4  # sigma 0.2 of the hidden RMS is not inert
    assert m["mismatch/log_ratio_std"] == pytest.approx(0.05, rel=0.3)  # what make_batch put in
    if denominator == "behavior":
        assert m["perf/noise_probe_seconds"] > 0  # its own forward; with "old" it reuses pi_old


def test_probe_is_only_the_first_mini_batch_and_can_be_off():
    batch = make_batch(model=tiny_qwen2())
    cfg = get_preset("alp", sigma_init=1e-3, noise_scale="relative", mini_batch_size=2, noise_probe_seqs=1)
    learner = Learner(tiny_qwen2(), cfg)
    order = torch.Generator().manual_seed(noise_key(cfg.seed, 0, 0, 0, 0, 0))  # the learner's shuffle at step 0
    shuffled = torch.randperm(len(batch), generator=order)
    first = int(shuffled[0])  # the one probed sequence: the first of the first mini-batch
    clean = score(learner.model, batch.select(torch.tensor([first])))
    m = learner.update(batch)
    expected = _log_ratio_stats(clean, batch.behavior_logprobs[[first]], batch.loss_mask[[first]])
    assert m["mismatch/kl_k3"] == pytest.approx(expected["kl_k3"], rel=1e-4)
    assert m["mismatch/seq_log_ratio_std"] == 0.0  # one sequence: no spread
    for off in (get_preset("alp", noise_probe_seqs=0), get_preset("bypass")):
        metrics = Learner(tiny_qwen2(), off).update(batch)
        assert not any(k.startswith(("noise/", "mismatch/")) for k in metrics)


def test_paper_sigma_is_inert_on_a_tiny_model():
    """The paper's absolute 1e-6 is below float32 resolution of the hidden states: no measurable noise."""
    batch = make_batch(model=tiny_qwen2())
    m = Learner(tiny_qwen2(), get_preset("alp")).update(batch)
    assert m["noise/kl_k3"] < 1e-9


def test_share_of_groups_with_equal_rewards():
    assert flat_groups(torch.tensor([1.0, 1, 0, 1, 0.5, 0.5, 2]), torch.tensor([0, 0, 1, 1, 5, 5, 9])).tolist() == [
        True, False, True, True]  # a group of one has no baseline either
    batch = make_batch(lengths=(8, 9, 10, 11, 12, 13), groups=3)  # groups 0, 1, 2, 0, 1, 2
    batch.rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])  # group 0 all 1, group 1 mixed, group 2 all 0
    m = Learner(tiny_qwen2(), get_preset("bypass")).update(batch)
    assert m["groups/count"] == 3 and m["groups/all_equal_frac"] == pytest.approx(2 / 3)
