"""Fixtures for the vLLM tests (make test-vllm): the tiny checkpoint and its HF model.

Every test here is marked ``vllm`` (the default run deselects them) and skips with the import error when
vllm is not importable, so they are safe to collect in the main .venv.
"""

from __future__ import annotations

import os

import pytest

# vLLM's CPU build reserves VLLM_CPU_KVCACHE_SPACE GiB for the KV cache (default 4); 1 GiB is plenty for the
# tiny model and keeps two engines (the in-process one and `vllm serve`) within this machine's memory.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_path():
    from agentrl.tiny import build_tiny

    return build_tiny("tiny", seed=0)


@pytest.fixture(scope="session")
def hf_tiny(tiny_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_path)
