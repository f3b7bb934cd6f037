"""Fixtures for the mismatch-study tests: the tiny model folder (built locally, no download)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_path():
    from agentrl.tiny import build_tiny

    return build_tiny("tiny")


@pytest.fixture(scope="session")
def tiny(tiny_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    return model, AutoTokenizer.from_pretrained(tiny_path)
