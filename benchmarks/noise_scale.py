"""What ALP's noise does at the default scale, per sigma (prints numbers; not a test).

    python benchmarks/noise_scale.py [key=value ...]    # overrides as for python -m agentrl.train

Starts from the default recipe's post-SFT weights (the study's warm-up cache: built once, then reused), rolls
out one step's batch (run.tasks_per_step x rollout.n_samples episodes) with the real env and sandbox, and runs
one zero-learning-rate update of the ``alp`` preset on it per sigma, so nothing but the noise changes. For each
sigma it prints what the noise itself does (noise/*: perturbed vs unperturbed policy on the probe sequences)
beside the rollout/trainer mismatch (mismatch/*: unperturbed policy vs the rollout's logprobs mu) and the
spread of the ratio the loss sees. This is how the tiny recipe's sigma was chosen (docs/alp.md).
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentrl.config import load_config  # noqa: E402
from agentrl.inference.hf import HFBackend  # noqa: E402
from agentrl.rollout import RolloutManager, to_train_batch  # noqa: E402
from agentrl.runtime import load_model, make_env_factory, sandbox_for  # noqa: E402
from agentrl.study.warmup import ensure_warmup  # noqa: E402
from alp import Learner, get_preset  # noqa: E402

SIGMAS = {"absolute": [1e-6, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "relative": [1e-3, 1e-2, 3e-2]}


async def one_batch(config, start: Path):
    model, tokenizer = load_model(str(start))
    backend = HFBackend(model, tokenizer, seed=config.run.seed)
    env = make_env_factory(config.env.id, config.env.kwargs)
    try:
        batch = await RolloutManager(backend, tokenizer, env, config.rollout).run(
            list(range(config.run.tasks_per_step)))
    finally:
        await backend.aclose()
    return model, batch


def main(argv: list[str]) -> None:
    config = load_config(None, ["run.progress=false", *argv])
    print(f"# load average at start {os.getloadavg()}; {os.cpu_count()} CPUs", flush=True)
    with sandbox_for(config.sandbox.url, token=config.sandbox.token):
        start = ensure_warmup(config)
        model, rollout = asyncio.run(one_batch(config, start))
    batch = to_train_batch(rollout.trajectories)
    assert batch is not None, "every episode was excluded"
    print(f"# start {start}; {len(batch)} sequences, training reward {rollout.metrics['rollout/reward_mean']:.3f}")
    print("| noise scale | sigma | noise KL (k3) | noise log-ratio std, token | sequence | mismatch KL (k3) | "
          "mismatch log-ratio std, token | sequence | ratio q01 | ratio q99 | clipped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scale, sigmas in SIGMAS.items():
        for sigma in sigmas:
            learner = Learner(copy.deepcopy(model), get_preset(
                "alp", lr=0.0, sigma_lr=0.0, sigma_init=sigma, noise_scale=scale, noise_probe_seqs=len(batch)))
            m = learner.update(batch)
            print(f"| {scale} | {sigma:.0e} | {m['noise/kl_k3']:.2e} | {m['noise/log_ratio_std']:.2e} | "
                  f"{m['noise/seq_log_ratio_std']:.2e} | {m['mismatch/kl_k3']:.2e} | {m['mismatch/log_ratio_std']:.2e} | "
                  f"{m['mismatch/seq_log_ratio_std']:.2e} | {m['ratio/q01']:.3f} | {m['ratio/q99']:.3f} | "
                  f"{m['clip/frac']:.3f} |", flush=True)
    print(f"# load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
