"""Policy-gradient losses for ALP and the off-policy corrections beside it: pure tensor functions.

Shapes: B sequences, T tokens (one row per turn-concatenated sequence). Every function takes the
numerator logprobs `logp` [B, T] (the perturbed current policy pi_{theta,delta} in ALP), the denominator
`logp_denom` [B, T] (the rollout's behaviour logprobs mu, or a recomputed pi_old for decoupled PPO),
advantages [B, T] already broadcast over the loss mask, and the loss mask [B, T].

Ratio levels (`ratio_level`), each a per-token log-ratio [B, T] whose *value* and *gradient* differ:

| level       | value of log r_t                               | gradient                 | source           |
|-------------|------------------------------------------------|--------------------------|------------------|
| `token`     | clamp(log pi_t - log denom_t)                  | d log pi_t               | PPO; Token-ALP   |
| `sequence`  | clamp(sum_t m_t (log pi_t - log denom_t))      | d log pi_t (sg form:     | ALP paper (Seq-  |
|             |   = log rho_i, the same for every token of i   | r_t = sg[rho] pi/sg[pi]) | ALP, best)       |
| `geometric` | clamp(mean_t m_t (log pi_t - log denom_t))     | d log pi_t (sg form)     | GSPO (Zheng 2025)|

Loss variants (`correction`; one weight function each in `_CORRECTION_WEIGHTS`, applied by `policy_loss`
with the settings of one frozen `LossSpec`). The correction weight uses the
detached log-ratio c_t = log pi_old_t - log mu_t when pi_old was recomputed, else sg(log pi_t) - log mu_t:

| correction | per-token loss                                  | defaults          | source                    |
|------------|-------------------------------------------------|-------------------|---------------------------|
| `none`     | PPO clip on r (bypass: denominator = mu)        |                   | ALP, Seq/Token-Bypass     |
| `tis`      | min(exp(c_t), C) * PPO clip on r                | C = 2             | Yao et al. 2025 (TIS)     |
| `mis`      | 1[exp(sum_t c_t) in [lo, hi]] * PPO clip on r   | [0.5, 2]          | verl rollout IS, mask mode|
| `icepop`   | 1[exp(c_t) in [lo, hi]] * PPO clip on r         | [0.5, 5]          | IcePop (Ling team 2025)   |

PPO clip (`ppo_clip_loss`): max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), then for A < 0 the dual
clip min(., -A c) (Ye et al. 2020, c = 3). ALP defaults: eps_low 0.5, eps_high 3.0, c = 3 (paper).

Aggregation (`aggregate`), exact across micro-batches because the normalisers are the mini-batch's
global counts, so the result does not depend on how sequences are split:

| loss_agg              | loss                                              | source                     |
|-----------------------|---------------------------------------------------|----------------------------|
| `token-mean`          | sum_{i,t} m l / N_tokens                          | DAPO; ALP paper            |
| `seq-mean-token-mean` | sum_i (sum_t m l / n_i) / N_seqs                  | GRPO paper, GSPO           |
| `seq-mean-token-sum`  | sum_i sum_t m l / N_seqs                          | Dr.GRPO (without the const)|

Metrics: every loss function returns (loss, metrics) where metrics holds 0-d tensors of *counts*
(`clip/low`, `clip/high`, `clip/dual`, `clip/log_ratio_clamped`, `clip/correction_masked`,
`clip/tis_capped`, `tokens`) and 1-d tensors of per-token values under `values/ratio` and
`values/correction_ratio` (detached), so callers can sum across micro-batches before dividing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "RATIO_LEVELS",
    "CORRECTIONS",
    "LOSS_AGG_MODES",
    "KL_ESTIMATORS",
    "token_log_ratio",
    "sequence_log_ratio",
    "geometric_log_ratio",
    "log_ratio",
    "ppo_clip_loss",
    "aggregate",
    "LossSpec",
    "policy_loss",
    "kl_penalty",
    "mismatch_kl",
]

RATIO_LEVELS = ("token", "sequence", "geometric")
CORRECTIONS = ("none", "tis", "mis", "icepop")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_ESTIMATORS = ("k1", "k3", "low_var_kl")


# ---------------------------------------------------------------- ratios
def token_log_ratio(
    logp: torch.Tensor, logp_denom: torch.Tensor, mask: torch.Tensor, clamp: float = 20.0
) -> torch.Tensor:
    """Token level: clamp(log pi - log denom) [B, T] (0 where mask is 0)."""
    return torch.clamp(logp - logp_denom, -clamp, clamp) * mask  # [B, T]


def _sg_broadcast(seq_value: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # value: seq_value per token; gradient: that of log pi_t (r_t = sg[rho] * pi_t / sg[pi_t]).
    return (seq_value.detach().unsqueeze(1) + logp - logp.detach()) * mask  # [B, T]


def sequence_log_ratio(
    logp: torch.Tensor, logp_denom: torch.Tensor, mask: torch.Tensor, clamp: float = 20.0
) -> torch.Tensor:
    """Sequence level (Seq-ALP): log rho_i = clamp(sum_t m (log pi - log denom)) on every token [B, T]."""
    log_rho = ((logp - logp_denom) * mask).sum(1)  # [B]
    return _sg_broadcast(torch.clamp(log_rho, -clamp, clamp), logp, mask)  # [B, T]


def geometric_log_ratio(
    logp: torch.Tensor, logp_denom: torch.Tensor, mask: torch.Tensor, clamp: float = 20.0
) -> torch.Tensor:
    """Sequence geometric mean (GSPO): clamp(mean_t m (log pi - log denom)) on every token [B, T]."""
    n = mask.sum(1).clamp(min=1)  # [B]
    log_s = ((logp - logp_denom) * mask).sum(1) / n  # [B]
    return _sg_broadcast(torch.clamp(log_s, -clamp, clamp), logp, mask)  # [B, T]


_RATIO_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "token": token_log_ratio,
    "sequence": sequence_log_ratio,
    "geometric": geometric_log_ratio,
}


def log_ratio(
    level: str, logp: torch.Tensor, logp_denom: torch.Tensor, mask: torch.Tensor, clamp: float = 20.0
) -> torch.Tensor:
    """Dispatch on `level` (see the ratio table): [B, T]."""
    if level not in _RATIO_FUNCTIONS:
        raise ValueError(f"ratio_level={level!r}: choose one of {RATIO_LEVELS}")
    return _RATIO_FUNCTIONS[level](logp, logp_denom, mask, clamp)


def _clamped_count(level: str, logp, logp_denom, mask, clamp: float) -> torch.Tensor:
    with torch.no_grad():
        raw = (logp - logp_denom) * mask  # [B, T]
        if level == "token":
            return ((raw.abs() > clamp) & (mask > 0)).sum().float()
        per_seq = raw.sum(1)  # [B]
        if level == "geometric":
            per_seq = per_seq / mask.sum(1).clamp(min=1)
        return ((per_seq.abs() > clamp).float() * mask.sum(1)).sum()  # tokens whose sequence was clamped


# ---------------------------------------------------------------- PPO clip
def ppo_clip_loss(
    log_r: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate [B, T] (0 where mask is 0) and clip counts.

    l = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)); for A < 0 with dual clip c: l = min(l, -A c).
    """
    ratio = torch.exp(log_r)  # [B, T]
    pg1 = -advantages * ratio  # [B, T]
    pg2 = -advantages * torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)  # [B, T]
    loss = torch.maximum(pg1, pg2)  # [B, T]
    on = mask > 0  # [B, T]
    with torch.no_grad():
        r = ratio.detach()
        metrics = {
            "clip/low": ((r < 1.0 - epsilon_low) & (advantages < 0) & on).sum().float(),
            "clip/high": ((r > 1.0 + epsilon_high) & (advantages > 0) & on).sum().float(),
        }
    if dual_clip is not None:
        dual = -advantages * dual_clip  # [B, T]
        loss = torch.where(advantages < 0, torch.minimum(loss, dual), loss)  # [B, T]
        with torch.no_grad():
            metrics["clip/dual"] = ((r > dual_clip) & (advantages < 0) & on).sum().float()
    else:
        metrics["clip/dual"] = torch.zeros((), device=log_r.device)
    return loss * mask, metrics  # [B, T]


