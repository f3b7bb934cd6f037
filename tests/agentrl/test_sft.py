import math

import pytest
import torch

from agentrl.rollout.trajectory import TokenKind, Trajectory
from agentrl.sft import STOP_WINDOW, copy_examples, sft, sft_schedule


def test_lr_factor_warms_up_then_decays_to_the_final_fraction():
    steps, warmup, final = 100, 0.1, 0.2
    factors = [sft_schedule(steps, warmup, final)(s) for s in range(steps + 1)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)  # linear ramp over 10 steps
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))  # then non-increasing
    assert factors[steps] == pytest.approx(final)
    assert sft_schedule(100, 0.0, 1.0)(50) == 1.0  # constant by default
    mid = sft_schedule(steps, warmup, final)(10 + 45)  # half way through the cosine
    assert mid == pytest.approx(final + (1 - final) * 0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.fixture
def tiny_demo() -> Trajectory:
    ids = [1, 2, 3, 4, 5, 6, 7]  # every token has one successor: a bigram table fits it exactly
    sampled = [0, 0] + [1] * (len(ids) - 2)
    return Trajectory(token_ids=ids, loss_mask=sampled, behavior_logprobs=[0.0] * len(ids), turn_ids=[0] * len(ids),
                      policy_version=[0] * len(ids), prompt_length=2,
                      token_kinds=[int(TokenKind.SAMPLED if m else TokenKind.PROMPT) for m in sampled])


class _Bigram(torch.nn.Module):
    """A one-table next-token model: learns a fixed sequence to near-zero loss in a few hundred steps."""

    def __init__(self, vocab: int = 8):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.table(input_ids)})()


def test_stop_loss_ends_training_early_and_steps_cap_it(tiny_demo):
    torch.manual_seed(0)
    model = _Bigram()
    losses = sft(model, [tiny_demo], steps=2000, batch_size=1, lr=0.1, seed=0, pad_id=0, stop_loss=0.05)
    assert STOP_WINDOW <= len(losses) < 2000
    assert sum(losses[-STOP_WINDOW:]) / STOP_WINDOW <= 0.05
    capped = sft(_Bigram(), [tiny_demo], steps=5, batch_size=1, lr=0.1, seed=0, pad_id=0, stop_loss=1e-9)
    assert len(capped) == 5


def test_copy_examples_put_the_loss_on_the_copy_only():
    from agentrl.tiny import load_tiny

    _, tokenizer = load_tiny("tiny")
    examples = copy_examples(tokenizer, 50, seed=3)
    assert [e.token_ids for e in examples] == [e.token_ids for e in copy_examples(tokenizer, 50, seed=3)]
    for e in examples:
        copied = [t for t, m in zip(e.token_ids, e.loss_mask, strict=True) if m]
        assert copied == e.token_ids[: len(copied)]  # the trained part repeats the start of the sequence
        assert " | " in tokenizer.decode(e.token_ids[e.prompt_length - 3: e.prompt_length])
