"""Mismatch injection: spec parsing, logit transforms, and engines whose logprobs are those they sampled from."""

from __future__ import annotations

import asyncio

import pytest
import torch

from agentrl.inference.base import Completion, SamplingParams
from agentrl.inference.mismatch import (
    MismatchSpec,
    StaleWeightsBackend,
    kernel_noise,
    logits_transform,
    make_rollout_backend,
    round_significand,
)


# ---------------------------------------------------------------------------------------------------- spec
@pytest.mark.parametrize("text, expected", [
    ("none", MismatchSpec()),
    ("stale4+bf16", MismatchSpec(staleness=4, rollout_dtype="bfloat16")),
    ("bf16+stale4", MismatchSpec(staleness=4, rollout_dtype="bfloat16")),
    ("fp8-logits", MismatchSpec(logits_format="fp8")),
    ("fp8", MismatchSpec(logits_format="fp8")),
    ("bf16-logits+noise0.02", MismatchSpec(logits_format="bf16", logit_noise=0.02)),
    ("noise1e-3", MismatchSpec(logit_noise=1e-3)),
    ("vllm+bf16+stale1", MismatchSpec(staleness=1, rollout_dtype="bfloat16", engine="vllm")),
])
def test_parse_and_canonical_name(text, expected):
    spec = MismatchSpec.parse(text)
    assert spec == expected
    assert MismatchSpec.parse(spec.name) == spec
    assert spec.describe()


def test_canonical_name_order():
    assert MismatchSpec.parse("bf16+stale4").name == "stale4+bf16"
    assert MismatchSpec().name == "none"


@pytest.mark.parametrize("text, match", [
    ("stale", "cannot read 'stale'"),
    ("fp16", "cannot read 'fp16'"),
    ("stale2+stale4", "staleness is given twice"),
    ("none+bf16", "'none' cannot be combined"),
    ("vllm+fp8-logits", "vllm engine takes no injected"),
    ("fp8+bf16-logits", "logits_format is given twice"),
])
def test_parse_rejects_bad_specs(text, match):
    with pytest.raises(ValueError, match=match):
        MismatchSpec.parse(text)


def test_spec_validates_fields():
    with pytest.raises(ValueError, match="staleness"):
        MismatchSpec(staleness=-1)
    with pytest.raises(ValueError, match="rollout_dtype"):
        MismatchSpec(rollout_dtype="float16")
    with pytest.raises(ValueError, match="logit_noise"):
        MismatchSpec(logit_noise=-0.1)


# ---------------------------------------------------------------------------------------------- transforms
def test_round_significand_matches_bf16_cast():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 7
    assert torch.equal(round_significand(x, 8), x.to(torch.bfloat16).float())


def test_round_significand_matches_fp8_e4m3_cast_in_normal_range():
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn to compare with")
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(1)) * 20
    x = x[(x.abs() >= 2**-6) & (x.abs() <= 448)]
    assert torch.equal(round_significand(x, 4, 448.0), x.to(torch.float8_e4m3fn).float())


def test_round_significand_values_and_saturation():
    x = torch.tensor([1.0, 1.0625, 1.1875, -3.3, 1000.0])
    out = round_significand(x, 4, 448.0)
    assert out.tolist() == [1.0, 1.0, 1.25, -3.25, 448.0]  # halves go to even; |x| saturates at 448
    with pytest.raises(ValueError, match="bits"):
        round_significand(x, 0)


def test_kernel_noise_is_deterministic_input_dependent_and_has_the_asked_std():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 512, generator=g) * 3
    a, b = kernel_noise(x, 0.05), kernel_noise(x.clone(), 0.05)
    assert torch.equal(a, b)  # same inputs, same "kernel error"
    noise = (a - x).flatten()
    assert abs(noise.std().item() - 0.05) < 0.0025
    assert abs(noise.mean().item()) < 0.003
    assert noise.abs().max().item() <= 0.05 * 3**0.5 + 1e-6
    shifted = kernel_noise(x + 0.01, 0.05) - (x + 0.01)
    assert torch.corrcoef(torch.stack([noise, shifted.flatten()]))[0, 1].abs() < 0.05  # new inputs, new noise
    assert torch.equal(kernel_noise(x, 0.0), x)
    with pytest.raises(ValueError):
        kernel_noise(x, -1.0)


def test_no_transform_without_logit_parts():
    assert logits_transform(MismatchSpec(staleness=3, rollout_dtype="bfloat16")) is None


# --------------------------------------------------------------------------------------------------- engines
def _teacher_forced(model, prompt, completion, transform=None):
    from alp.logprobs import sampling_logprobs

    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    if transform is not None:
        logits = transform(logits)
    return sampling_logprobs(logits, ids)[0, len(prompt):]


