import hashlib
import subprocess
import sys

import pytest

from agentrl.tiny import CHATML_TEMPLATE, PRESETS, build_model, build_tiny, load_tiny


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_byte_for_byte_across_processes(tmp_path):
    here = build_tiny("tiny", seed=3, cache_dir=tmp_path / "a")
    code = (
        "import sys; from pathlib import Path; from agentrl.tiny import build_tiny; "
        "print(build_tiny('tiny', seed=3, cache_dir=Path(sys.argv[1])))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    there = type(here)(out)
    assert here.name == there.name
    assert _digests(here) == _digests(there)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(_digests(here))


def test_other_seed_other_weights(tmp_path):
    a = build_tiny("tiny", seed=0, cache_dir=tmp_path)
    b = build_tiny("tiny", seed=1, cache_dir=tmp_path)
    assert a != b
    assert _digests(a)["tokenizer.json"] == _digests(b)["tokenizer.json"]
    assert _digests(a)["model.safetensors"] != _digests(b)["model.safetensors"]


def test_cache_is_reused(tmp_path):
    first = build_tiny("tiny", cache_dir=tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert build_tiny("tiny", cache_dir=tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp


def test_loads_with_from_pretrained_and_generates():
    import torch

    model, tok = load_tiny("tiny")
    assert model.config.model_type == "qwen2"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1.5e6
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    ids = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True,
                                  return_dict=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > len(ids)


def test_small_preset_size():
    model = build_model("small", 600)
    assert 5e6 < sum(p.numel() for p in model.parameters()) < 15e6


def test_unknown_preset_suggests():
    with pytest.raises(ValueError, match="Did you mean 'tiny'"):
        build_tiny("tinyy")


def test_chat_template_round_trip(tiny_tokenizer):
    messages = [
        {"role": "system", "content": "Use python."},
        {"role": "user", "content": "What is 123 * 45? Ünïcödé ✓"},
        {"role": "assistant", "content": "```python\nprint(123 * 45)\n```"},
        {"role": "tool", "content": "Code execution result: 5535\n"},
        {"role": "assistant", "content": "\\boxed{5535}"},
    ]
    assert tiny_tokenizer.chat_template == CHATML_TEMPLATE
    text = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert text.count("<|im_start|>") == 5 and text.endswith("\\boxed{5535}<|im_end|>\n")
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == text
    # digits are single tokens, the tool-format tokens are single special tokens
    assert all(len(tiny_tokenizer.encode(d, add_special_tokens=False)) == 1 for d in "0123456789")
    for special in ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"):
        assert len(tiny_tokenizer.encode(special, add_special_tokens=False)) == 1


def test_presets_are_named():
    assert {"tiny", "small"} <= set(PRESETS)
