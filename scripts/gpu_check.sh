#!/usr/bin/env bash
# One short check of the GPU paths on a CUDA machine with vLLM installed; no downloads (the tiny and small
# presets are built locally). Prints a summary at the end; every step has its own time limit, and a failed
# step is reported, not fatal. Nothing in the kit depends on this script.
#
#   scripts/gpu_check.sh                 # PYTHON=python3 OUT=<folder for logs, default ./gpu-check>
#
# Steps:
#   1. the machine: nvidia-smi, torch + CUDA, vLLM import
#   2. vLLM-colocated training, 4 steps on the small preset, fp32 engine + fp32 learner on the GPU: the learner's
#      ratio on every logged trajectory must be 1 within 1e-4 (weights reach the engine exactly, every step)
#   3. the same with a bf16 engine + bf16 learner: the rollout/trainer mismatch a real run sees
#   4. vLLM sampling speed and bf16-vs-fp32 mismatch (benchmarks/mismatch.py: tokens/s, log-ratio quantiles)
#   5. the vllm-marked tests (tests/vllm), engine on the GPU
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-check}
mkdir -p "$OUT"
declare -a SUMMARY=()

step() {  # step NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "==> $name (limit ${limit}s)"
    local t0=$SECONDS
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        SUMMARY+=("ok    $name ($((SECONDS - t0)) s)")
    else
        SUMMARY+=("FAIL  $name (exit $?, $((SECONDS - t0)) s; see $OUT/$name.log)")
        tail -n 20 "$OUT/$name.log"
    fi
}

step machine 120 bash -c "nvidia-smi; $PY -c 'import torch, vllm; print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available(), torch.cuda.get_device_name(0)); print(\"vllm\", vllm.__version__)'"

RATIO_CHECK='
import json, sys, pathlib
from agentrl.rollout.trajectory import read_jsonl
run = pathlib.Path(sys.argv[1]); tol = float(sys.argv[2]); worst = 0.0
for f in sorted((run / "trajectories").glob("step_*.jsonl")):
    for t in read_jsonl(f):
        if t.num_sampled:
            worst = max(worst, max(abs(r - 1) for r in t.info["learner_ratio"]))
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
print(f"steps {len(rows)} | worst |ratio - 1| {worst:.2e} (tolerance {tol}) | rollout tokens/s",
      [round(r["perf/rollout_tokens_per_s"]) for r in rows], "| step s", [round(r["perf/step_s"], 1) for r in rows])
sys.exit(0 if worst < tol and len(rows) == 4 else 1)
'
TRAIN=(run.steps=4 run.tasks_per_step=8 rollout.n_samples=4 sft.steps=0 eval.tasks=0 run.progress=false
       run.log_trajectories=8 model.preset=small model.device=cuda backend.kind=vllm backend.gpu_memory_utilization=0.3
       learner.lr=1e-3 learner.entropy_coef=0.1)
step train-vllm-fp32 600 bash -c "$PY -m agentrl.train run.output_dir=$OUT/runs-fp32 backend.dtype=float32 ${TRAIN[*]} && $PY -c '$RATIO_CHECK' $OUT/runs-fp32/tiny-arithmetic 1e-4"
step train-vllm-bf16 600 bash -c "$PY -m agentrl.train run.output_dir=$OUT/runs-bf16 backend.dtype=bfloat16 model.dtype=bfloat16 ${TRAIN[*]} && $PY -c '$RATIO_CHECK' $OUT/runs-bf16/tiny-arithmetic 10"
step mismatch 600 "$PY" benchmarks/mismatch.py --engine vllm --preset small --prompts 64 --n 4 --max-new-tokens 64 --json "$OUT/mismatch.json"
step vllm-tests 900 "$PY" -m pytest -q -m vllm tests/vllm -x

echo
echo "==> summary"
printf '%s\n' "${SUMMARY[@]}"
grep -h "worst" "$OUT"/train-vllm-*.log 2>/dev/null
tail -n 6 "$OUT/mismatch.log" 2>/dev/null
tail -n 3 "$OUT/vllm-tests.log" 2>/dev/null
