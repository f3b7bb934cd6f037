"""The sampling-distribution convention and the lean logprob path against the plain one."""

from __future__ import annotations

import math

import pytest
import torch

from alp.logprobs import chosen_logprobs, entropy_from_logits, sampling_distribution, sampling_logprobs


def test_temperature_and_alignment():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    lp = sampling_logprobs(logits, ids, temperature=0.7)
    assert lp.shape == (2, 5) and (lp[:, 0] == 0).all()
    ref = torch.log_softmax(logits[0, 2] / 0.7, -1)[ids[0, 3]]
    torch.testing.assert_close(lp[0, 3], ref)


def test_top_p_rule():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    keep = sampling_distribution(logits, top_p=0.75).exp()
    torch.testing.assert_close(keep, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert (sampling_distribution(logits, top_p=0.85).exp() > 0).tolist() == [True, True, True, False]
    # only the argmax when top_p is tiny
    assert (sampling_distribution(logits, top_p=1e-6).exp() > 0).tolist() == [True, False, False, False]
    # ties: stable sort keeps the lower token id first
    tied = torch.tensor([0.4, 0.3, 0.3]).log()
    assert (sampling_distribution(tied, top_p=0.5).exp() > 0).tolist() == [True, True, False]


def test_top_k_rule_keeps_boundary_ties():
    logits = torch.tensor([[1.0, 2.0, 2.0, 0.0], [3.0, 2.0, 2.0, 0.0]])
    kept = sampling_distribution(logits, top_k=2).exp() > 0
    assert kept.tolist() == [[False, True, True, False], [True, True, True, False]]


def test_top_k_then_top_p_and_minus_inf_outside():
    torch.manual_seed(1)
    logits = torch.randn(3, 6, 50)
    ids = torch.randint(0, 50, (3, 6))
    lp = sampling_logprobs(logits, ids, temperature=0.9, top_k=10, top_p=0.8)
    dist = sampling_distribution(logits[:, :-1], temperature=0.9, top_k=10, top_p=0.8)
    assert ((dist > -math.inf).sum(-1) <= 10).all()
    torch.testing.assert_close(dist.exp().sum(-1), torch.ones(3, 5))
    torch.testing.assert_close(lp[:, 1:], dist.gather(-1, ids[:, 1:, None]).squeeze(-1))


def test_bad_settings():
    with pytest.raises(ValueError, match="temperature"):
        sampling_distribution(torch.zeros(3), temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        sampling_distribution(torch.zeros(3), top_p=0.0)


@pytest.mark.parametrize("chunk", [1, 3, 512])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_lean_path_matches_plain_value_and_grad(chunk, temperature):
    torch.manual_seed(2)
    logits = torch.randn(2, 7, 33, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 33, (2, 7))
    w1, w2 = torch.randn(2, 7, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)
    lp, ent = chosen_logprobs(logits, ids, temperature=temperature, chunk_tokens=chunk)
    (lp * w1 + ent * w2).sum().backward()
    g_lean = logits.grad.clone()
    logits.grad = None
    lp_p = sampling_logprobs(logits, ids, temperature=temperature)
    ent_p = torch.nn.functional.pad(entropy_from_logits(logits[:, :-1], temperature=temperature), (1, 0))
    (lp_p * w1 + ent_p * w2).sum().backward()
    torch.testing.assert_close(lp, lp_p)
    torch.testing.assert_close(ent, ent_p.to(ent.dtype))
    torch.testing.assert_close(g_lean, logits.grad)


def test_lean_path_with_top_p_matches_plain():
    torch.manual_seed(3)
    logits = torch.randn(2, 6, 40)
    ids = torch.randint(0, 40, (2, 6))
    lp, _ = chosen_logprobs(logits, ids, temperature=0.8, top_p=0.9, top_k=20, chunk_tokens=2)
    torch.testing.assert_close(lp, sampling_logprobs(logits, ids, temperature=0.8, top_p=0.9, top_k=20))


@pytest.mark.parametrize("chunk_tokens,budget", [(0, 8192), (4, 8192), (0, 1)])
def test_score_equals_a_single_sequence_forward(qwen2, chunk_tokens, budget):
    from alp.batch import TrainBatch
    from alp.logprobs import score

    model = qwen2.eval()
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(5, 500, (n,), generator=g).tolist() for n in (12, 7, 20)]
    batch = TrainBatch.from_lists(token_ids=seqs, loss_mask=[[0] + [1] * (len(s) - 1) for s in seqs],
                                  behavior_logprobs=[[0.0] * len(s) for s in seqs], advantages=[0.0] * 3,
                                  temperature=0.8, top_k=50)
    out = score(model, batch, micro_batch_tokens=budget, chunk_tokens=chunk_tokens)
    assert out.shape == batch.token_ids.shape and not out.requires_grad
    for i, s in enumerate(seqs):
        ids = torch.tensor([s])
        with torch.no_grad():
            ref = sampling_logprobs(model(input_ids=ids).logits.float(), ids, temperature=0.8, top_k=50)[0]
        torch.testing.assert_close(out[i, : len(s)], ref, atol=1e-5, rtol=0)
        assert (out[i, len(s):] == 0).all()


def test_quantiles_match_torch_quantile():
    from alp.stats import quantiles

    x = torch.randn(1001, generator=torch.Generator().manual_seed(1))
    qs = [0.0, 0.01, 0.25, 0.5, 0.99, 1.0]
    assert quantiles(x, qs) == pytest.approx([torch.quantile(x.double(), q).item() for q in qs])
    assert all(math.isnan(v) for v in quantiles(torch.zeros(0), [0.5]))
    with pytest.raises(ValueError, match="quantile"):
        quantiles(x, [1.5])
