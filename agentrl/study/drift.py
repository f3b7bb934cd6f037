"""The mismatch lab: replay a run's saved trajectories through the trainer on CPU and split the drift by cause.

    python -m agentrl.study drift runs/tiny-arithmetic                   # a python -m agentrl.train run
    python -m agentrl.study drift STUDY_DIR/runs/stale4+bf16/alp@rel0.01/seed0

Each logged trajectory carries its token ids, the behaviour logprob mu of every sampled token (from the
engine, under the distribution it sampled from) and the version of the weights that sampled it. The run's
config gives the sampling settings (temperature, top_p, top_k). The lab loads the weight versions the run
kept and recomputes log pi for the same tokens, then reports the per-token log-ratio log pi - log mu by
cause, with its tails (p99 of |log r|, max, the share of tokens whose ratio leaves [0.9, 1.1]):

| cause        | comparison                                                                                |
|--------------|-------------------------------------------------------------------------------------------|
| engine       | trainer (fp32, batched, chunked logprobs) with the sampler's own weights vs mu: kernels,   |
|              | precision and anything injected into the engine, with no staleness                        |
| staleness    | trainer with weights g versions newer than the sampler's vs mu, for every gap g available |
| truncation   | trainer scoring without the run's top-k/top-p renormalisation vs with it                   |
| batch, chunk | one sequence at a time with the plain log-softmax vs the learner's padded micro-batch and  |
|              | chunked logprob path                                                                      |
| dtype        | a bf16 trainer vs the fp32 trainer (and the bf16 trainer vs mu)                            |
| turns, tools | the engine (or smallest-gap) log-ratio split by assistant turn, by position after a turn  |
|              | boundary (the first tokens after a tool output) and by the engine's probability mu(y)      |

Weight versions: ``weights.json`` (study runs: version -> folder or .safetensors file), else the run's
``checkpoints/step_N/model`` (version N + 1) and ``final/`` (version = run.steps), plus model.path as
version 0 when the run had no SFT warm-up. The per-layer sigma the run learned is printed beside the drift.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agentrl.run_dir import checkpoint_step, list_checkpoints

BAND = (0.9, 1.1)
_STEP = re.compile(r"step_(\d+)\.jsonl$")


@dataclass
class Replay:
    """The sampled tokens of a set of trajectories, flattened: one entry per loss token."""

    seqs: list[list[int]]
    masks: list[list[int]]
    mu: torch.Tensor  # [N] behaviour logprobs of the loss tokens
    version: torch.Tensor  # [N] the version that sampled each loss token
    turn: torch.Tensor  # [N] assistant turn index (1 = first)
    pos_in_turn: torch.Tensor  # [N] 0 = first sampled token of its turn
    step: torch.Tensor  # [N] the training step the trajectory was logged at


# ---------------------------------------------------------------------------------------------------
# Reading a run
# ---------------------------------------------------------------------------------------------------
def read_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        if (run_dir / "study.json").is_file():
            raise FileNotFoundError(f"{run_dir} is a study folder: pass one of its runs, "
                                    f"{run_dir}/runs/<cell>/<method>/seed<k>")
        raise FileNotFoundError(f"{run_dir} has no config.yaml: pass a run directory (python -m agentrl.train or a "
                                "study run folder)")
    return yaml.safe_load(path.read_text()) or {}


def trajectory_files(run_dir: Path, steps: list[int] | None = None) -> dict[int, Path]:
    folder = run_dir / "trajectories"
    found = {int(m.group(1)): p for p in sorted(folder.glob("step_*.jsonl")) if (m := _STEP.search(p.name))}
    if not found:
        raise FileNotFoundError(f"{folder} holds no step_*.jsonl: the run logged no trajectories "
                                "(python -m agentrl.train writes them with run.log_trajectories > 0)")
    if steps is not None:
        missing = [s for s in steps if s not in found]
        if missing:
            raise ValueError(f"steps {missing} have no trajectories in {folder}; logged steps: {sorted(found)}")
        found = {s: found[s] for s in steps}
    return found


def weight_versions(run_dir: Path, config: dict[str, Any]) -> dict[int, Path]:
    """Version -> weights (an HF folder or a .safetensors file) the run kept."""
    out: dict[int, Path] = {}
    index = run_dir / "weights.json"
    if index.is_file():
        for v, p in json.loads(index.read_text()).items():
            path = Path(p) if Path(p).is_absolute() else run_dir / p
            if path.exists():
                out[int(v)] = path
        return out
    for ckpt in list_checkpoints(run_dir):
        if (ckpt / "model").is_dir():
            out[checkpoint_step(ckpt) + 1] = ckpt / "model"
    steps = (config.get("run") or {}).get("steps")
    if (run_dir / "final").is_dir() and steps is not None:
        out.setdefault(int(steps), run_dir / "final")
    sft_steps = (config.get("sft") or {}).get("steps", 0)
    path = (config.get("model") or {}).get("path")
    if not sft_steps and path and Path(path).is_dir():
        out.setdefault(0, Path(path))
    return out


def load_trajectories(files: dict[int, Path], limit: int) -> tuple[list[Any], list[int]]:
    from agentrl.rollout.trajectory import Trajectory

    trajs, steps = [], []
    for step, path in sorted(files.items()):
        n = 0
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            t = Trajectory.from_dict(json.loads(line))
            if not t.trainable:
                continue
            trajs.append(t)
            steps.append(step)
            n += 1
            if n >= limit:
                break
    return trajs, steps


def flatten(trajs: list[Any], steps: list[int]) -> Replay:
    mu, version, turn, pos, step = [], [], [], [], []
    for t, s in zip(trajs, steps, strict=True):
        prev_turn, k = None, 0
        for m, lp, v, tid in zip(t.loss_mask, t.behavior_logprobs, t.policy_version, t.turn_ids, strict=True):
            if not m:
                continue
            k = k + 1 if tid == prev_turn else 0
            prev_turn = tid
            mu.append(lp)
            version.append(v)
            turn.append(tid)
            pos.append(k)
            step.append(s)
    return Replay(seqs=[list(t.token_ids) for t in trajs], masks=[list(t.loss_mask) for t in trajs],
                  mu=torch.tensor(mu, dtype=torch.float64), version=torch.tensor(version),
                  turn=torch.tensor(turn), pos_in_turn=torch.tensor(pos), step=torch.tensor(step))


# ---------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------
def load_weights(ref: Path, base: Path | None) -> torch.nn.Module:
    """An fp32 model from an HF folder, or ``base``'s architecture with a .safetensors state dict."""
    from transformers import AutoModelForCausalLM

    if ref.is_dir():
        return AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32).eval()
    if base is None:
        raise ValueError(f"{ref} is a bare state dict; the run's config must name model.path for its architecture")
    from safetensors.torch import load_file

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    missing, unexpected = model.load_state_dict(load_file(str(ref)), strict=False)
    if [k for k in missing if not k.endswith("lm_head.weight")] or unexpected:
        raise ValueError(f"{ref} does not fit {base}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def score(model: torch.nn.Module, rep: Replay, *, temperature: float, top_p: float, top_k: int,
          mode: str = "learner", chunk_tokens: int = 512, token_budget: int = 8192) -> torch.Tensor:
    """log pi [N] of the replay's loss tokens (alp.logprobs.score).

    mode ``learner``: right-padded micro-batches (the learner's packing) and the chunked logprob path;
    ``single``: one sequence at a time and the plain log-softmax path.
    """
    from alp.batch import TrainBatch
    from alp.logprobs import score as score_batch

    if mode not in ("learner", "single"):
        raise ValueError(f"mode={mode!r}: learner or single")
    batch = TrainBatch.from_lists(token_ids=rep.seqs, loss_mask=rep.masks,
                                  behavior_logprobs=[[0.0] * len(s) for s in rep.seqs],
                                  advantages=[0.0] * len(rep.seqs), temperature=temperature, top_p=top_p, top_k=top_k)
    single = mode == "single"
    logp = score_batch(model, batch, micro_batch_tokens=1 if single else token_budget,
                       chunk_tokens=0 if single else chunk_tokens)  # [B, T]
    return logp[batch.loss_mask > 0].double()


