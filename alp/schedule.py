"""Learning-rate schedule: linear warm-up, then constant, linear or cosine decay to a final fraction.

A pure function of the optimizer step, so a resumed run (which restores the step) continues the schedule
exactly, and the learner needs no scheduler state in its checkpoint. The learner applies it to the policy
group (``LearnerConfig.lr_*``); the SFT warm-up (agentrl.sft) uses the same function.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_factor"]

SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, *, warmup_steps: int = 0, schedule: str = "constant", decay_steps: int = 0,
              final_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based: the step about to be taken).

    - warm-up: ``(step + 1) / warmup_steps`` while ``step < warmup_steps`` (the first step is not wasted at 0);
    - then ``constant``: 1; ``linear`` / ``cosine``: from 1 at ``warmup_steps`` down to ``final_ratio`` at
      ``decay_steps`` (counted from step 0, warm-up included), and ``final_ratio`` after it.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: choose one of {SCHEDULES}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps - warmup_steps))
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return final_ratio + (1.0 - final_ratio) * shape
