"""alp: the ALP learner (adaptive layerwise perturbation) and the off-policy baselines beside it.

Depends on torch and transformers only. See docs/alp.md; the method: arXiv 2603.19470.
"""

from alp.advantages import compute_advantages
from alp.batch import TrainBatch
from alp.config import LearnerConfig
from alp.learner import Learner
from alp.logprobs import chosen_logprobs, sampling_distribution, sampling_logprobs
from alp.perturb import LayerPerturbation, find_decoder_layers
from alp.presets import PRESETS, get_preset

__all__ = [
    "Learner",
    "LearnerConfig",
    "LayerPerturbation",
    "PRESETS",
    "TrainBatch",
    "chosen_logprobs",
    "compute_advantages",
    "find_decoder_layers",
    "get_preset",
    "sampling_distribution",
    "sampling_logprobs",
]