def tail_stats(log_r: torch.Tensor) -> dict[str, float]:
    """Tails of a per-token log-ratio [N]; tokens outside the trainer's support (-inf) are counted apart."""
    finite = torch.isfinite(log_r)
    x = log_r[finite]
    out = {"tokens": float(log_r.numel()), "outside_support": float((~finite).sum())}
    if not x.numel():
        return out
    from alp.stats import quantiles

    a = x.abs()
    r = x.exp()
    lo, hi = BAND
    out.update({
        "mean": float(x.mean()),
        "std": float(x.std()) if x.numel() > 1 else 0.0,
        "abs_p99": quantiles(a, [0.99])[0],
        "abs_max": float(a.max()),
        "ratio_max": float(r.max()),
        "ratio_min": float(r.min()),
        "outside_band": float(((r < lo) | (r > hi)).double().mean()),
        "kl_k3": float((r - 1 - x).mean()),
    })
    return out


# ---------------------------------------------------------------------------------------------------
# The lab
# ---------------------------------------------------------------------------------------------------
def analyse(run_dir: Path, *, steps: list[int] | None = None, max_trajectories: int = 64,
            max_gap: int = 8) -> dict[str, Any]:
    """Replay the run's trajectories and return every table of the report as data."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    ro = config.get("rollout") or {}
    temperature, top_p, top_k = float(ro.get("temperature", 1.0)), float(ro.get("top_p", 1.0)), int(ro.get("top_k", 0))
    files = trajectory_files(run_dir, steps)
    versions = weight_versions(run_dir, config)
    if not versions:
        raise FileNotFoundError(
            f"{run_dir} kept no model weights to replay with (no weights.json, checkpoints/ or final/); "
            "train with run.save_every > 0, or let the study keep its logged steps' weights")
    trajs, traj_steps = load_trajectories(files, max_trajectories)
    if not trajs:
        raise ValueError(f"no trainable trajectory in {sorted(files.values())}")
    rep = flatten(trajs, traj_steps)
    base = Path(config["model"]["path"]) if (config.get("model") or {}).get("path") else None
    settings = {"temperature": temperature, "top_p": top_p, "top_k": top_k}

    sampled = sorted(set(rep.version.tolist()))
    usable = {w: p for w, p in versions.items() if any(0 <= w - v <= max_gap for v in sampled)}
    by_gap: dict[int, list[torch.Tensor]] = defaultdict(list)
    models: dict[int, torch.nn.Module] = {}
    for w, path in sorted(usable.items()):
        model = models[w] = load_weights(path, base)
        log_r = score(model, rep, **settings) - rep.mu
        for v in sampled:
            sel = rep.version == v
            if 0 <= w - v <= max_gap and bool(sel.any()):
                by_gap[w - v].append(log_r[sel])
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "settings": settings, "steps": sorted(files), "trajectories": len(trajs),
        "loss_tokens": int(rep.mu.numel()), "sampled_versions": sampled, "weight_versions": sorted(versions),
        "mismatch": (config.get("study_run") or {}).get("mismatch")
        or f"backend {(config.get('backend') or {}).get('kind', 'hf')} (dtype {(config.get('backend') or {}).get('dtype', 'auto')}), "
           f"max_staleness {ro.get('max_staleness', 0)}",
        "by_gap": {g: tail_stats(torch.cat(v)) for g, v in sorted(by_gap.items())},
        "sigma": learned_sigma(run_dir),
    }
    if not by_gap:
        result["note"] = (f"no kept weight version is 0..{max_gap} versions newer than the sampled versions "
                          f"{sampled} (kept: {sorted(versions)}); only sigma is reported")
        return result
    # Causes at the smallest gap (0 when the sampler's own weights were kept): every (weights, sampler) pair
    # with that gap contributes its tokens.
    gap = min(by_gap)
    pairs = [(v + gap, v) for v in sampled if v + gap in models and bool((rep.version == v).any())]
    parts: dict[str, list[torch.Tensor]] = defaultdict(list)
    for w, v in pairs:
        model, sub = models[w], _subset(rep, rep.version == v)
        ref = score(model, sub, **settings)
        parts["engine"].append(ref - sub.mu)
        parts["turn"].append(sub.turn)
        parts["pos"].append(sub.pos_in_turn)
        parts["mu"].append(sub.mu)
        if top_p < 1.0 or top_k > 0:
            parts["truncation"].append(score(model, sub, temperature=temperature, top_p=1.0, top_k=0) - ref)
        parts["batch"].append(score(model, sub, mode="single", **settings) - ref)
        parts["chunk"].append(score(model, sub, chunk_tokens=64, **settings) - ref)
        bf16 = score(model.to(torch.bfloat16), sub, **settings)
        model.to(torch.float32)
        parts["bf16_fp32"].append(bf16 - ref)
        parts["bf16_mu"].append(bf16 - sub.mu)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    lr = cat["engine"]
    result["reference"] = {"gap": gap, "pairs": [{"weights": w, "sampler": v} for w, v in pairs]}
    causes: dict[str, dict[str, float]] = {f"engine (gap {gap}) vs mu": tail_stats(lr)}
    if "truncation" in cat:
        causes["truncation: trainer without top-p/top-k vs with"] = tail_stats(cat["truncation"])
    else:
        causes["truncation: none in this run (top_p=1, top_k=0)"] = tail_stats(torch.zeros_like(lr))
    causes["batch+chunk: one sequence, plain path vs learner micro-batch, chunked"] = tail_stats(cat["batch"])
    causes["chunk: 64-token chunks vs 512"] = tail_stats(cat["chunk"])
    causes["dtype: bf16 trainer vs fp32 trainer"] = tail_stats(cat["bf16_fp32"])
    causes["dtype: bf16 trainer vs mu"] = tail_stats(cat["bf16_mu"])
    result["causes"] = causes
    turn, pos, p_mu = cat["turn"], cat["pos"], cat["mu"].exp()
    result["by_turn"] = {int(t): tail_stats(lr[turn == t]) for t in sorted(set(turn.tolist()))}
    boundary = {
        "first token of turn 1": (turn == 1) & (pos == 0),
        "first token after a tool output (turn >= 2)": (turn >= 2) & (pos == 0),
        "tokens 2-4 after a tool output": (turn >= 2) & (pos >= 1) & (pos <= 3),
        "rest of turns >= 2": (turn >= 2) & (pos > 3),
        "rest of turn 1": (turn == 1) & (pos > 0),
    }
    result["by_boundary"] = {k: tail_stats(lr[m]) for k, m in boundary.items() if bool(m.any())}
    certainty = {"mu(y) >= 0.9": p_mu >= 0.9, "0.5 <= mu(y) < 0.9": (p_mu >= 0.5) & (p_mu < 0.9),
                 "mu(y) < 0.5": p_mu < 0.5}
    result["by_certainty"] = {k: tail_stats(lr[m]) for k, m in certainty.items() if bool(m.any())}
    return result


def _subset(rep: Replay, sel: torch.Tensor) -> Replay:
    """The replay restricted to the loss tokens in ``sel`` (sequences keep their tokens; masks shrink)."""
    masks, k = [], 0
    for m in rep.masks:
        new = []
        for x in m:
            if x:
                new.append(1 if bool(sel[k]) else 0)
                k += 1
            else:
                new.append(0)
        masks.append(new)
    keep = [i for i, m in enumerate(masks) if any(m)]
    return Replay(seqs=[rep.seqs[i] for i in keep], masks=[masks[i] for i in keep], mu=rep.mu[sel],
                  version=rep.version[sel], turn=rep.turn[sel], pos_in_turn=rep.pos_in_turn[sel],
                  step=rep.step[sel])


def learned_sigma(run_dir: Path) -> dict[str, Any]:
    """Per-layer sigma from the run's last metrics row (and its first, to show the drift of sigma)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    keys = [k for r in rows[:1] for k in r if k.startswith("sigma/") and k not in ("sigma/mean", "sigma/min", "sigma/max")]
    if not rows or not keys:
        return {}
    return {"first_step": rows[0]["step"], "last_step": rows[-1]["step"],
            "layers": {k.removeprefix("sigma/"): (rows[0].get(k), rows[-1].get(k)) for k in keys}}


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------
_COLS = [("tokens", "tokens", "{:.0f}"), ("mean", "mean log r", "{:+.2e}"), ("abs_p99", "p99 abs log r", "{:.2e}"),
         ("abs_max", "max abs log r", "{:.2e}"), ("outside_band", "share outside [0.9, 1.1]", "{:.4f}"),
         ("kl_k3", "KL(mu||pi)", "{:.2e}"), ("outside_support", "outside support", "{:.0f}")]


