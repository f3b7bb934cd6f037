"""The ALP learner: advantages -> perturbed forward -> ratio against the rollout policy -> clip -> AdamW step.

One `update(batch)` per rollout batch, in execution order:
    1. advantages from rewards and group ids (unless given), broadcast over sampled tokens
    2. optional no-grad passes without noise: pi_old (decoupled PPO baselines) and the reference model (KL)
    3. for each epoch, each mini-batch (one optimizer step):
         pack sequences into micro-batches by token budget (never splitting a sequence)
         per micro-batch: forward under `perturbation.active(...)`, logprobs at the rollout's temperature,
         loss with the mini-batch's global token/sequence counts (exact across micro-batches), backward
         sigma regulariser, grad clip, policy lr from the schedule (alp.schedule), AdamW step (policy group
         + sigma group), step += 1
       the first mini-batch's first `noise_probe_seqs` sequences are also scored without noise at the same
       weights (no grad), so the noise's own effect is measured apart from the rollout/trainer mismatch
    4. metrics: loss/, ratio/, clip/, kl/, noise/, mismatch/, sigma/, groups/, lr, entropy, grad_norm, perf/

Shapes: B sequences, T tokens, V vocabulary, L perturbed layers.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from alp.advantages import broadcast_advantages, compute_advantages, flat_groups
from alp.batch import TrainBatch, pack_micro_batches
from alp.config import LearnerConfig
from alp.distributed import DataParallel
from alp.logprobs import score, token_logprobs
from alp.losses import aggregate, kl_penalty, mismatch_kl, policy_loss
from alp.perturb import LayerPerturbation, noise_key
from alp.schedule import lr_factor
from alp.stats import quantiles

__all__ = ["Learner"]


class _Sums:
    """Accumulates metric sums across micro-batches and steps."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.values: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def extend(self, name: str, values: torch.Tensor) -> None:
        self.values.setdefault(name, []).append(values.detach().float().cpu())

    def get(self, name: str, default: float = 0.0) -> float:
        return self.sums.get(name, default)


