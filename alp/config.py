"""LearnerConfig: every knob of the ALP learner, one field each, documented once here.

Defaults are the ALP paper's multi-turn setting (arXiv 2603.19470, Qwen2.5-7B with a python tool) where
it gives a value; TRL/verl names are used where the knob exists there. Named presets live in
alp/presets.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from alp.advantages import ESTIMATORS
from alp.distributed import STRATEGIES
from alp.losses import CORRECTIONS, KL_ESTIMATORS, LOSS_AGG_MODES, RATIO_LEVELS, LossSpec
from alp.perturb import LAYER_MODES
from alp.schedule import SCHEDULES

__all__ = ["LearnerConfig"]


@dataclass
class LearnerConfig:
    """Configuration of alp.learner.Learner (B sequences, T tokens, L perturbed layers)."""

    # ---- optimisation
    lr: float = 1e-6
    """Policy learning rate (AdamW), the peak of the schedule below. ALP paper: 1e-6."""
    lr_warmup_steps: int = 0
    """Optimizer steps of linear policy-lr warm-up, (step + 1) / n x lr; 0 = none (the paper's recipes)."""
    lr_schedule: str = "constant"
    """After the warm-up: constant | linear | cosine decay of the policy lr to lr_final_ratio x lr at lr_decay_steps."""
    lr_decay_steps: int = 0
    """Optimizer step (counted from 0, warm-up included) where a linear or cosine decay ends."""
    lr_final_ratio: float = 0.0
    """Policy lr at and after lr_decay_steps, as a fraction of lr (linear and cosine schedules)."""
    sigma_lr: float = 5e-4
    """Learning rate of the log-sigma param group. ALP paper: 5e-4 multi-turn, 1e-2 single-turn."""
    weight_decay: float = 0.01
    """AdamW weight decay of the policy group (verl default 0.01); the sigma group has none."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas (torch defaults)."""
    adam_eps: float = 1e-8
    """AdamW epsilon (torch default)."""
    max_grad_norm: float | None = 1.0
    """Clip the global grad norm of the policy (and sigma) to this; None = no clipping (verl: 1.0)."""
    mini_batch_size: int | None = None
    """Sequences per optimizer step; None = the whole batch (one step). Paper: 32 x 16 of 128 x 16 -> 4 steps."""
    ppo_epochs: int = 1
    """Passes over the rollout batch per update() (verl ppo_epochs)."""
    shuffle: bool = True
    """Shuffle sequences into mini-batches each epoch (seeded from seed and step)."""
    micro_batch_tokens: int = 8192
    """Token budget of one forward/backward (padded b x T_max); sequences are never split."""
    logprob_chunk_tokens: int = 512
    """Positions per chunk in the lean logprob/entropy path; 0 = plain log_softmax path."""
    strategy: str = "replicate"
    """Data parallelism under torchrun (alp.distributed): replicate (full replicas, every rank holds the whole
    batch) | ddp (torch DDP, each rank its own rows) | fsdp2 (fully_shard every decoder layer and the root)."""
    mixed_precision: str | None = None
    """fsdp2: bfloat16 computes in bf16 and reduces gradients in fp32 over fp32 sharded master weights; null:
    the model's own dtype throughout."""
    cpu_offload: bool = False
    """fsdp2: keep sharded parameters, gradients and optimizer state in host memory between uses."""
    gradient_checkpointing: bool = False
    """Activation checkpointing of the decoder layers (HF); noise is keyed, so recompute sees the same eps."""
    seed: int = 0
    """Seeds the noise keys and the mini-batch shuffle."""

    # ---- perturbation (ALP)
    perturb_layers: str | list[int] = "all"
    """Which layers get noise: all | early | middle | late | logits | none | [indices]. Paper best: all."""
    sigma_init: float = 1e-6
    """Initial sigma per layer. Paper: 1e-6 multi-turn, 0.02 single-turn (absolute scale)."""
    noise_scale: str = "absolute"
    """absolute (paper: sigma * eps) | relative (ours: sigma * RMS(h_token) * eps, detached RMS)."""
    sigma_reg_alpha: float = 0.0
    """Regulariser alpha * sigma^2 (summed over layers); dev code uses 1e-3; 0 = off."""
    sigma_reg_beta: float = 0.0
    """Regulariser - beta * log sigma^2; dev code uses 1e-3; 0 = off. Minimum at sigma^2 = beta / alpha."""
    layers_path: str | None = None
    """Dotted path of the decoder nn.ModuleList when it cannot be found (e.g. 'model.layers')."""
    noise_probe_seqs: int = 32
    """Sequences of each update's first mini-batch also scored without noise (one no-grad forward of them; free
    with ratio_denominator='old') to log what the noise itself does (noise/*) beside the mismatch (mismatch/*);
    0 = off. Only when the update is perturbed."""

    # ---- ratio and loss
    ratio_level: str = "sequence"
    """token | sequence (Seq-ALP, sg form) | geometric (GSPO). Paper best: sequence."""
    ratio_denominator: str = "behavior"
    """behavior (rollout logprobs mu; ALP, bypass) | old (recomputed unperturbed pi_old; decoupled PPO)."""
    log_ratio_clamp: float = 20.0
    """Clamp of the log-ratio (token or sequence sum) to [-c, c]. Paper: 20."""
    epsilon_low: float = 0.5
    """PPO clip: ratio lower bound 1 - epsilon_low. Paper: 0.5."""
    epsilon_high: float = 3.0
    """PPO clip: ratio upper bound 1 + epsilon_high. Paper: 3.0 (range [0.5, 4.0])."""
    dual_clip: float | None = 3.0
    """Dual-clip constant c for negative advantages (Ye et al. 2020); None = off. Paper: 3 multi-turn, 10 single."""
    correction: str = "none"
    """Off-policy correction: none (bypass) | tis | mis | icepop. ALP needs none."""
    tis_cap: float = 2.0
    """TIS truncation C of min(pi_old / mu, C) (Yao et al. 2025: 2)."""
    mis_low: float = 0.5
    """MIS: keep sequences with prod pi_old / mu >= mis_low."""
    mis_high: float = 2.0
    """MIS: keep sequences with prod pi_old / mu <= mis_high."""
    icepop_low: float = 0.5
    """IcePop band lower edge alpha (IcePop: 0.5)."""
    icepop_high: float = 5.0
    """IcePop band upper edge beta (IcePop: 5)."""
    loss_agg_mode: str = "token-mean"
    """token-mean (paper) | seq-mean-token-mean | seq-mean-token-sum; global counts per mini-batch."""
    kl_coef: float = 0.0
    """Coefficient of KL(pi || ref) in the loss (TRL beta); needs ref_model. Paper: 0 multi-turn, 1e-3 single."""
    kl_estimator: str = "low_var_kl"
    """k1 | k3 | low_var_kl (= k3 clamped, verl)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (loss -= coef * entropy). Paper: 0."""

    # ---- advantages
    advantage_estimator: str = "grpo"
    """grpo | grpo_no_std | dr_grpo | rloo (used when the batch has rewards, not advantages)."""
    advantage_eps: float = 1e-6
    """Added to the group std in grpo."""

    # ---- diagnostics
    ratio_quantiles: tuple[float, ...] = field(default=(0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99))
    """Quantiles of the ratio logged as ratio/qNN."""

    def __post_init__(self) -> None:
        def choice(name: str, options: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in options:
                raise ValueError(f"{name}={value!r}: choose one of {options}")

        choice("ratio_level", RATIO_LEVELS)
        choice("ratio_denominator", ("behavior", "old"))
        choice("correction", CORRECTIONS)
        choice("loss_agg_mode", LOSS_AGG_MODES)
        choice("kl_estimator", KL_ESTIMATORS)
        choice("advantage_estimator", ESTIMATORS)
        choice("noise_scale", ("absolute", "relative"))
        choice("strategy", STRATEGIES)
        if self.mixed_precision not in (None, "bfloat16"):
            raise ValueError(f"mixed_precision={self.mixed_precision!r}: choose 'bfloat16' or None")
        if (self.mixed_precision is not None or self.cpu_offload) and self.strategy != "fsdp2":
            raise ValueError("mixed_precision and cpu_offload are options of strategy='fsdp2' (FSDP2's policies); "
                             f"strategy={self.strategy!r} trains in the model's own dtype on its device")
        choice("lr_schedule", SCHEDULES)
        if isinstance(self.perturb_layers, str):
            choice("perturb_layers", LAYER_MODES)
        else:
            self.perturb_layers = [int(i) for i in self.perturb_layers]
            if not self.perturb_layers:
                raise ValueError("perturb_layers=[]: give layer indices, or perturb_layers='none'")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.ratio_quantiles = tuple(self.ratio_quantiles)
        positive = ("sigma_init", "micro_batch_tokens", "ppo_epochs", "log_ratio_clamp", "tis_cap")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be > 0")
        for name in (
            "lr_warmup_steps",
            "lr_decay_steps",
            "noise_probe_seqs",
            "sigma_lr",
            "weight_decay",
            "kl_coef",
            "entropy_coef",
            "sigma_reg_alpha",
            "sigma_reg_beta",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        if not 0 <= self.epsilon_low < 1:
            raise ValueError(
                f"epsilon_low={self.epsilon_low}: the lower clip bound 1 - epsilon_low must be in (0, 1]; "
                "use a value in [0, 1) (paper 0.5, PPO 0.2)"
            )
        if self.epsilon_high < 0:
            raise ValueError(f"epsilon_high={self.epsilon_high}: must be >= 0 (paper 3.0, PPO 0.2)")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(
                f"dual_clip={self.dual_clip}: the dual-clip bound on -A * r for negative advantages must be > 1 "
                "(paper 3 multi-turn, 10 single-turn); set dual_clip=None to switch it off"
            )
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise ValueError(f"mini_batch_size={self.mini_batch_size}: must be >= 1 or None (whole batch)")
        if self.logprob_chunk_tokens < 0:
            raise ValueError(
                f"logprob_chunk_tokens={self.logprob_chunk_tokens}: must be >= 0 (0 = plain path)"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm}: must be > 0, or None for no clipping")
        if not 0 < self.mis_low < self.mis_high:
            raise ValueError(
                f"need 0 < mis_low < mis_high, got mis_low={self.mis_low}, mis_high={self.mis_high}"
            )
        if not 0 < self.icepop_low < self.icepop_high:
            raise ValueError(
                f"need 0 < icepop_low < icepop_high, got icepop_low={self.icepop_low}, icepop_high={self.icepop_high}"
            )
        if (self.sigma_reg_alpha > 0) != (self.sigma_reg_beta > 0) and self.sigma_reg_beta > 0:
            raise ValueError(
                f"sigma_reg_beta={self.sigma_reg_beta} with sigma_reg_alpha=0 pushes sigma to infinity; "
                "set sigma_reg_alpha > 0 too (the minimum is at sigma^2 = beta / alpha)"
            )
        if not 0 <= self.lr_final_ratio <= 1:
            raise ValueError(f"lr_final_ratio={self.lr_final_ratio}: must be in [0, 1] (a fraction of lr)")
        if self.lr_schedule != "constant" and self.lr_decay_steps <= self.lr_warmup_steps:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} decays until lr_decay_steps={self.lr_decay_steps}, which must "
                f"be above lr_warmup_steps={self.lr_warmup_steps} (e.g. the run's optimizer steps)"
            )
        if not all(0 < q < 1 for q in self.ratio_quantiles):
            raise ValueError(f"ratio_quantiles={self.ratio_quantiles}: every quantile must be in (0, 1)")

    @property
    def perturbs(self) -> bool:
        """True when the update forward is perturbed."""
        return self.perturb_layers != "none"

    def loss_spec(self) -> LossSpec:
        """The settings the policy loss reads, as the frozen record alp.losses takes."""
        return LossSpec(**{f.name: getattr(self, f.name) for f in fields(LossSpec)})

    def to_dict(self) -> dict:
        """Plain dict (for checkpoints and metrics files)."""
        return asdict(self)
