"""Training under torchrun (2 CPU processes, gloo) with rollouts on every rank and an FSDP2 learner: whole groups
per rank, the same batch as one process, sharded checkpoints, and a resume equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agentrl.rollout.trajectory import read_jsonl

ARGS = ["run.tasks_per_step=4", "rollout.n_samples=2", "rollout.max_turns=2", "rollout.max_new_tokens=16",
        "rollout.max_context_tokens=256", "sft.steps=0", "eval.tasks=0", "run.progress=false",
        "run.log_trajectories=8", "rollout.mask_void_turns=false", "learner.strategy=fsdp2",
        "learner.entropy_coef=0.5", "learner.lr=1e-2", "learner.sigma_init=0.03", "learner.noise_scale=relative"]


def torchrun(out, sandbox_url, *extra, resume=None):
    from tools.embedded import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "agentrl.train"]
    cmd += ["--resume", str(resume), *extra] if resume else [f"run.output_dir={out}", f"sandbox.url={sandbox_url}",
                                                             *ARGS, *extra]
    subprocess.run(cmd, check=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_rollouts_on_every_rank_and_a_sharded_resume_equal_to_a_straight_run(tmp_path, sandbox_url):
    from safetensors.torch import load_file

    straight, split = tmp_path / "straight", tmp_path / "split"
    torchrun(straight, sandbox_url, "run.steps=4", "run.save_every=2")
    torchrun(split, sandbox_url, "run.steps=2", "run.save_every=2")
    run_dir = split / "tiny-arithmetic"
    assert (run_dir / "checkpoints/step_000001/learner").is_dir()  # torch.distributed.checkpoint shards
    torchrun(None, sandbox_url, "run.steps=4", resume=run_dir)

    rows = _metrics(straight / "tiny-arithmetic")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for r in rows:  # the two ranks' rollouts add up to one process's batch: 4 tasks x 2 samples
        assert r["rollout/episodes"] == 8
    for t in read_jsonl(straight / "tiny-arithmetic/trajectories/step_000000.jsonl"):
        assert t.group_id % 2 == 0  # rank 0 logs its own whole groups: every other task (rank 1 has the rest)
    for a, b in zip(rows, _metrics(run_dir), strict=True):
        for key in ("rollout/reward_mean", "rollout/sampled_tokens", "loss/total", "sigma/mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)
    wa = load_file(straight / "tiny-arithmetic/final/model.safetensors")
    wb = load_file(run_dir / "final/model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    from agentrl.tiny import build_tiny

    start = load_file(build_tiny("tiny") / "model.safetensors")
    assert max((wa[k] - start[k]).abs().max().item() for k in start) > 1e-3  # it trained: the equality is not vacuous


def test_task_share_is_disjoint_and_covers_the_step():
    from agentrl.ranks import task_share

    seeds = list(range(100, 110))
    shares = [task_share(seeds, r, 3) for r in range(3)]
    assert sorted(s for share in shares for s in share) == seeds
    assert all(not set(a) & set(b) for i, a in enumerate(shares) for b in shares[i + 1:])


def test_fsdp2_without_torchrun_runs_as_a_group_of_one(tmp_path, sandbox_url):
    # A single process (one GPU with CPU offload, say) gets an in-process group for FSDP2's device mesh instead of
    # failing on torchrun's missing RANK; the group is left at the end.
    import torch.distributed as dist

    from agentrl.train import main

    assert main([f"run.output_dir={tmp_path}", f"sandbox.url={sandbox_url}", *ARGS, "run.steps=1"]) == 0
    row = _metrics(tmp_path / "tiny-arithmetic")[0]
    assert row["rollout/episodes"] == 8 and "loss/total" in row
    assert not dist.is_initialized()