class Learner:
    """Trains `model` (an HF causal LM) on TrainBatches with ALP or a baseline, as `config` says.

    Owns the AdamW optimizer (param groups "policy" and "sigma") and the LayerPerturbation (`.perturbation`,
    not a submodule of the model, so model checkpoints stay plain HF). `.step` counts optimizer steps.
    """

    def __init__(
        self,
        model: nn.Module,
        config: LearnerConfig,
        *,
        ref_model: nn.Module | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device)
        if config.kl_coef > 0 and ref_model is None:
            raise ValueError(
                f"kl_coef={config.kl_coef} needs a reference model: pass Learner(..., ref_model=<frozen copy>) "
                "or set kl_coef=0"
            )
        self.ref_model = (
            ref_model.to(self.device).eval().requires_grad_(False) if ref_model is not None else None
        )
        self.perturbation = LayerPerturbation(
            model,
            layers=config.perturb_layers,
            sigma_init=config.sigma_init,
            noise_scale=config.noise_scale,
            seed=config.seed,
            layers_path=config.layers_path,
        ).to(self.device)
        groups: list[dict[str, Any]] = [
            {
                "params": [p for p in model.parameters() if p.requires_grad],
                "lr": config.lr,
                "weight_decay": config.weight_decay,
                "name": "policy",
            }
        ]
        if self.perturbation.num_layers:
            groups.append(
                {
                    "params": [self.perturbation.log_sigma],
                    "lr": config.sigma_lr,
                    "weight_decay": 0.0,
                    "name": "sigma",
                }
            )
        if config.gradient_checkpointing:
            enable = (
                getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            )
            enable()
        # after the perturbation's hooks found the decoder layers, before the optimizer sees the parameters
        # (FSDP2 replaces them with sharded ones)
        self.parallel = DataParallel(config.strategy, model, layers_path=config.layers_path,
                                     mixed_precision=config.mixed_precision, cpu_offload=config.cpu_offload)
        groups[0]["params"] = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.adam_eps)
        self.loss_spec = config.loss_spec()
        self.step = 0

    def policy_lr(self, step: int) -> float:
        """The policy group's learning rate at optimizer step ``step`` (warm-up and schedule of the config)."""
        cfg = self.config
        return cfg.lr * lr_factor(step, warmup_steps=cfg.lr_warmup_steps, schedule=cfg.lr_schedule,
                                  decay_steps=cfg.lr_decay_steps, final_ratio=cfg.lr_final_ratio)

    def _score(self, model: nn.Module, batch: TrainBatch) -> torch.Tensor:
        """Unperturbed logprobs [B, T] of the loss tokens (pi_old or the reference), 0 elsewhere, no grad."""
        forwards = None
        if model is self.model and self.parallel.sharded:  # a collective forward: as many on every rank
            forwards = self.parallel.all_max(len(pack_micro_batches(
                batch.lengths, torch.arange(len(batch)), self.config.micro_batch_tokens)))
        logp = score(model, batch, micro_batch_tokens=self.config.micro_batch_tokens,
                     chunk_tokens=self.config.logprob_chunk_tokens, forwards=forwards)  # [B, T]
        return torch.where(batch.loss_mask > 0, logp, 0.0)  # tokens outside the loss may be -inf (top-k/p)

    # ------------------------------------------------------------------ update
    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One rollout batch -> ppo_epochs x ceil(B / mini_batch_size) optimizer steps. Returns metrics."""
        cfg = self.config
        t0 = time.perf_counter()
        batch.validate()
        batch = batch.select(torch.arange(len(batch)))  # a private copy
        for name in (
            "token_ids",
            "loss_mask",
            "behavior_logprobs",
            "lengths",
            "advantages",
            "rewards",
            "group_ids",
        ):
            v = getattr(batch, name)
            if v is not None:
                setattr(batch, name, v.to(self.device))
        B = len(batch)
        mask = batch.loss_mask  # [B, T]
        if batch.advantages is None:
            adv = compute_advantages(
                batch.rewards, batch.group_ids, estimator=cfg.advantage_estimator, eps=cfg.advantage_eps
            ).to(self.device)  # [B]
        else:
            adv = batch.advantages  # [B] or [B, T]
        adv_tok = broadcast_advantages(adv, mask)  # [B, T]
        seq_ids = batch.sequence_ids if batch.sequence_ids is not None else torch.arange(B)  # [B]

        self.model.train()
        sums = _Sums()
        logp_old = self._score(self.model, batch) if cfg.ratio_denominator == "old" else None  # [B, T]
        ref_logp = (
            self._score(self.ref_model, batch) if self.ref_model is not None and cfg.kl_coef > 0 else None
        )
        t_score = time.perf_counter() - t0

        # Mini-batches are slices of one permutation of the global sequence ids (the same on every rank and for
        # every world size); each rank trains on the rows it holds.
        all_ids = self.parallel.global_ids(seq_ids)  # [N] sorted
        row_of = {int(i): r for r, i in enumerate(seq_ids.tolist())}
        n_all = all_ids.numel()
        mbs = cfg.mini_batch_size or n_all
        for epoch in range(cfg.ppo_epochs):
            if cfg.shuffle:
                g = torch.Generator().manual_seed(noise_key(cfg.seed, self.step, epoch, 0, 0, 0))
                order = torch.randperm(n_all, generator=g)
            else:
                order = torch.arange(n_all)
            for start in range(0, n_all, mbs):
                chunk = all_ids[order[start : start + mbs]].tolist()
                rows = torch.tensor([row_of[i] for i in chunk if i in row_of], dtype=torch.long,
                                    device=self.device)
                probe = self._noise_probe(batch, rows, logp_old, sums) if epoch == 0 and start == 0 else None
                self._train_step(batch, rows, adv_tok, seq_ids, logp_old, ref_logp, sums, probe)
        return self._metrics(sums, batch, time.perf_counter() - t0, t_score)

    def _noise_probe(self, batch: TrainBatch, rows: torch.Tensor, logp_old: torch.Tensor | None,
                     sums: _Sums) -> dict[int, torch.Tensor] | None:
        """Unperturbed logprobs (row -> [T]) of the first ``noise_probe_seqs`` rows of the update's first
        mini-batch, at the weights its perturbed forward uses: pi_old when it was computed, else one no-grad
        forward of those rows. None when the update is not perturbed or the probe is off."""
        n = self.config.noise_probe_seqs
        if not self.perturbation.num_layers or n <= 0:
            return None
        t0 = time.perf_counter()
        chosen = rows[:n]
        logp = logp_old[chosen] if logp_old is not None else self._score(self.model, batch.select(chosen))  # [n, T]
        sums.add("perf/noise_probe_seconds", time.perf_counter() - t0)
        return {int(r): row for r, row in zip(chosen.tolist(), logp, strict=True)}

    def _train_step(self, batch, rows, adv_tok, seq_ids, logp_old, ref_logp, sums: _Sums,
                    probe: dict[int, torch.Tensor] | None = None) -> None:
        cfg = self.config
        par = self.parallel
        mask_mb = batch.loss_mask[rows]  # [b, T]
        # the mini-batch's global counts (summed over ranks): summing the ranks' gradients of losses normalised
        # by them gives exactly the single-process gradient
        n_tok, n_seq = par.all_sum([float(mask_mb.sum()), float((mask_mb.sum(1) > 0).sum())])
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = {"policy": 0.0, "kl": 0.0, "entropy": 0.0}
        local_rows = rows[par.rank :: par.world] if par.splits_rows else rows
        micro = pack_micro_batches(batch.lengths, local_rows, cfg.micro_batch_tokens) if len(local_rows) else []
        n_micro = par.all_max(len(micro))  # collectives match: every rank runs as many backward passes
        for i in range(len(micro), n_micro):  # this rank has fewer rows: empty passes that add nothing
            with par.gradient_sync(i == n_micro - 1):
                logits = par.module(input_ids=batch.token_ids[:1, :2], use_cache=False).logits  # [1, 2, V]
                (logits.sum() * 0.0).backward()
        for i, mb in enumerate(micro):
            width = int(batch.lengths[mb].max())
            ids = batch.token_ids[mb, :width]  # [b, T]
            mask = batch.loss_mask[mb, :width]  # [b, T]
            behavior = batch.behavior_logprobs[mb, :width]  # [b, T]
            old = logp_old[mb, :width] if logp_old is not None else None  # [b, T]
            ctx = (
                self.perturbation.active(
                    step=self.step, micro_batch=0, sequence_ids=seq_ids[mb.cpu()], lengths=batch.lengths[mb]
                )
                if self.perturbation.num_layers
                else nullcontext()
            )
            with ctx, par.gradient_sync(i == len(micro) - 1):
                logits = par.module(input_ids=ids, use_cache=False).logits  # [b, T, V]
                logp, ent = token_logprobs(logits, ids, temperature=batch.temperature, top_p=batch.top_p,
                                           top_k=batch.top_k, chunk_tokens=cfg.logprob_chunk_tokens)
                # With top-k/top-p a token can lie outside the learner's set (log pi = -inf): outside the loss
                # (prompt, tool output, padding) it is zeroed, or -inf * 0 in the masked sums would be NaN; in the
                # loss (pi has drifted from mu) it takes the clamped ratio exp(-log_ratio_clamp), no gradient.
                floor = (behavior - cfg.log_ratio_clamp).detach()  # [b, T]
                logp = logp.float()
                logp = torch.where(mask > 0, torch.where(torch.isfinite(logp), logp, floor), 0.0)  # [b, T]
                loss, m = policy_loss(
                    self.loss_spec, logp, old if old is not None else behavior, adv_tok[mb, :width], mask,
                    logp_behavior=behavior, logp_old=old, num_tokens=n_tok, num_seqs=n_seq,
                )
                agg = {"mode": cfg.loss_agg_mode, "num_tokens": n_tok, "num_seqs": n_seq}
                total = loss
                step_loss["policy"] += float(loss.detach())
                if ref_logp is not None:
                    kl = aggregate(kl_penalty(logp, ref_logp[mb, :width], cfg.kl_estimator), mask, **agg)
                    total = total + cfg.kl_coef * kl
                    step_loss["kl"] += float(kl.detach())
                if cfg.entropy_coef > 0:
                    ent_loss = aggregate(ent.float(), mask, **agg)
                    total = total - cfg.entropy_coef * ent_loss
                    step_loss["entropy"] += float(ent_loss.detach())
                total.backward()
            # diagnostics (no grad)
            with torch.no_grad():
                for k, v in m.items():
                    if k.startswith("values/"):
                        sums.extend(k, v)
                    else:
                        sums.add(k, v)
                sums.add("entropy_sum", (ent.float() * mask).sum())
                for k, v in mismatch_kl(logp, behavior, mask).items():
                    sums.add(f"kl_mu_pi_{k}", v)
                if old is not None:
                    for k, v in mismatch_kl(old, behavior, mask).items():
                        sums.add(f"kl_mu_old_{k}", v)
                if ref_logp is not None:
                    kl_ref = kl_penalty(logp, ref_logp[mb, :width], cfg.kl_estimator)
                    sums.add("kl_ref_sum", (kl_ref * mask).sum())
                if probe is not None:
                    _add_noise_probe(sums, probe, mb, logp, behavior, mask)
                sums.add("perf/micro_batches", 1)
                sums.add("padded_tokens", ids.numel())
                sums.add("real_tokens", batch.lengths[mb].sum())
        reg = 0.0
        if self.perturbation.num_layers and (cfg.sigma_reg_alpha > 0 or cfg.sigma_reg_beta > 0):
            r = self.perturbation.regulariser(cfg.sigma_reg_alpha, cfg.sigma_reg_beta)
            if par.rank == 0:  # added once, not once per rank
                r.backward()
            reg = float(r.detach())
        groups = self.optimizer.param_groups
        policy, others = list(groups[0]["params"]), [p for g in groups[1:] for p in g["params"]]
        par.reduce_grads(policy, others)
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else math.inf
        grad_norm = par.clip_grad_norm([*policy, *others], max_norm)
        lr = self.policy_lr(self.step)
        self.optimizer.param_groups[0]["lr"] = lr  # the policy group; sigma keeps its own constant lr
        sums.sums["lr"] = lr
        self.optimizer.step()
        self.step += 1
        for k, v in step_loss.items():
            sums.add(f"loss/{k}", v)
        sums.add("loss/sigma_reg", reg)
        sums.add(
            "loss/total",
            step_loss["policy"]
            + cfg.kl_coef * step_loss["kl"]
            - cfg.entropy_coef * step_loss["entropy"]
            + reg,
        )
        sums.add("grad_norm", grad_norm)
        sums.sums["grad_norm_max"] = max(sums.get("grad_norm_max", 0.0), grad_norm)
        sums.add("steps", 1)

    # ------------------------------------------------------------------ metrics
    def _metrics(
        self, sums: _Sums, batch: TrainBatch, seconds: float, score_seconds: float
    ) -> dict[str, float]:
        cfg = self.config
        steps = max(sums.get("steps"), 1.0)
        tokens = max(sums.get("tokens"), 1.0)
        out: dict[str, float] = {}
        for k in ("policy", "kl", "entropy", "sigma_reg", "total"):
            out[f"loss/{k}"] = sums.get(f"loss/{k}") / steps
        ratio = torch.cat(sums.values.get("values/ratio", [torch.zeros(0)]))
        if ratio.numel():
            r = ratio.double()
            out["ratio/mean"] = float(r.mean())
            out["ratio/std"] = float(r.std()) if r.numel() > 1 else 0.0
            out["ratio/min"] = float(r.min())
            out["ratio/max"] = float(r.max())
            for q, v in zip(cfg.ratio_quantiles, quantiles(r, cfg.ratio_quantiles), strict=True):
                out[f"ratio/q{round(q * 100):02d}"] = v
        corr = sums.values.get("values/correction_ratio")
        if corr:
            c = torch.cat(corr).double()
            out["ratio/correction_mean"] = float(c.mean())
            out["ratio/correction_max"] = float(c.max())
            out["ratio/correction_min"] = float(c.min())
        for k in ("low", "high", "dual", "log_ratio_clamped", "correction_masked", "tis_capped"):
            out[f"clip/{k}_frac"] = sums.get(f"clip/{k}") / tokens
        out["clip/frac"] = out["clip/low_frac"] + out["clip/high_frac"] + out["clip/dual_frac"]
        out["kl/mu_pi_k1"] = sums.get("kl_mu_pi_k1") / tokens
        out["kl/mu_pi_k3"] = sums.get("kl_mu_pi_k3") / tokens
        if "kl_mu_old_k1" in sums.sums:
            out["kl/mu_old_k1"] = sums.get("kl_mu_old_k1") / tokens
            out["kl/mu_old_k3"] = sums.get("kl_mu_old_k3") / tokens
        if "kl_ref_sum" in sums.sums:
            out[f"kl/ref_{cfg.kl_estimator}"] = sums.get("kl_ref_sum") / tokens
        out.update(_noise_probe_metrics(sums))
        if batch.rewards is not None and batch.group_ids is not None:
            flat = flat_groups(batch.rewards.cpu(), batch.group_ids.cpu())  # [G]
            out["groups/count"] = float(flat.numel())
            out["groups/all_equal_frac"] = float(flat.float().mean()) if flat.numel() else 0.0
        out["lr"] = sums.get("lr", self.policy_lr(self.step))
        sig = self.perturbation.sigma.detach().float().cpu()
        for name, s in zip(self.perturbation.layer_names(), sig.tolist(), strict=True):
            out[f"sigma/{name}"] = s
        if sig.numel():
            out["sigma/mean"] = float(sig.mean())
            out["sigma/min"] = float(sig.min())
            out["sigma/max"] = float(sig.max())
        out["entropy"] = sums.get("entropy_sum") / tokens
        out["grad_norm"] = sums.get("grad_norm") / steps
        out["grad_norm_max"] = sums.get("grad_norm_max")
        out["perf/seconds"] = seconds
        out["perf/score_seconds"] = score_seconds
        if "perf/noise_probe_seconds" in sums.sums:
            out["perf/noise_probe_seconds"] = sums.get("perf/noise_probe_seconds")
        out["perf/optimizer_steps"] = sums.get("steps")
        out["perf/micro_batches"] = sums.get("perf/micro_batches")
        out["perf/tokens"] = sums.get("real_tokens")
        out["perf/tokens_per_s"] = sums.get("real_tokens") / max(seconds, 1e-9)
        out["perf/padding_frac"] = 1.0 - sums.get("real_tokens") / max(sums.get("padded_tokens"), 1.0)
        out["perf/loss_tokens_per_seq"] = float(batch.loss_mask.sum()) / max(len(batch), 1)
        out["perf/step"] = float(self.step)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer (both groups), perturbation (log-sigma), step and the resolved config.

        A sharded learner (fsdp2) gives each rank's shards, keyed by parameter name (torch.distributed.checkpoint's
        state-dict API; save it with ``torch.distributed.checkpoint.save``): a collective call."""
        if self.parallel.sharded:
            from torch.distributed.checkpoint.state_dict import get_state_dict

            params, optim = get_state_dict(self._trainables, self.optimizer)
            return {"trainables": params, "optimizer": optim, "step": self.step}
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "perturbation": self.perturbation.state_dict(),
            "step": self.step,
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() saved (the config is informational and not applied)."""
        if self.parallel.sharded:
            from torch.distributed.checkpoint.state_dict import set_state_dict

            set_state_dict(self._trainables, self.optimizer, model_state_dict=state["trainables"],
                           optim_state_dict=state["optimizer"])
        else:
            self.model.load_state_dict(state["model"])
            self.perturbation.load_state_dict(state["perturbation"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    @property
    def _trainables(self) -> nn.Module:
        """The model and the perturbation under one module, so every optimizer parameter has a name."""
        return nn.ModuleDict({"model": self.model, "perturbation": self.perturbation})

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Unperturbed logprobs [B, T] of the batch's loss tokens under the current weights (0 elsewhere), no
        grad; a collective with a sharded learner (every rank calls it, each with its own batch)."""
        return self._score(self.model, batch)