def _rows(title: str, table: dict[Any, dict[str, float]]) -> list[str]:
    lines = [f"| {title} | " + " | ".join(c[1] for c in _COLS) + " |", "|---" * (len(_COLS) + 1) + "|"]
    for key, stats in table.items():
        cells = [c[2].format(stats[c[0]]) if c[0] in stats else "n/a" for c in _COLS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(res: dict[str, Any]) -> str:
    s = res["settings"]
    out = [f"# Drift lab: {res['run_dir']}", "",
           f"Mismatch: {res['mismatch']}. Sampling: temperature {s['temperature']}, top_p {s['top_p']}, "
           f"top_k {s['top_k']}. Replayed {res['trajectories']} trajectories ({res['loss_tokens']} loss tokens) "
           f"of steps {res['steps']}; sampled by weight versions {res['sampled_versions']}; kept weight versions "
           f"{res['weight_versions']}. log r = log pi_trainer - log mu per sampled token.", ""]
    if res["by_gap"]:
        out += ["## Staleness: by the gap between the trainer's and the sampler's weight versions", ""]
        out += _rows("gap (versions)", res["by_gap"]) + [""]
    if "note" in res:
        out += [f"Note: {res['note']}", ""]
    if "causes" in res:
        ref = res["reference"]
        pairs = ", ".join(f"{p['weights']} on {p['sampler']}" for p in ref["pairs"])
        out += [f"## By cause (gap {ref['gap']}: trainer weights on the sampler's tokens, version pairs {pairs})", ""]
        out += _rows("comparison", res["causes"]) + [""]
        out += ["## By turn (engine log-ratio at that gap)", ""] + _rows("turn", res["by_turn"]) + [""]
        out += ["## At turn and tool boundaries", ""] + _rows("position", res["by_boundary"]) + [""]
        out += ["## By how sure the engine was of the sampled token", ""]
        out += _rows("behaviour probability", res["by_certainty"]) + [""]
    sig = res.get("sigma") or {}
    if sig.get("layers"):
        out += [f"## Learned per-layer sigma (step {sig['first_step']} -> step {sig['last_step']})", "",
                "| layer | sigma first | sigma last |", "|---|---|---|"]
        out += [f"| {k} | {a:.4g} | {b:.4g} |" for k, (a, b) in sig["layers"].items()
                if a is not None and b is not None]
    else:
        out += ["Learned sigma: none (the run's learner adds no noise)."]
    return "\n".join(out) + "\n"
