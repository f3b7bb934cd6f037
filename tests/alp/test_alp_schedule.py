"""The policy learning-rate schedule: the pure function, what the learner's optimizer steps take, resume."""

from __future__ import annotations

import math

import pytest
import torch
from alp_models import make_batch, tiny_qwen2

from alp import Learner, get_preset
from alp.schedule import lr_factor


def test_warm_up_is_linear_from_the_first_step():
    assert [lr_factor(s, warmup_steps=4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0) == 1.0 and lr_factor(10**6) == 1.0  # default: constant


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decay_runs_from_the_peak_to_the_final_ratio_and_stays(schedule):
    kw = {"warmup_steps": 10, "schedule": schedule, "decay_steps": 110, "final_ratio": 0.2}
    f = [lr_factor(s, **kw) for s in range(130)]
    assert f[9] == 1.0 and f[10] == 1.0  # the warm-up ends at the peak, where the decay starts
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # non-increasing after the warm-up
    assert f[110] == pytest.approx(0.2) and f[129] == pytest.approx(0.2)
    halfway = 1 - 0.5 if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * 0.5))
    assert f[60] == pytest.approx(0.2 + 0.8 * halfway)
    assert lr_factor(35, **kw) == pytest.approx(0.2 + 0.8 * (0.75 if schedule == "linear" else
                                                            0.5 * (1 + math.cos(math.pi * 0.25))))


def test_unknown_schedule_and_bad_config_fail():
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, schedule="step")
    with pytest.raises(ValueError, match="lr_schedule"):
        get_preset("alp", lr_schedule="exponential")
    with pytest.raises(ValueError, match="lr_decay_steps"):
        get_preset("alp", lr_schedule="cosine", lr_warmup_steps=10, lr_decay_steps=10)
    with pytest.raises(ValueError, match="lr_final_ratio"):
        get_preset("alp", lr_schedule="linear", lr_decay_steps=10, lr_final_ratio=1.5)
    with pytest.raises(ValueError, match="lr_warmup_steps"):
        get_preset("alp", lr_warmup_steps=-1)


def test_learner_steps_take_the_scheduled_lr():
    """Adam's first step moves each parameter by lr x sign(grad) (plus weight decay): a warm-up of 10 steps makes
    that move a tenth of the peak lr. The sigma group keeps its own constant lr."""
    lr = 1e-3
    cfg = get_preset("bypass", lr=lr, lr_warmup_steps=10, weight_decay=0.0)
    model = tiny_qwen2()
    before = [p.detach().clone() for p in model.parameters()]
    learner = Learner(model, cfg)
    m = learner.update(make_batch(model=model))
    moved = max(float((p.detach() - q).abs().max()) for p, q in zip(model.parameters(), before, strict=True))
    assert moved == pytest.approx(lr / 10, rel=1e-3)
    assert m["lr"] == pytest.approx(lr / 10)
    assert learner.policy_lr(9) == pytest.approx(lr) and learner.policy_lr(10) == pytest.approx(lr)

    alp = Learner(tiny_qwen2(), get_preset("alp", lr=lr, sigma_lr=0.05, lr_warmup_steps=4, mini_batch_size=2))
    m = alp.update(make_batch())  # 6 sequences, 2 per optimizer step: steps 0, 1, 2
    assert alp.step == 3 and m["lr"] == pytest.approx(lr * 3 / 4)  # the last step's lr
    groups = {g["name"]: g["lr"] for g in alp.optimizer.param_groups}
    assert groups == {"policy": pytest.approx(lr * 3 / 4), "sigma": 0.05}


def test_resume_continues_the_schedule_exactly(tmp_path):
    cfg = get_preset("alp", lr=1e-3, sigma_lr=1e-2, sigma_init=0.01, lr_warmup_steps=2, lr_schedule="cosine",
                     lr_decay_steps=5, lr_final_ratio=0.1, mini_batch_size=3)
    b1, b2 = make_batch(seed=1), make_batch(seed=2)
    a = Learner(tiny_qwen2(), cfg)
    a.update(b1)
    torch.save(a.state_dict(), tmp_path / "ckpt.pt")
    ma = a.update(b2)
    b = Learner(tiny_qwen2(seed=5), cfg)
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt"))
    mb = b.update(b2)
    assert ma["lr"] == mb["lr"] == pytest.approx(1e-3 * lr_factor(3, warmup_steps=2, schedule="cosine",
                                                                  decay_steps=5, final_ratio=0.1))
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