def _add_noise_probe(sums: _Sums, probe: dict[int, torch.Tensor], mb: torch.Tensor, logp: torch.Tensor,
                     behavior: torch.Tensor, mask: torch.Tensor) -> None:
    """Accumulate, for the micro-batch's rows that are in the probe, the log-ratios of the perturbed policy
    to the unperturbed one (the noise) and of the unperturbed policy to the rollout's mu (the mismatch).
    logp, behavior, mask: [b, T] of the micro-batch."""
    for i, row in enumerate(mb.tolist()):
        if row not in probe:
            continue
        m = mask[i]  # [T]
        clean = probe[row][: m.shape[0]].to(logp.device)  # [T]
        for name, log_r in (("noise", (logp[i] - clean) * m), ("mismatch", (clean - behavior[i]) * m)):
            log_r = log_r.clamp(-20, 20)  # [T]
            sums.add(f"{name}_tokens", m.sum())
            sums.add(f"{name}_k3", ((torch.exp(log_r) - 1 - log_r) * m).sum())
            sums.add(f"{name}_log_r", log_r.sum())
            sums.add(f"{name}_log_r_sq", (log_r**2).sum())
            sums.extend(f"{name}_seq_log_r", log_r.sum().reshape(1))


def _noise_probe_metrics(sums: _Sums) -> dict[str, float]:
    """noise/* (perturbed vs unperturbed policy) and mismatch/* (unperturbed policy vs mu) on the probe rows:
    kl_k3 (per token; the k3 estimate on the rollout's tokens), log_ratio_std (per token) and
    seq_log_ratio_std (of each sequence's summed log-ratio, what Seq-ALP's ratio sees)."""
    out: dict[str, float] = {}
    for name in ("noise", "mismatch"):
        n = sums.get(f"{name}_tokens")
        if n <= 0:
            continue
        mean = sums.get(f"{name}_log_r") / n
        out[f"{name}/kl_k3"] = sums.get(f"{name}_k3") / n
        out[f"{name}/log_ratio_std"] = math.sqrt(max(sums.get(f"{name}_log_r_sq") / n - mean**2, 0.0))
        seq = torch.cat(sums.values[f"{name}_seq_log_r"]).double()
        out[f"{name}/seq_log_ratio_std"] = float(seq.std()) if seq.numel() > 1 else 0.0
    return out
