"""Layerwise perturbation: exactness at sigma -> 0, sigma gradients, hook hygiene, recompute, layer selection."""

from __future__ import annotations

import copy

import pytest
import torch
from alp_models import VOCAB, tiny_llama, tiny_qwen2
from torch import nn
from torch.utils.checkpoint import checkpoint

from alp import LayerPerturbation, find_decoder_layers
from alp.logprobs import sampling_logprobs
from alp.perturb import noise_key, select_layers

IDS = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))


def _logits(model, ids=IDS):
    return model(input_ids=ids, use_cache=False).logits


def test_sigma_to_zero_is_exact(qwen2):
    base = _logits(qwen2)
    pert = LayerPerturbation(qwen2, layers="all", sigma_init=1e-30)
    with pert.active(step=0):
        out = _logits(qwen2)
    torch.testing.assert_close(out, base, rtol=0, atol=0)
    with torch.no_grad():
        pert.log_sigma.fill_(-200.0)  # sigma underflows to exactly 0
    with pert.active(step=1):
        assert torch.equal(_logits(qwen2), base)


def test_noise_changes_output_and_is_reproducible(qwen2):
    pert = LayerPerturbation(qwen2, layers="all", sigma_init=0.05)
    with pert.active(step=3, micro_batch=1):
        a = _logits(qwen2)
    with pert.active(step=3, micro_batch=1):
        b = _logits(qwen2)
    with pert.active(step=4, micro_batch=1):
        c = _logits(qwen2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, _logits(qwen2))


def test_noise_keyed_by_sequence_not_by_packing(qwen2):
    """A sequence gets the same noise alone or packed with others (given its sequence id and length)."""
    pert = LayerPerturbation(qwen2, layers="all", sigma_init=0.05)
    ids = IDS.clone()
    with pert.active(step=0, sequence_ids=[7, 9], lengths=[9, 6]):
        both = _logits(qwen2, ids)
    with pert.active(step=0, sequence_ids=[9], lengths=[6]):
        alone = _logits(qwen2, ids[1:, :6])
    torch.testing.assert_close(both[1, :6], alone[0], rtol=1e-5, atol=1e-5)
    assert noise_key(0, 1, 2, 3, 4, 0) != noise_key(0, 1, 2, 3, 4, 1)