def _prompt(tokenizer):
    return tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 * 34?"}],
                                         add_generation_prompt=True, tokenize=True, return_dict=False)


@pytest.mark.parametrize("text", ["fp8-logits", "noise0.3", "bf16+fp8-logits+noise0.1"])
def test_behaviour_logprobs_are_those_of_the_distribution_sampled_from(tiny, text):
    from alp.logprobs import sampling_distribution

    model, tokenizer = tiny
    spec = MismatchSpec.parse(text)
    backend = make_rollout_backend(spec, model, tokenizer, seed=0)
    seen = []  # the logits the sampler received, one [1, 1, V] tensor per decoding step (after the transform)
    backend.model.get_output_embeddings().register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    prompt = _prompt(tokenizer)
    try:
        out = asyncio.run(backend.generate(prompt, SamplingParams(max_new_tokens=24, seed=3)))[0]
    finally:
        backend.close()
    assert len(seen) == len(out.token_ids)
    engine = torch.tensor(out.logprobs)
    sampled_from = torch.stack([sampling_distribution(x[0, -1].float(), temperature=1.0, top_p=1.0, top_k=0)[tok]
                                for x, tok in zip(seen, out.token_ids, strict=True)])
    assert torch.equal(engine, sampled_from)  # exactly the distribution the token was drawn from
    plain = _teacher_forced(model, prompt, out.token_ids)  # the trainer's fp32 policy
    assert (engine - plain).abs().max().item() > 1e-2  # the injected mismatch is there


def test_bf16_engine_differs_from_fp32_trainer_by_rounding_only(tiny):
    model, tokenizer = tiny
    backend = make_rollout_backend(MismatchSpec.parse("bf16"), model, tokenizer, seed=0)
    assert next(backend.model.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the trainer's model is untouched
    prompt = _prompt(tokenizer)
    try:
        out = asyncio.run(backend.generate(prompt, SamplingParams(max_new_tokens=24, seed=3)))[0]
    finally:
        backend.close()
    diff = (torch.tensor(out.logprobs) - _teacher_forced(model, prompt, out.token_ids)).abs()
    assert 1e-5 < diff.max().item() < 0.1


class _FakeEngine:
    """Records which weights it holds; samples nothing."""

    def __init__(self):
        self.version, self.loaded = 0, "w0"

    async def generate(self, prompt, sampling):
        return [Completion([1], [-0.5], "stop", self.version)]

    def update_weights(self, weights):
        self.loaded = weights
        self.version += 1
        return self.version

    async def aclose(self):
        pass


def test_stale_backend_loads_the_weights_k_updates_old():
    inner = _FakeEngine()
    backend = StaleWeightsBackend(inner, staleness=2)
    seen = []
    for v in range(1, 6):
        assert backend.update_weights(f"w{v}") == v
        completion = asyncio.run(backend.generate([0], SamplingParams()))[0]
        seen.append((backend.version, inner.loaded, completion.version, backend.loaded_version))
    assert seen == [(1, "w0", 0, 0), (2, "w0", 0, 0), (3, "w1", 1, 1), (4, "w2", 2, 2), (5, "w3", 3, 3)]
    with pytest.raises(ValueError):
        StaleWeightsBackend(inner, staleness=-1)


def test_stale_hf_backend_samples_with_old_weights(tiny):
    model, tokenizer = tiny
    backend = make_rollout_backend(MismatchSpec.parse("stale1"), model, tokenizer, seed=0)
    prompt = _prompt(tokenizer)
    changed = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    try:
        asyncio.run(backend.aupdate_weights(changed))  # version 1 arrives; the engine still holds version 0
        first = asyncio.run(backend.generate(prompt, SamplingParams(max_new_tokens=16, seed=5)))[0]
        backend.update_weights({k: v.clone() for k, v in changed.items()})  # version 2: now it loads version 1
        second = asyncio.run(backend.generate(prompt, SamplingParams(max_new_tokens=16, seed=5)))[0]
    finally:
        backend.close()
    assert (first.version, second.version) == (0, 1)
    assert (torch.tensor(first.logprobs) - _teacher_forced(model, prompt, first.token_ids)).abs().max() < 1e-4
    new = type(model)(model.config).eval()
    new.load_state_dict(changed, strict=False)
    assert (torch.tensor(second.logprobs) - _teacher_forced(new, prompt, second.token_ids)).abs().max() < 1e-4


def test_vllm_engine_needs_a_checkpoint_folder(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="model_path"):
        make_rollout_backend(MismatchSpec.parse("vllm"), model, tokenizer)
