"""Two learner updates on a fixed batch; run alone or under torchrun (gloo). Used by test_distributed.py.

    python tests/agentrl/dp_update.py OUT.pt                        # single process, the whole batch
    torchrun --nproc_per_node 2 tests/agentrl/dp_update.py OUT.pt replicate   # every rank the whole batch
    torchrun --nproc_per_node 2 tests/agentrl/dp_update.py OUT.pt fsdp2       # each rank its own groups

With ddp and fsdp2 rank r holds the groups g with g % world == r (as per-rank rollouts would), keyed by global
sequence ids. Rank 0 writes the whole model after the updates, the sigmas, and the bytes of parameters plus
optimizer state this rank holds.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, Qwen2Config

from agentrl.ranks import leave_distributed
from alp import TrainBatch
from alp.distributed import full_state_dict
from alp.learner import Learner
from alp.presets import get_preset

GROUPS, SAMPLES = 4, 2


def local_bytes(learner: Learner) -> int:
    """Bytes of parameters and optimizer state held by this rank (its shards, for fsdp2)."""
    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    params = sum(local(p).numel() * p.element_size() for p in learner.model.parameters())
    state = sum(local(v).numel() * v.element_size() for s in learner.optimizer.state.values()
                for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    return params + state


def main(out: str, strategy: str = "replicate") -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = AutoModelForCausalLM.from_config(config)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(GROUPS * SAMPLES):  # ragged lengths
        n = 12 + 3 * i
        rows.append((torch.randint(0, 97, (n,), generator=g).tolist(), [0] * 6 + [1] * (n - 6),
                     [0.0] * 6 + (-torch.rand(n - 6, generator=g) * 3).tolist(), float(i % 3 == 0), i // SAMPLES, i))
    if strategy != "replicate":
        rows = [r for r in rows if r[4] % world == rank]
    ids, masks, lps, rewards, groups, seq_ids = (list(c) for c in zip(*rows, strict=True))
    batch = TrainBatch.from_lists(token_ids=ids, loss_mask=masks, behavior_logprobs=lps, rewards=rewards,
                                  group_ids=groups, sequence_ids=seq_ids, temperature=1.0)
    # adam_eps 1e-4: Adam turns gradients at float-rounding level (~1e-9, where the summation order of two
    # ranks differs from one) into full-size steps; a larger eps compares the updates, not the rounding.
    learner = Learner(model, get_preset("alp", lr=1e-2, adam_eps=1e-4, sigma_init=3e-2, noise_scale="relative",
                                        mini_batch_size=4, sigma_reg_alpha=1e-3, sigma_reg_beta=1e-3,
                                        strategy=strategy))
    for _ in range(2):
        metrics = learner.update(batch)
    whole = full_state_dict(learner.model)
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in whole.items()}
                   | {"log_sigma": learner.perturbation.state_dict(), "initial": initial,
                      "tokens": metrics["perf/tokens"], "bytes": local_bytes(learner)}, out)
    leave_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
