"""Fixtures for the alp tests."""

from __future__ import annotations

import pytest
from alp_models import tiny_llama, tiny_qwen2


@pytest.fixture
def qwen2():
    return tiny_qwen2()


@pytest.fixture
def llama():
    return tiny_llama()
