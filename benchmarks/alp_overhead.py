"""ALP overhead: update-step time and memory with the perturbation vs the same update without it.

    .venv/bin/python benchmarks/alp_overhead.py                 # tiny and small presets
    .venv/bin/python benchmarks/alp_overhead.py --presets small --repeats 5

Variants, same run, same model weights, same batch, same config except the perturbation:
    none   perturb_layers='none' (the unperturbed update: Seq-Bypass)
    alp    the ALP preset: noise on the input of every decoder layer (keyed generators, fused add,
           eps regenerated in backward: nothing [B, T, H] saved)
    naive  the same noise through a plain autograd `h + sigma * eps` (eps stored for backward), for scale

Time: `repeats` update() calls per variant, the variants interleaved (none, alp, naive, none, ...) so
load on a shared machine hits all alike; with one torch thread (default) the calling thread's CPU time
is the work done, robust to other processes; the overhead column compares minima. The share of the
perturbation itself is also measured directly: CPU time inside its forward and backward per update. Memory: each variant runs in a fresh subprocess and
reports (a) bytes saved for backward in one update, counted exactly with saved_tensors_hooks, and (b) the
peak RSS growth during one update after a warm-up update (glibc mmap threshold fixed at 128 KiB so
freed buffers leave RSS, heap trimmed, VmHWM reset through /proc/self/clear_refs): activations, logits,
gradients and transients, not torch or the weights.

Model presets are defined here (agentrl owns the canonical ones): tiny ~1.5M params, small ~10M params,
Qwen2-style configs built with AutoModelForCausalLM.from_config (nothing downloaded).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alp.perturb as perturb  # noqa: E402
from alp import Learner, TrainBatch, get_preset  # noqa: E402

MODEL_PRESETS = {
    # name: (hidden, layers, heads, kv heads, intermediate, vocab, sequences, tokens per sequence)
    "tiny": (128, 4, 4, 2, 512, 2048, 16, 256),
    "small": (256, 8, 8, 4, 768, 8192, 8, 256),
}
VARIANTS = ("none", "alp", "naive")


def build(preset: str, seed: int = 0):
    hidden, layers, heads, kv, inter, vocab, n_seq, seq_len = MODEL_PRESETS[preset]
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=seq_len,
    )
    model = AutoModelForCausalLM.from_config(cfg)
    g = torch.Generator().manual_seed(seed)
    prompt = 32
    tokens = torch.randint(0, vocab, (n_seq, seq_len), generator=g)
    mask = torch.zeros(n_seq, seq_len)
    mask[:, prompt:] = 1
    behavior = (-torch.rand(n_seq, seq_len, generator=g) * 8 - 1) * mask
    batch = TrainBatch(
        token_ids=tokens,
        loss_mask=mask,
        behavior_logprobs=behavior,
        rewards=torch.randint(0, 2, (n_seq,), generator=g).float(),
        group_ids=torch.arange(n_seq) // 4,
    )
    return model, batch


def _naive_apply(h, sigma, keys, lengths, relative):
    """Plain autograd add: eps is stored by the multiplication for backward."""
    eps = perturb._draw(h, keys, lengths)  # [b, T, H]
    return h + sigma.to(h.dtype) * eps


class _TimedAddNoise(perturb._AddNoise):
    """The real fused function, with its forward and backward CPU time accumulated (for the op share)."""

    cpu = 0.0

    @staticmethod
    def forward(ctx, *args):
        t = time.thread_time()
        out = perturb._AddNoise.forward(ctx, *args)
        _TimedAddNoise.cpu += time.thread_time() - t
        return out

    @staticmethod
    def backward(ctx, g):
        t = time.thread_time()
        out = perturb._AddNoise.backward(ctx, g)
        _TimedAddNoise.cpu += time.thread_time() - t
        return out


_TIMED_APPLY = _TimedAddNoise.apply  # bound now, before any variant patches _AddNoise.apply


def make_learner(model, variant: str) -> Learner:
    layers = "none" if variant == "none" else "all"
    cfg = get_preset("alp", perturb_layers=layers, lr=1e-5, sigma_init=1e-3, micro_batch_tokens=4096)
    return Learner(model, cfg)


def _set_variant(variant: str, original) -> None:
    perturb._AddNoise.apply = {"naive": _naive_apply, "timed": _TIMED_APPLY}.get(variant, original)


def worker(preset: str, variant: str) -> dict:
    """One update in this process: saved-for-backward bytes and peak RSS."""
    original = perturb._AddNoise.apply
    _set_variant(variant, original)
    model, batch = build(preset)
    learner = make_learner(model, variant)
    learner.update(batch)  # warm-up: optimizer states exist, allocator warmed
    saved = {"bytes": 0, "peak": 0, "live": 0}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        if key not in seen:  # count each storage once (views share it)
            seen[key] = t.untyped_storage().nbytes()
            saved["bytes"] += seen[key]
        return t

    # Peak RSS of the update itself: return freed heap to the OS, reset the high-water mark (Linux
    # /proc/self/clear_refs "5"), run the update, read VmHWM back.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    rss0 = _proc_status_bytes("VmRSS")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        learner.update(batch)
    peak = _proc_status_bytes("VmHWM") - rss0
    return {"saved_bytes": saved["bytes"], "peak_rss_bytes": peak}


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def time_variants(preset: str, repeats: int):
    """Interleaved update() timings per variant: wall seconds, this thread's CPU seconds, and the CPU
    seconds spent inside the perturbation function (forward + backward) per ALP update."""
    original = perturb._AddNoise.apply
    model, batch = build(preset)
    learners = {v: make_learner(copy.deepcopy(model), v) for v in VARIANTS}
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for v in VARIANTS:  # warm-up
        _set_variant(v, original)
        learners[v].update(batch)
    ops: list[float] = []
    for _ in range(repeats):
        _set_variant("timed", original)
        _TimedAddNoise.cpu = 0.0
        learners["alp"].update(batch)
        ops.append(_TimedAddNoise.cpu)
        for v in VARIANTS:
            _set_variant(v, original)
            t0, c0 = time.perf_counter(), time.thread_time()
            learners[v].update(batch)
            wall[v].append(time.perf_counter() - t0)
            cpu[v].append(time.thread_time() - c0)
    _set_variant("alp", original)
    return wall, cpu, ops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=list(MODEL_PRESETS), choices=list(MODEL_PRESETS))
    ap.add_argument("--repeats", type=int, default=7, help="timed update() calls per variant")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is robust to load)")
    ap.add_argument("--worker", nargs=2, metavar=("PRESET", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu, fp32, {args.repeats} repeats"
    )
    for preset in args.presets:
        model, batch = build(preset)
        n_params = sum(p.numel() for p in model.parameters())
        hidden, layers, *_, n_seq, seq_len = MODEL_PRESETS[preset]
        print(
            f"\n[{preset}] {n_params / 1e6:.2f}M params, hidden {hidden}, {layers} layers, "
            f"batch {n_seq} x {seq_len} tokens, one optimizer step per update"
        )
        wall, cpu, ops = time_variants(preset, args.repeats)
        mem = {}
        for v in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", preset, v, "--threads", str(args.threads)],
                capture_output=True,
                text=True,
                check=True,
                # a fixed mmap threshold: every tensor buffer over 128 KiB is mapped on allocation and
                # unmapped on free, so RSS follows live memory and VmHWM is the update's real peak
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
            )
            mem[v] = json.loads(out.stdout.strip().splitlines()[-1])
        base_c = min(cpu["none"])
        base_s, base_r = mem["none"]["saved_bytes"], mem["none"]["peak_rss_bytes"]
        print(
            f"{'variant':8s} {'cpu min s':>9s} {'cpu med s':>9s} {'time':>7s} {'wall med s':>10s} "
            f"{'saved MiB':>9s} {'saved':>7s} {'peak MiB':>8s} {'peak':>7s}"
        )
        for v in VARIANTS:
            c = min(cpu[v])
            s, r = mem[v]["saved_bytes"], mem[v]["peak_rss_bytes"]
            print(
                f"{v:8s} {c:9.3f} {statistics.median(cpu[v]):9.3f} {100 * (c / base_c - 1):+6.1f}% "
                f"{statistics.median(wall[v]):10.3f} {s / 2**20:9.1f} {100 * (s / base_s - 1):+6.1f}% "
                f"{r / 2**20:8.1f} {100 * (r / base_r - 1):+6.1f}%"
            )
        op = statistics.median(ops)
        print(
            f"perturbation ops (draw + fused add + backward regenerate/dot), measured inside the ALP update: "
            f"{1000 * op:.1f} ms = {100 * op / base_c:.1f}% of the unperturbed update's CPU time"
        )
        print(
            "cpu s per update: "
            + "; ".join(f"{v}: " + " ".join(f"{x:.3f}" for x in cpu[v]) for v in VARIANTS)
        )


if __name__ == "__main__":
    main()