# ---------------------------------------------------------------- aggregation
def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar with global normalisers (defaults: this batch's)."""
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode={mode!r}: choose one of {LOSS_AGG_MODES}")
    n_i = mask.sum(1)  # [B]
    if num_tokens is None:
        num_tokens = float(n_i.sum())
    if num_seqs is None:
        num_seqs = float((n_i > 0).sum())
    if mode == "token-mean":
        return (per_token * mask).sum() / max(num_tokens, 1.0)
    seq_sum = (per_token * mask).sum(1)  # [B]
    if mode == "seq-mean-token-mean":
        return (seq_sum / n_i.clamp(min=1)).sum() / max(num_seqs, 1.0)
    return seq_sum.sum() / max(num_seqs, 1.0)


# ---------------------------------------------------------------- loss variants
@dataclass(frozen=True)
class LossSpec:
    """Every setting a loss variant reads, in one frozen record (``LearnerConfig.loss_spec()`` builds it).

    No field has a default: the defaults live in alp.config.LearnerConfig alone, and a misspelt or unknown
    setting fails here (TypeError) instead of being ignored.
    """

    correction: str
    """Off-policy correction: none | tis | mis | icepop (the variant table above)."""
    ratio_level: str
    """token | sequence | geometric (the ratio table above)."""
    log_ratio_clamp: float
    epsilon_low: float
    epsilon_high: float
    dual_clip: float | None
    tis_cap: float
    mis_low: float
    mis_high: float
    icepop_low: float
    icepop_high: float
    loss_agg_mode: str


def _surrogate(spec: LossSpec, logp, logp_denom, advantages, mask):
    log_r = log_ratio(spec.ratio_level, logp, logp_denom, mask, spec.log_ratio_clamp)  # [B, T]
    per_token, metrics = ppo_clip_loss(
        log_r, advantages, mask, epsilon_low=spec.epsilon_low, epsilon_high=spec.epsilon_high,
        dual_clip=spec.dual_clip,
    )  # fmt: skip
    on = mask > 0
    metrics["values/ratio"] = torch.exp(log_r.detach())[on]  # [N]
    metrics["clip/log_ratio_clamped"] = _clamped_count(spec.ratio_level, logp, logp_denom, mask,
                                                       spec.log_ratio_clamp)
    metrics["tokens"] = mask.sum().detach()
    metrics["clip/correction_masked"] = torch.zeros((), device=mask.device)
    metrics["clip/tis_capped"] = torch.zeros((), device=mask.device)
    return per_token, metrics


def _correction_log_ratio(logp, logp_old, logp_behavior, mask):
    proxy = logp_old if logp_old is not None else logp
    return ((proxy - logp_behavior) * mask).detach()  # [B, T]


def _no_weight(spec, corr, mask, metrics):
    return None


def _tis_weight(spec, corr, mask, metrics):
    """Truncated IS: per-token weight min(pi_old / mu, C)."""
    metrics["clip/tis_capped"] = ((corr > torch.log(torch.tensor(spec.tis_cap))) & (mask > 0)).sum().float()
    return torch.exp(corr).clamp(max=spec.tis_cap) * mask  # [B, T]


def _mis_weight(spec, corr, mask, metrics):
    """Masked sequence IS: drop whole sequences whose prod_t pi_old / mu leaves [mis_low, mis_high].

    Masked tokens still count in the normalisers (the mask zeroes their loss, it does not shrink N).
    """
    seq = corr.sum(1)  # [B]
    lo, hi = torch.log(torch.tensor(spec.mis_low)), torch.log(torch.tensor(spec.mis_high))
    keep = ((seq >= lo) & (seq <= hi)).float()  # [B]
    metrics["clip/correction_masked"] = ((1 - keep) * mask.sum(1)).sum()
    return keep.unsqueeze(1) * mask  # [B, T]


def _icepop_weight(spec, corr, mask, metrics):
    """IcePop: drop tokens whose pi_old / mu leaves the band [icepop_low, icepop_high]."""
    lo, hi = torch.log(torch.tensor(spec.icepop_low)), torch.log(torch.tensor(spec.icepop_high))
    keep = ((corr >= lo) & (corr <= hi)).float()  # [B, T]
    metrics["clip/correction_masked"] = ((1 - keep) * mask).sum()
    return keep * mask  # [B, T]


_CORRECTION_WEIGHTS: dict[str, Callable[..., torch.Tensor | None]] = {
    "none": _no_weight,
    "tis": _tis_weight,
    "mis": _mis_weight,
    "icepop": _icepop_weight,
}


def policy_loss(
    spec: LossSpec,
    logp: torch.Tensor,
    logp_denom: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    logp_behavior: torch.Tensor | None = None,
    logp_old: torch.Tensor | None = None,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate on r = pi / denom, weighted by ``spec.correction`` (the variant table), then
    aggregated with the mini-batch's global normalisers (defaults: this batch's counts).

    logp_behavior (mu) is needed by every correction but ``none``; logp_old (a recomputed pi_old) is the
    correction's proxy when given, else the detached current policy.
    """
    weight_of = _CORRECTION_WEIGHTS.get(spec.correction)
    if weight_of is None:
        raise ValueError(f"correction={spec.correction!r}: choose one of {CORRECTIONS}")
    per_token, metrics = _surrogate(spec, logp, logp_denom, advantages, mask)
    corr = None
    if spec.correction != "none":
        if logp_behavior is None:
            raise ValueError(f"correction={spec.correction!r} needs logp_behavior (the rollout logprobs mu)")
        corr = _correction_log_ratio(logp, logp_old, logp_behavior, mask)  # [B, T]
        metrics["values/correction_ratio"] = torch.exp(corr)[mask > 0]  # [N]
    weight = weight_of(spec, corr, mask, metrics)
    if weight is not None:
        per_token = per_token * weight  # [B, T]
    loss = aggregate(per_token, mask, spec.loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs)
    return loss, metrics


# ---------------------------------------------------------------- KL
def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "low_var_kl") -> torch.Tensor:
    """Per-token KL(pi || ref) estimate [B, T] on samples y ~ pi (Schulman 2020, "Approximating KL").

    k1: log pi - log ref (unbiased, high variance). k3 / low_var_kl: exp(ref - pi) - (ref - pi) - 1,
    clamped to [-10, 10] as verl's low_var_kl (non-negative, low variance).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator={estimator!r}: choose one of {KL_ESTIMATORS}")
    d = ref_logp - logp  # [B, T]
    if estimator == "k1":
        return -d
    return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)  # [B, T]


@torch.no_grad()
def mismatch_kl(
    logp: torch.Tensor, logp_behavior: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Sums of KL(mu || pi) estimators over masked tokens (samples y ~ mu; r = pi / mu).

    k1 = log mu - log pi; k3 = r - 1 - log r (>= 0). Returned as sums: divide by the token count.
    """
    log_r = (logp - logp_behavior).clamp(-20, 20) * mask  # [B, T]
    return {"k1": (-log_r).sum(), "k3": ((torch.exp(log_r) - 1 - log_r) * mask).sum()}
