"""VLLMBackend on the tiny model with a real vLLM engine (the CPU build in .venv-vllm: make test-vllm).

Checks: token ids and logprobs straight from the engine, equal to the trainer's fp32 recomputation within
LOGPROB_ATOL (fp32 engine); seeds repeat; n samples; stop ids and stop strings end a completion and are
kept; trajectories from RolloutManager meet the same invariants as with the HF backend; a weight update
(state dict, then checkpoint folder) changes the engine's outputs, resets the prefix cache and tags the
new version.
"""

from __future__ import annotations

import asyncio
import copy
import os

import pytest
import torch
from vllm_helpers import CalcEnv, recompute

from agentrl.inference.base import SamplingParams
from agentrl.inference.vllm import vllm_available

OK, WHY = vllm_available()
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not OK, reason=f"vllm not importable: {WHY}"),
              pytest.mark.timeout(900)]

# fp32 engine vs fp32 HF recomputation: different kernels (vLLM's CPU attention and fused ops vs eager
# PyTorch), so not bit-equal; measured max |diff| on the tiny model is ~1e-5.
LOGPROB_ATOL = 2e-4
PERTURBED_ATOL = 1e-3  # the perturbed model has sharp distributions (logprobs near 0, big logits): measured 2.5e-4
COMPILE = os.environ.get("AGENTRL_VLLM_COMPILE") == "1"
SAMPLING = dict(temperature=0.9, top_p=0.95, top_k=40)


@pytest.fixture(scope="module")
def engine(tiny_path):
    from agentrl.inference.vllm import VLLMBackend

    # enforce_eager (default here): skip torch.compile, which takes minutes on 2 shared CPU cores;
    # AGENTRL_VLLM_COMPILE=1 runs the compiled engine instead
    backend = VLLMBackend(tiny_path, dtype="float32", seed=0, max_model_len=2048, enforce_eager=not COMPILE,
                          engine_kwargs={"max_num_seqs": 32})
    yield backend
    backend.close()


def prompt_ids(tok, question="What is 12*34?"):
    return list(tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False))


async def test_tokens_logprobs_seeds_and_n(engine, hf_tiny):
    model, tok = hf_tiny
    prompt = prompt_ids(tok)
    sp = SamplingParams(max_new_tokens=24, n=3, seed=5, **SAMPLING)
    outs = await engine.generate(prompt, sp)
    assert len(outs) == 3 and len({tuple(c.token_ids) for c in outs}) > 1
    again = await engine.generate(prompt, sp)
    assert [c.token_ids for c in again] == [c.token_ids for c in outs]  # a seed repeats exactly
    worst = 0.0
    for c in outs:
        assert c.version == 0 and c.finish_reason in ("stop", "length") and len(c.token_ids) == len(c.logprobs)
        lp = recompute(model, prompt, c.token_ids, **SAMPLING)
        assert torch.isfinite(lp).all(), "the engine sampled a token outside the trainer's top-k/top-p set"
        worst = max(worst, (lp - torch.tensor(c.logprobs)).abs().max().item())
    assert worst < LOGPROB_ATOL, f"vLLM vs trainer logprobs differ by {worst}"
    # greedy: the argmax path, logprobs of the untruncated temperature-1 distribution
    greedy = (await engine.generate(prompt, SamplingParams(temperature=0, max_new_tokens=12)))[0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + greedy.token_ids])).logits[0, len(prompt) - 1:-1]
    assert greedy.token_ids == logits.argmax(-1).tolist()
    full = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(greedy.token_ids)[:, None])[:, 0]
    assert torch.allclose(full, torch.tensor(greedy.logprobs), atol=LOGPROB_ATOL)


