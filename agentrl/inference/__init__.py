"""Inference backends: sample token ids with their logprobs from token-id prompts.

Every backend implements :class:`agentrl.inference.base.Backend`; see that module for the contract.
"""

from agentrl.inference.base import Backend, Completion, SamplingParams

__all__ = ["Backend", "Completion", "SamplingParams"]
