"""Rollouts: episodes in, token-level records out.

    bridge      chat messages <-> token ids, incrementally, with template-drift detection
    trajectory  the per-token record of one episode (Trajectory) and its JSONL files
    manager     RolloutManager: many multi-turn episodes at once against an inference backend
    packing     trajectories -> alp.TrainBatch (what the learner trains on)
"""

from agentrl.rollout.bridge import ChatBridge, EpisodeTokens, TemplateDriftError
from agentrl.rollout.manager import RolloutBatch, RolloutConfig, RolloutManager, admit
from agentrl.rollout.packing import to_train_batch
from agentrl.rollout.trajectory import TokenKind, Trajectory, TrajectoryError, read_jsonl, write_jsonl

__all__ = [
    "ChatBridge",
    "EpisodeTokens",
    "RolloutBatch",
    "RolloutConfig",
    "RolloutManager",
    "TemplateDriftError",
    "TokenKind",
    "Trajectory",
    "TrajectoryError",
    "admit",
    "read_jsonl",
    "to_train_batch",
    "write_jsonl",
]