async def test_stop_ids_and_stop_strings_are_kept(engine, hf_tiny):
    _, tok = hf_tiny
    prompt = prompt_ids(tok)
    base = (await engine.generate(prompt, SamplingParams(max_new_tokens=20, seed=3, **SAMPLING)))[0]
    assert len(base.token_ids) >= 4
    stop_id = base.token_ids[3]
    cut = (await engine.generate(prompt, SamplingParams(max_new_tokens=20, seed=3, stop_token_ids=(stop_id,),
                                                         **SAMPLING)))[0]
    first = base.token_ids.index(stop_id)
    assert cut.token_ids == base.token_ids[: first + 1] and cut.finish_reason == "stop"
    text = tok.decode(base.token_ids[:4], skip_special_tokens=False)
    stop = text[-2:] if len(text) >= 2 else text
    by_text = (await engine.generate(prompt, SamplingParams(max_new_tokens=20, seed=3, stop=(stop,), **SAMPLING)))[0]
    assert by_text.finish_reason == "stop" and by_text.token_ids == base.token_ids[: len(by_text.token_ids)]
    assert stop in tok.decode(by_text.token_ids, skip_special_tokens=False)  # the stop string is kept
    short = (await engine.generate(prompt, SamplingParams(max_new_tokens=3, seed=3, **SAMPLING)))[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 3


async def test_rollout_trajectories_meet_the_invariants(engine, hf_tiny):
    from agentrl.rollout import RolloutConfig, RolloutManager
    from agentrl.rollout.trajectory import TokenKind

    model, tok = hf_tiny
    calls: list[tuple[tuple[int, ...], list[int]]] = []

    class Recording:
        version = property(lambda self: engine.version)

        async def generate(self, prompt, sampling):
            out = await engine.generate(prompt, sampling)
            calls.append((tuple(prompt), out[0].token_ids))
            return out

        def update_weights(self, w):
            return engine.update_weights(w)

    cfg = RolloutConfig(n_samples=3, max_turns=2, max_new_tokens=20, mask_void_turns=False, **SAMPLING)
    batch = await RolloutManager(Recording(), tok, CalcEnv, cfg).run([1, 2])
    assert len(batch.trajectories) == 6
    returned: dict[tuple, list] = {}
    for p, ids in calls:
        returned.setdefault(p, []).append(ids)
    worst = 0.0
    for traj in batch.trajectories:
        spans = [(a, b) for kind, a, b in traj.spans() if kind in (TokenKind.SAMPLED, TokenKind.MASKED)]
        assert len(spans) == traj.num_turns
        for a, b in spans:  # every sampled span is exactly what the engine returned for that prefix
            assert traj.token_ids[a:b] in returned[tuple(traj.token_ids[:a])]
        assert traj.loss_mask == [int(k == TokenKind.SAMPLED) for k in traj.token_kinds]
        mask = torch.tensor(traj.loss_mask, dtype=torch.bool)
        assert mask.any()
        lp = recompute(model, [], traj.token_ids, **SAMPLING)
        worst = max(worst, (lp[mask] - torch.tensor(traj.behavior_logprobs)[mask]).abs().max().item())
        assert {v for v, m in zip(traj.policy_version, traj.loss_mask, strict=True) if m} == {engine.version}
    assert worst < LOGPROB_ATOL, f"behavior logprobs vs trainer recomputation: max |diff| {worst}"


async def test_weight_update_changes_outputs_and_version(engine, hf_tiny, tiny_path):
    model, tok = hf_tiny
    prompt = prompt_ids(tok, "What is 7*8?")
    sp = SamplingParams(max_new_tokens=16, seed=9, n=2, **SAMPLING)
    v0 = engine.version
    before = await engine.generate(prompt, sp)
    new = perturbed(model)
    assert await engine.aupdate_weights(new.state_dict()) == v0 + 1  # in process: the learner's state dict
    after = await engine.generate(prompt, sp)
    assert all(c.version == v0 + 1 for c in after)
    assert [c.token_ids for c in after] != [c.token_ids for c in before]
    for c in after:  # the engine now samples from the new weights, to rounding
        lp = recompute(new, prompt, c.token_ids, **SAMPLING)
        assert (lp - torch.tensor(c.logprobs)).abs().max().item() < PERTURBED_ATOL


async def test_reload_from_checkpoint_restores_outputs(engine, hf_tiny, tiny_path):
    model, tok = hf_tiny
    prompt = prompt_ids(tok, "What is 7*8?")
    sp = SamplingParams(max_new_tokens=16, seed=9, n=2, **SAMPLING)
    engine.update_weights(tiny_path)
    before = await engine.generate(prompt, sp)
    engine.update_weights(perturbed(model, seed=1).state_dict())
    v = engine.update_weights(tiny_path)  # back to the original weights from the checkpoint folder
    restored = await engine.generate(prompt, sp)
    assert all(c.version == v for c in restored)
    assert [c.token_ids for c in restored] == [c.token_ids for c in before]


def perturbed(model, seed=0):
    new = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return new


async def test_update_waits_for_requests_in_flight(engine, hf_tiny, tmp_path):
    model, tok = hf_tiny
    model.save_pretrained(tmp_path / "same")
    prompt = prompt_ids(tok)
    sp = SamplingParams(max_new_tokens=32, seed=1, **SAMPLING)
    running = [asyncio.create_task(engine.generate(prompt, sp)) for _ in range(8)]
    await asyncio.sleep(0.05)
    version = await engine.aupdate_weights(tmp_path / "same")
    late = await engine.generate(prompt, sp)
    early = await asyncio.gather(*running)
    assert all(c[0].version == version - 1 for c in early) and late[0].version == version
    with pytest.raises(RuntimeError, match="enable_sleep_mode"):
        engine.sleep()