def test_d_loss_d_log_sigma_matches_finite_difference():
    model = tiny_qwen2(dtype=torch.float64)
    pert = LayerPerturbation(model, layers="all", sigma_init=0.03)
    pert.double()
    w = torch.randn(2, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss_at(log_sigma: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pert.log_sigma.copy_(log_sigma)
        with pert.active(step=5):
            return (sampling_logprobs(_logits(model), IDS) * w).sum()

    base = pert.log_sigma.detach().clone()
    loss = loss_at(base)
    with pert.active(step=5):
        (sampling_logprobs(_logits(model), IDS) * w).sum().backward()
    grad = pert.log_sigma.grad.clone()
    assert (grad != 0).all(), grad
    h = 1e-2  # rotary embeddings run in float32 inside HF models: small steps drown in rounding
    for layer in range(pert.num_layers):
        e = torch.zeros_like(base)
        e[layer] = h
        fd = (loss_at(base + e) - loss_at(base - e)) / (2 * h)
        assert fd.item() == pytest.approx(grad[layer].item(), rel=2e-3, abs=1e-5)
    assert loss.isfinite()


def test_relative_scale_gradient_and_effect():
    model = tiny_qwen2(dtype=torch.float64)
    pert = LayerPerturbation(model, layers="all", sigma_init=0.05, noise_scale="relative").double()
    with pert.active(step=0):
        sampling_logprobs(_logits(model), IDS).sum().backward()
    g = pert.log_sigma.grad.clone()
    log_sigma0 = pert.log_sigma.detach().clone()

    def f(ls):
        with torch.no_grad():
            pert.log_sigma.copy_(ls)
        with pert.active(step=0):
            return sampling_logprobs(_logits(model), IDS).sum()

    # The RMS scale is a stop-gradient: sigma_l's gradient ignores how layer l's noise changes the RMS
    # (hence the noise scale) of later layers. The last layer has no later layer, so it matches exactly.
    e = torch.zeros(4, dtype=torch.float64)
    e[3] = 1e-2
    fd = (f(log_sigma0 + e) - f(log_sigma0 - e)) / 2e-2
    assert fd.item() == pytest.approx(g[3].item(), rel=2e-3)


def test_hooks_leave_no_trace(qwen2):
    layers = find_decoder_layers(qwen2)
    pert = LayerPerturbation(qwen2, layers="all", sigma_init=0.1)
    base = _logits(qwen2)
    with pert.active(step=0):
        assert all(len(layer._forward_pre_hooks) == 1 for layer in layers)
        assert pert.is_active
    assert all(len(layer._forward_pre_hooks) == 0 for layer in layers)
    assert not pert.is_active
    with pytest.raises(RuntimeError, match="boom"), pert.active(step=1):
        raise RuntimeError("boom")
    assert all(len(layer._forward_pre_hooks) == 0 for layer in layers)
    assert torch.equal(_logits(qwen2), base)
    assert "log_sigma" in pert.state_dict() and not any("log_sigma" in k for k in qwen2.state_dict())


def test_generate_is_unperturbed(qwen2):
    reference = copy.deepcopy(qwen2).eval()
    qwen2.eval()
    pert = LayerPerturbation(qwen2, layers="all", sigma_init=1.0)
    with pert.active(step=0):
        noisy = _logits(qwen2)
    assert not torch.allclose(noisy, _logits(reference))
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    out = qwen2.generate(IDS[:, :4], **kw)
    assert torch.equal(out, reference.generate(IDS[:, :4], **kw))


class _Toy(nn.Module):
    """A decoder stand-in whose layer calls (hooks included) are checkpointed, so recompute reruns the hooks."""

    def __init__(self, ckpt: bool):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
        self.ckpt = ckpt

    def forward(self, h):
        for layer in self.layers:
            h = torch.tanh(checkpoint(layer, h, use_reentrant=False) if self.ckpt else layer(h))
        return h


def test_sigma_gradient_tight_finite_difference_in_float64():
    """All-float64 toy model: the analytic sigma gradient (eps regenerated in backward) to 1e-6."""
    model = _Toy(ckpt=False).double()
    pert = LayerPerturbation(model, layers="all", sigma_init=0.2).double()
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(ls):
        with torch.no_grad():
            pert.log_sigma.copy_(ls)
        with pert.active(step=1):
            return model(x).pow(2).sum()

    base = pert.log_sigma.detach().clone()
    f(base).backward()
    grad = pert.log_sigma.grad.clone()
    for layer in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[layer] = 1e-5
        fd = (f(base + e) - f(base - e)) / 2e-5
        assert fd.item() == pytest.approx(grad[layer].item(), rel=1e-6, abs=1e-9)


def test_noise_identical_under_checkpoint_recompute():
    grads = []
    calls = []
    for ckpt in (False, True):
        model = _Toy(ckpt)
        pert = LayerPerturbation(model, layers="all", sigma_init=0.3)
        n = [0]

        def count(*_, n=n):
            n[0] += 1

        model.layers[0].register_forward_pre_hook(count)
        x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
        with pert.active(step=2, micro_batch=1):
            model(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()] + [pert.log_sigma.grad.clone()])
        calls.append(n[0])
    assert calls == [1, 2]  # the checkpointed run really recomputed the layer (and its hooks)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_hf_gradient_checkpointing_same_gradients():
    grads = []
    for ckpt in (False, True):
        model = tiny_qwen2()
        model.train()
        if ckpt:
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        pert = LayerPerturbation(model, layers="all", sigma_init=0.05)
        with pert.active(step=1):
            sampling_logprobs(_logits(model), IDS).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()] + [pert.log_sigma.grad.clone()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_hidden_states_as_keyword():
    class KwModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([_KwLayer() for _ in range(2)])

        def forward(self, h):
            for layer in self.layers:
                h = layer(hidden_states=h)
            return h

    model = KwModel()
    pert = LayerPerturbation(model, layers=[1], sigma_init=1.0)
    x = torch.zeros(1, 3, 4)
    with pert.active(step=0):
        out = model(x)
    assert out.abs().sum() > 0


class _KwLayer(nn.Module):
    def forward(self, hidden_states):
        return hidden_states


@pytest.mark.parametrize("factory,n", [(tiny_qwen2, 4), (tiny_llama, 6)])
def test_layer_selection_on_two_architectures(factory, n):
    model = factory()
    layers = find_decoder_layers(model)
    assert len(layers) == n
    seen: list[torch.Tensor] = []

    def record(module, args, output):
        seen.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    for layer in layers:
        layer.register_forward_hook(record)
    model(IDS)
    base, seen[:] = list(seen), []
    for spec, expect in [
        ("all", list(range(n))),
        ("early", select_layers("early", n)),
        ("middle", select_layers("middle", n)),
        ("late", select_layers("late", n)),
        ([1], [1]),
    ]:
        pert = LayerPerturbation(model, layers=spec, sigma_init=0.5)
        assert pert.layer_indices == expect
        with pert.active(step=0):
            model(IDS)
            hooked = [i for i, layer in enumerate(layers) if len(layer._forward_pre_hooks)]
        assert hooked == expect
        # layer outputs are unchanged before the first perturbed layer and perturbed from it on
        first = expect[0]
        for i in range(first):
            torch.testing.assert_close(seen[i], base[i])
        assert not torch.allclose(seen[first], base[first])
        seen.clear()
    assert select_layers("early", 6) == [0, 1] and select_layers("middle", 6) == [2, 3]
    assert select_layers("late", 6) == [4, 5] and select_layers("late", 4) == [3]


def test_logits_mode_and_none(qwen2):
    base = _logits(qwen2)
    pert = LayerPerturbation(qwen2, layers="logits", sigma_init=0.5)
    assert pert.layer_names() == ["logits"]
    with pert.active(step=0):
        hooks = [len(layer._forward_pre_hooks) for layer in find_decoder_layers(qwen2)]
        out = _logits(qwen2)
    assert hooks == [0, 0, 0, 0] and not torch.allclose(out, base)
    none = LayerPerturbation(qwen2, layers="none")
    assert none.num_layers == 0
    with none.active(step=0):
        assert torch.equal(_logits(qwen2), base)


def test_gpt_neox_and_clear_error():
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    cfg = GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64)  # fmt: skip
    neox = AutoModelForCausalLM.from_config(cfg)
    assert find_decoder_layers(neox) is neox.gpt_neox.layers
    with pytest.raises(ValueError, match="layers_path"):
        find_decoder_layers(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="out of range"):
        select_layers([7], 4)
    assert find_decoder_layers(neox, "gpt_neox.layers") is neox.gpt_neox.layers
