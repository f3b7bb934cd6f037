"""Tiny models and batches for the alp tests (built from configs; nothing is downloaded)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from alp import TrainBatch

VOCAB = 512


def tiny_qwen2(seed: int = 0, layers: int = 4, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return AutoModelForCausalLM.from_config(cfg).to(dtype)


def tiny_llama(seed: int = 0, layers: int = 6):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return AutoModelForCausalLM.from_config(cfg)


def make_batch(
    seed: int = 0,
    lengths=(12, 9, 15, 7, 11, 14),
    prompt: int = 4,
    groups: int = 2,
    model=None,
    temperature=1.0,
) -> TrainBatch:
    """Random sequences: `prompt` prompt tokens then sampled tokens with a masked 'tool output' gap.

    Behaviour logprobs are the model's own (perturbation-free) logprobs plus a small mismatch when a
    model is given, else a constant.
    """
    g = torch.Generator().manual_seed(seed)
    toks = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]
    masks = []
    for n in lengths:
        m = [0] * prompt + [1] * (n - prompt)
        if n > prompt + 4:
            m[prompt + 2] = 0  # a masked tool-output token inside the response
        masks.append(m)
    if model is not None:
        from alp.logprobs import sampling_logprobs

        beh = []
        with torch.no_grad():
            for t, m in zip(toks, masks, strict=True):
                lp = sampling_logprobs(
                    model(torch.tensor([t])).logits, torch.tensor([t]), temperature=temperature
                )[0]
                noise = 0.05 * torch.randn(len(t), generator=g)
                beh.append([(float(a) + float(e)) * k for a, e, k in zip(lp, noise, m, strict=True)])
    else:
        beh = [[-6.0 * k for k in m] for m in masks]
    rewards = torch.randint(0, 2, (len(lengths),), generator=g).float().tolist()
    group_ids = [i % groups for i in range(len(lengths))]
    return TrainBatch.from_lists(
        token_ids=toks,
        loss_mask=masks,
        behavior_logprobs=beh,
        rewards=rewards,
        group_ids=group_ids,
        temperature=temperature,
    )
