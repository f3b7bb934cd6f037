"""Named learner presets: overrides of LearnerConfig's defaults (which are the `alp` preset).

| preset           | ratio      | denominator | correction | perturbation   | notes                                 |
|------------------|------------|-------------|------------|----------------|---------------------------------------|
| `alp`            | sequence   | mu          | none       | all layers     | Seq-ALP, paper multi-turn (default)   |
| `alp-token`      | token      | mu          | none       | all layers     | Token-ALP                             |
| `alp-late`       | sequence   | mu          | none       | last third     | layer ablation                        |
| `alp-logits`     | sequence   | mu          | none       | LM-head input  | logits-only ablation                  |
| `alp-single-turn`| sequence   | mu          | none       | all layers     | paper single-turn math values         |
| `bypass`         | sequence   | mu          | none       | none           | Seq-Bypass                            |
| `tis`            | token      | pi_old      | tis C=2    | none           | decoupled PPO + truncated IS          |
| `mis`            | token      | pi_old      | mis        | none           | masked sequence IS [0.5, 2]           |
| `icepop`         | token      | pi_old      | icepop     | none           | token band mask [0.5, 5]              |
| `gspo`           | geometric  | pi_old      | none       | none           | GSPO clip 3e-4 / 4e-4, seq-mean       |
| `ppo-decoupled`  | token      | pi_old      | none       | none           | vanilla PPO clip 0.2, dual clip 3     |

The baselines keep the paper's clip range [0.5, 4.0] and dual clip unless their source gives values.
"""

from __future__ import annotations

import difflib
from typing import Any

from alp.config import LearnerConfig

__all__ = ["PRESETS", "get_preset"]

_NO_NOISE: dict[str, Any] = {"perturb_layers": "none"}
_DECOUPLED: dict[str, Any] = {**_NO_NOISE, "ratio_level": "token", "ratio_denominator": "old"}

PRESETS: dict[str, dict[str, Any]] = {
    "alp": {},
    "alp-token": {"ratio_level": "token"},
    "alp-late": {"perturb_layers": "late"},
    "alp-logits": {"perturb_layers": "logits"},
    # Paper single-turn math (Qwen2.5-Math-1.5B / Qwen3-4B): sigma0 0.02, sigma lr 1e-2, low_var_kl 1e-3,
    # dual clip 10. Needs a ref_model for the KL term.
    "alp-single-turn": {
        "sigma_init": 0.02,
        "sigma_lr": 1e-2,
        "dual_clip": 10.0,
        "kl_coef": 1e-3,
        "kl_estimator": "low_var_kl",
    },
    "bypass": {**_NO_NOISE},
    "tis": {**_DECOUPLED, "correction": "tis", "tis_cap": 2.0},
    "mis": {**_DECOUPLED, "correction": "mis", "mis_low": 0.5, "mis_high": 2.0},
    "icepop": {**_DECOUPLED, "correction": "icepop", "icepop_low": 0.5, "icepop_high": 5.0},
    # GSPO (Zheng et al. 2025): sequence geometric-mean ratio, clip 3e-4 / 4e-4, sequence-mean loss.
    "gspo": {
        **_NO_NOISE,
        "ratio_level": "geometric",
        "ratio_denominator": "old",
        "epsilon_low": 3e-4,
        "epsilon_high": 4e-4,
        "dual_clip": None,
        "loss_agg_mode": "seq-mean-token-mean",
    },
    "ppo-decoupled": {**_DECOUPLED, "epsilon_low": 0.2, "epsilon_high": 0.2, "dual_clip": 3.0},
}


def get_preset(name: str, **overrides: Any) -> LearnerConfig:
    """LearnerConfig for preset `name`, with keyword overrides applied on top.

    Unknown names raise KeyError listing the presets (with the closest match); unknown override keys
    raise TypeError from the dataclass.
    """
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown learner preset {name!r}.{hint} Presets: {', '.join(PRESETS)}")
    return LearnerConfig(**{**PRESETS[name], **overrides})
