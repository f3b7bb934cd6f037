"""Trajectories -> alp.TrainBatch: the one place an episode record becomes what the learner trains on.

Only trainable trajectories are packed (``Trajectory.trainable``: not excluded, at least one token in the
loss). The sampling settings travel with the trajectories, so the learner scores under the distribution
the tokens were drawn from without reading any config; a batch that mixes settings is refused. Each row's
sequence id (what the learner keys its noise and mini-batches by) comes from its group and sample ids, so it is
the same whichever rank runs the episode.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentrl.rollout.trajectory import Trajectory
from alp.batch import TrainBatch

__all__ = ["sequence_id", "to_train_batch"]

SAMPLES_PER_GROUP_MAX = 1 << 16
"""Sample ids stay below this (a GRPO group of 65,536 samples would be a mistake)."""


def sequence_id(t: Trajectory) -> int:
    """A batch-unique id from the trajectory's (group id, sample id)."""
    if not 0 <= t.sample_id < SAMPLES_PER_GROUP_MAX:
        raise ValueError(f"sample_id={t.sample_id} outside [0, {SAMPLES_PER_GROUP_MAX})")
    return t.group_id * SAMPLES_PER_GROUP_MAX + t.sample_id


def to_train_batch(trajectories: Sequence[Trajectory]) -> TrainBatch | None:
    """The trainable trajectories as one TrainBatch (rewards + group ids: the learner computes the
    advantages); None when none is trainable."""
    usable = [t for t in trajectories if t.trainable]
    if not usable:
        return None
    settings = {(t.temperature, t.top_p, t.top_k) for t in usable}
    if len(settings) > 1:
        raise ValueError(f"trajectories sampled with different settings {sorted(settings)} (temperature, top_p, "
                         "top_k) cannot share a batch: the learner scores every row under one distribution")
    (temperature, top_p, top_k), = settings
    return TrainBatch.from_lists(
        token_ids=[t.token_ids for t in usable],
        loss_mask=[t.loss_mask for t in usable],
        behavior_logprobs=[t.behavior_logprobs for t in usable],
        rewards=[t.reward for t in usable],
        group_ids=[t.group_id for t in usable],
        sequence_ids=[sequence_id(t) for t in usable],
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
    )
