"""One learner update on a fixed batch; run alone or under torchrun (gloo). Used by test_distributed.py.

    python tests/agentrl/dp_update.py OUT.pt            # single process
    torchrun --nproc_per_node 2 tests/agentrl/dp_update.py OUT.pt
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, Qwen2Config

from alp import TrainBatch
from alp.learner import Learner
from alp.presets import get_preset


def main(out: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = AutoModelForCausalLM.from_config(config)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    ids, masks, lps, rewards = [], [], [], []
    for i in range(8):  # 4 groups of 2, ragged lengths
        n = 12 + 3 * i
        ids.append(torch.randint(0, 97, (n,), generator=g).tolist())
        masks.append([0] * 6 + [1] * (n - 6))
        lps.append([0.0] * 6 + (-torch.rand(n - 6, generator=g) * 3).tolist())
        rewards.append(float(i % 3 == 0))
    batch = TrainBatch.from_lists(token_ids=ids, loss_mask=masks, behavior_logprobs=lps, rewards=rewards,
                                  group_ids=[i // 2 for i in range(8)], temperature=1.0)
    # adam_eps 1e-4: Adam turns gradients at float-rounding level (~1e-9, where the summation order of two
    # ranks differs from one) into full-size steps; a larger eps compares the updates, not the rounding.
    learner = Learner(model, get_preset("alp", lr=1e-2, adam_eps=1e-4, sigma_init=1e-3, mini_batch_size=4,
                                        sigma_reg_alpha=1e-3, sigma_reg_beta=1e-3))
    for _ in range(2):
        metrics = learner.update(batch)
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save({k: v.detach().clone() for k, v in learner.state_dict()["model"].items()}
                   | {"log_sigma": learner.perturbation.state_dict(), "initial": initial,
                      "tokens": metrics["perf/tokens"]}, out)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
