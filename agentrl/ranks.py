"""What the ranks of a torchrun training job share: the process group, decisions, tasks and metrics.

Two layouts (``learner.strategy``, alp.distributed):

- ``replicate``: rank 0 runs everything a single process runs (sandbox, rollouts, evaluation, logging,
  checkpoints) and broadcasts each step's batch; the other ranks only take their share of the update
  (agentrl.train.follow).
- ``ddp`` and ``fsdp2``: every rank runs its own rollout manager and backend on whole groups (every world-th
  task of the step; advantages need the whole group), trains on its own trajectories, and rank 0 gathers the
  metrics and writes the run folder. Decisions that end or repeat a step (Ctrl-C, a sandbox outage) are
  taken together, so the ranks' collectives always match.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Ranks", "broadcast", "combine_metrics", "gather", "init_distributed", "leave_distributed", "local_device",
           "task_share"]

# Rollout metrics that add up over ranks; perf timings and maxima take the largest rank's; the rest are means
# over episodes, weighted by each rank's episode count.
_SUMMED = ("rollout/episodes", "rollout/excluded", "rollout/sampled_tokens", "rollout/template_drift",
           "rollout/stale_rejected", "rollout/stop/", "rollout/tokens_at_lag/", "perf/rollout_tokens_per_s")


def init_distributed(device: str, *, group_of_one: bool = False) -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes (NCCL on CUDA, gloo otherwise). On CUDA
    each process takes the GPU of its LOCAL_RANK. ``group_of_one``: a process started without torchrun gets a
    group of its own (in-process store), for what needs one even alone (FSDP2's device mesh)."""
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(local_device(device))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    elif group_of_one and not dist.is_initialized():
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def leave_distributed() -> None:
    """Every rank waits for the others, then leaves the process group: a rank that tears gloo down while another
    still writes (rank 0 saving the final model) can abort ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_device(device: str) -> str:
    """``cuda`` means this process's own GPU under torchrun (cuda:LOCAL_RANK); anything else is kept."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def broadcast(obj: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def task_share(seeds: Sequence[int], rank: int, world: int) -> list[int]:
    """The tasks rank ``rank`` runs: every world-th one, from its rank on (group id = position in ``seeds``)."""
    return list(seeds[rank::world])


def combine_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """One rollout-metrics dict from every rank's (see _SUMMED for how each kind combines)."""
    weights = [m.get("rollout/episodes", 0.0) for m in per_rank]
    total = sum(weights) or 1.0
    out: dict[str, float] = {}
    for key in sorted({k for m in per_rank for k in m}):
        values = [m.get(key, 0.0) for m in per_rank]
        if key.startswith(_SUMMED):
            out[key] = sum(values)
        elif key.startswith("perf/") or key.endswith("_max"):
            out[key] = max(values)
        else:
            out[key] = sum(v * w for v, w in zip(values, weights, strict=True)) / total
    return out


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job, and the few things every rank of it must do together."""

    rank: int = 0
    world: int = 1
    every_rank: bool = False
    """Rollouts on every rank (ddp, fsdp2); False: rank 0 rolls out, the others follow (replicate)."""

    @classmethod
    def join(cls, device: str, strategy: str) -> Ranks:
        rank, world = init_distributed(device, group_of_one=strategy == "fsdp2")
        return cls(rank, world, every_rank=world > 1 and strategy != "replicate")

    @property
    def lead(self) -> bool:
        """Rank 0: the one that writes the run folder and logs."""
        return self.rank == 0

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank of an every-rank job (itself otherwise)."""
        return broadcast(obj) if self.every_rank else obj

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order (``[obj]`` unless every rank rolls out)."""
        return gather(obj) if self.every_rank else [obj]

    def combine(self, metrics: dict[str, float]) -> dict[str, float]:
        """The job's rollout metrics from every rank's."""
        return combine_metrics(gather(metrics)) if self.every_rank else metrics

    def tasks(self, seeds: Sequence[int]) -> list[int]:
        """This rank's tasks of a step."""
        return task_share(seeds, self.rank, self.world) if self.every_rank else list(seeds)

    def barrier(self) -> None:
        if self.every_rank:
            dist.barrier()

    def share_weights(self, model: torch.nn.Module) -> None:
        """Every rank takes rank 0's weights (after its SFT warm-up)."""
        if self.every_rank:
            for tensor in model.state_dict().values():
                dist.broadcast(tensor.data, src=0)
