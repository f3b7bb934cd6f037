"""Data parallelism for the learner (torch.distributed under torchrun; gloo on CPU, NCCL on GPU).

| strategy    | model on each rank                          | rows a rank trains on                      | gradients              |
|-------------|---------------------------------------------|--------------------------------------------|------------------------|
| `replicate` | a full replica, a plain module              | every world-th row of each mini-batch      | one flat all-reduce    |
|             |                                             | (every rank holds the whole batch)         | (sum) after backward   |
| `ddp`       | a full replica in torch DDP                 | its own rows (its own rollouts)            | DDP's bucketed         |
|             |                                             |                                            | all-reduce (sum)       |
| `fsdp2`     | shards: every decoder layer and the root    | its own rows (its own rollouts)            | reduce-scatter (sum)   |
|             | under `fully_shard` (FSDP2)                 |                                            |                        |

In every strategy the loss of a mini-batch is normalised by the mini-batch's global token / sequence counts
(summed over ranks) and gradients are summed, so an update equals the single-process update on the union of
the rows. A mini-batch is a slice of one permutation of the batch's global sequence ids (the same on every
rank and for every world size), each rank taking the rows it holds; the noise is keyed by sequence id too.
Collectives must match across ranks: every rank runs as many micro-batches as the busiest one (the others
run empty ones that add nothing) and synchronises gradients only on the last.

FSDP2 options: ``mixed_precision="bfloat16"`` computes in bf16 and reduces gradients in fp32, with fp32
master weights (the sharded parameters); ``cpu_offload`` keeps parameters, gradients and optimizer state in
host memory between uses. Checkpoints of a sharded learner use torch.distributed.checkpoint (each rank writes
its shards; a resume on the same world size is exact).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["STRATEGIES", "DataParallel", "full_named_tensors", "full_state_dict", "rank_world"]

STRATEGIES = ("replicate", "ddp", "fsdp2")


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _decoder_layers(model: nn.Module, layers_path: str | None) -> nn.ModuleList:
    from alp.perturb import find_decoder_layers

    return find_decoder_layers(model, layers_path)


class DataParallel:
    """How one learner's model is spread over the ranks and how its gradients are combined."""

    def __init__(self, strategy: str, model: nn.Module, *, layers_path: str | None = None,
                 mixed_precision: str | None = None, cpu_offload: bool = False) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy={strategy!r}: choose one of {STRATEGIES}")
        self.strategy = strategy
        self.rank, self.world = rank_world()
        self.module = model  # what the learner calls (wrapped for ddp)
        self.sharded = strategy == "fsdp2"
        if strategy == "replicate" or self.world == 1 and strategy == "ddp":
            return
        if strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            self.module = DistributedDataParallel(model, find_unused_parameters=False)
            return
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if mixed_precision == "bfloat16" else MixedPrecisionPolicy())
        offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
        for layer in _decoder_layers(model, layers_path):
            fully_shard(layer, mp_policy=mp, offload_policy=offload)
        fully_shard(model, mp_policy=mp, offload_policy=offload)
        model.set_gradient_divide_factor(1.0)  # sum over ranks: the loss already holds the global counts
        model.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM)

    @property
    def splits_rows(self) -> bool:
        """True when every rank holds the whole batch and trains on every world-th row (replicate)."""
        return self.strategy == "replicate" and self.world > 1

    # -- collectives -------------------------------------------------------------------------------
    def all_sum(self, values: list[float]) -> list[float]:
        """Sums over ranks (the values themselves in one process, and for replicate, whose counts are global)."""
        if self.world == 1 or self.splits_rows:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def all_max(self, value: int) -> int:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def global_ids(self, local_ids: torch.Tensor) -> torch.Tensor:
        """Every rank's sequence ids, sorted (the batch's ids when every rank holds the whole batch)."""
        if self.world == 1 or self.splits_rows:
            return torch.sort(local_ids.cpu()).values
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([local_ids.numel()], dtype=torch.int64))
        width = int(max(s.item() for s in sizes))
        padded = torch.full((width,), -1, dtype=torch.int64)
        padded[: local_ids.numel()] = local_ids.cpu()
        gathered = [torch.empty(width, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        ids = torch.cat([g[: int(n.item())] for g, n in zip(gathered, sizes, strict=True)])
        if ids.unique().numel() != ids.numel():
            raise ValueError("sequence ids repeat across ranks: each rank's batch needs ids unique in the whole "
                             "batch (agentrl packs them from global group and sample ids)")
        return torch.sort(ids).values

    # -- the backward passes of one optimizer step -------------------------------------------------
    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Accumulate locally (enabled=False) or synchronise gradients in this backward (the last one)."""
        if self.strategy == "ddp" and self.world > 1:
            with contextlib.nullcontext() if enabled else self.module.no_sync():
                yield
            return
        if self.sharded and self.world > 1:
            self.module.set_requires_gradient_sync(enabled)
        yield

    def reduce_grads(self, model_params: list[nn.Parameter], other_params: list[nn.Parameter]) -> None:
        """Sum over ranks the gradients the wrapper does not reduce itself: every one for replicate, those of the
        parameters outside the model (the perturbation's sigmas) for ddp and fsdp2. A rank without a gradient
        adds 0."""
        if self.world == 1:
            return
        mine = [*model_params, *other_params] if self.strategy == "replicate" else list(other_params)
        if not mine:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in mine]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(mine, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(p).clone()
            offset += g.numel()

    def clip_grad_norm(self, params: list[nn.Parameter], max_norm: float) -> float:
        """Clip the global gradient norm of ``params`` (sharded or not) to ``max_norm``; returns it."""
        sharded = [p for p in params if p.grad is not None and _is_dtensor(p.grad)]
        plain = [p for p in params if p.grad is not None and not _is_dtensor(p.grad)]
        sq = 0.0
        if sharded:
            norm = torch.nn.utils.get_total_norm([p.grad for p in sharded])
            sq += float(norm.full_tensor() if _is_dtensor(norm) else norm) ** 2
        if plain:
            sq += float(torch.nn.utils.get_total_norm([p.grad for p in plain])) ** 2
        total = math.sqrt(sq)
        if math.isfinite(max_norm) and total > 0:
            for group in (sharded, plain):
                if group:
                    torch.nn.utils.clip_grads_with_norm_(group, max_norm, torch.tensor(total))
        return total


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor whole (sharded ones gathered; a collective: every rank calls it
    and gets the full tensors)."""
    state = model.state_dict()
    return {k: v.full_tensor() if _is_dtensor(v) else v for k, v in state.items()}


def full_named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, whole tensor) pairs one at a time (a sharded tensor is gathered when its turn comes), so a caller
    that streams them never holds a second copy of the model. A collective: every rank iterates all of them."""
    for name, value in model.state_dict().items():
        yield name, value.full_tensor() if _is_dtensor(value) else value
