"""Training-inference mismatch: the engine's logprobs of the tokens it sampled vs the trainer's recomputation.

    .venv-vllm/bin/python benchmarks/mismatch.py                  # vLLM (CPU build) at fp32 and bf16
    .venv/bin/python benchmarks/mismatch.py                       # no vllm: the HF backend as the proxy
    python benchmarks/mismatch.py --preset small --prompts 64 --max-new-tokens 64 --json out.json

For each engine precision setting the engine samples completions of the same prompts (same seeds) and
returns the logprob of every sampled token under the distribution it sampled from. The trainer then scores
the very same token ids in one teacher-forced forward pass of the Hugging Face model (what the learner
does: ``alp.logprobs.score``), in fp32 and in the engine's dtype (bf16 trainer vs bf16 engine:
same precision, different kernels). Per token, log_ratio = trainer - engine
(log pi_theta - log mu); the script prints its distribution (mean, std, quantiles q01..q99, max |.|),
the token-level ratio pi/mu at the quantiles, and tokens the trainer gives zero probability (outside its
top-k/top-p set: infinite ratio), which is the mismatch that ALP and the IS corrections deal with.

Engines: ``vllm`` (needs ``import vllm``; .venv-vllm from scripts/setup_vllm_cpu.sh) with dtype float32
and bfloat16; ``hf`` (the kit's HFBackend: KV-cached incremental decoding, fp32 and bf16), labelled as the
proxy it is when vLLM is not available. ``--engine auto`` picks vllm when it imports.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def make_prompts(tokenizer, n: int, seed: int) -> list[list[int]]:
    from agentrl.tiny import tool_demo_messages

    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        messages = tool_demo_messages(rng)[:2]  # system + user question
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        prompts.append(list(ids))
    return prompts


async def sample_all(backend, prompts, sampling) -> list[tuple[list[int], list[int], list[float]]]:
    outs = await asyncio.gather(*(backend.generate(p, sampling.with_(seed=1000 + i)) for i, p in enumerate(prompts)))
    return [(p, c.token_ids, c.logprobs) for p, cs in zip(prompts, outs, strict=True) for c in cs]


def trainer_logprobs(model, samples, *, temperature, top_p, top_k) -> list[list[float]]:
    """The trainer's logprob of every sampled token, one sequence at a time (alp.logprobs.score)."""
    from alp.batch import TrainBatch
    from alp.logprobs import score

    seqs = [prompt + ids for prompt, ids, _ in samples]
    batch = TrainBatch.from_lists(token_ids=seqs, loss_mask=[[0] * len(s) for s in seqs],
                                  behavior_logprobs=[[0.0] * len(s) for s in seqs], advantages=[0.0] * len(seqs),
                                  temperature=temperature, top_p=top_p, top_k=top_k)
    logp = score(model, batch, micro_batch_tokens=1)  # [B, T]
    return [logp[i, len(prompt) : len(seq)].tolist() for i, ((prompt, _, _), seq) in enumerate(zip(samples, seqs,
                                                                                                  strict=True))]


def summarise(samples, trainer) -> dict[str, float]:
    from alp.stats import quantiles

    diffs, outside = [], 0
    for (_, _, engine_lp), train_lp in zip(samples, trainer, strict=True):
        for e, t in zip(engine_lp, train_lp, strict=True):
            if math.isinf(t) or math.isinf(e):
                outside += 1
                continue
            diffs.append(t - e)
    x = torch.tensor(diffs, dtype=torch.float64)
    stats = {"tokens": len(diffs) + outside, "outside_support": outside,
             "mean": x.mean().item(), "std": x.std().item(), "max_abs": x.abs().max().item()}
    for q, v in zip(QUANTILES, quantiles(x, QUANTILES), strict=True):
        stats[f"q{round(q * 100):02d}"] = v
    stats["ratio_q01"], stats["ratio_q99"] = math.exp(stats["q01"]), math.exp(stats["q99"])
    return stats


def engines(kind: str, path: Path, seed: int, compile_: bool = False):
    """(label, dtype name, factory) for every precision setting of the chosen engine."""
    if kind == "vllm":
        from agentrl.inference.vllm import VLLMBackend

        def vllm_factory(dtype):
            return lambda: VLLMBackend(path, dtype=dtype, seed=seed, max_model_len=2048, enforce_eager=not compile_,
                                       engine_kwargs={"max_num_seqs": 64})

        return [("vllm", "float32", vllm_factory("float32")), ("vllm", "bfloat16", vllm_factory("bfloat16"))]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentrl.inference.hf import HFBackend

    def hf_factory(dtype):
        def make():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            return HFBackend(model, AutoTokenizer.from_pretrained(path), dtype=getattr(torch, dtype), seed=seed,
                             copy_model=False)
        return make

    return [("hf (proxy)", "float32", hf_factory("float32")), ("hf (proxy)", "bfloat16", hf_factory("bfloat16"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=["auto", "vllm", "hf"], default="auto")
    ap.add_argument("--preset", default="tiny", help="tiny model preset built by agentrl.tiny (no download)")
    ap.add_argument("--model", default=None, help="a checkpoint folder instead of a tiny preset")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true",
                    help="let vLLM torch.compile the model (default: enforce_eager, minutes faster to start on CPU)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentrl.inference.base import SamplingParams
    from agentrl.inference.vllm import vllm_available

    path = Path(args.model) if args.model else __import__("agentrl.tiny", fromlist=["build_tiny"]).build_tiny(
        args.preset, seed=args.seed)
    kind = args.engine
    ok, why = vllm_available()
    if kind == "auto":
        kind = "vllm" if ok else "hf"
        if not ok:
            print(f"# vllm not importable here; measuring the HF backend as a proxy. {why}")
    elif kind == "vllm" and not ok:
        sys.exit(f"--engine vllm: {why}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    trainer = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = make_prompts(tokenizer, args.prompts, args.seed)
    sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                              max_new_tokens=args.max_new_tokens, n=args.n)
    print(f"# model {path.name} ({sum(p.numel() for p in trainer.parameters()) / 1e6:.2f}M params), "
          f"{args.prompts} prompts x {args.n} samples, <= {args.max_new_tokens} new tokens, T={args.temperature} "
          f"top_p={args.top_p} top_k={args.top_k}; trainer: HF teacher-forced; log_ratio = trainer - engine")
    results = []
    trainers = {"float32": trainer}
    for label, dtype, factory in engines(kind, path, args.seed, args.compile):
        start = time.perf_counter()
        backend = factory()
        startup = time.perf_counter() - start
        t0 = time.perf_counter()
        samples = asyncio.run(sample_all(backend, prompts, sampling))
        sample_s = time.perf_counter() - t0
        backend.close()
        for trainer_dtype in dict.fromkeys(["float32", dtype]):  # fp32 trainer, and a trainer in the engine's dtype
            scorer = trainers.setdefault(trainer_dtype, copy.deepcopy(trainer).to(getattr(torch, trainer_dtype)))
            train = trainer_logprobs(scorer, samples, temperature=args.temperature, top_p=args.top_p,
                                     top_k=args.top_k)
            stats = summarise(samples, train)
            stats.update(engine=label, dtype=dtype, trainer=trainer_dtype, startup_s=round(startup, 1),
                         tokens_per_s=round(sum(len(s[1]) for s in samples) / sample_s, 1))
            results.append(stats)
            print(json.dumps(stats), flush=True)
    cols = ["engine", "dtype", "trainer", "tokens", "mean", "std", "q01", "q05", "q50", "q95", "q99", "max_abs", "outside_support"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        cells = [f"{r[c]:.2e}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
