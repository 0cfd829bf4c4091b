"""The `ActivationsStore` arguments that configs give.

A training config and an SAE's config name the hook and the activations' settings with
the same fields (`hook_settings`); a cache config fixes the geometry that the store
writing an activation cache and the store reading it back must share
(`cache_store_arguments`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sae_lens.training.clt_rows import row_source, store_hook_name

if TYPE_CHECKING:
    from sae_lens.config import CacheActivationsRunnerConfig


def hook_settings(cfg: Any) -> dict[str, Any]:
    """The store arguments a `LanguageModelSAERunnerConfig` or an SAE's `SAEConfig` gives
    alike: hook, d_in, BOS, normalisation, dtype, seqpos slice and remote-code trust, and a
    transcoder's output hook and width (a CLT's every layer: sae_lens.training.clt_rows)."""
    return {
        "hook_name": store_hook_name(cfg),
        "hook_layer": cfg.hook_layer,
        "hook_head_index": cfg.hook_head_index,
        "d_in": cfg.d_in,
        "prepend_bos": cfg.prepend_bos,
        "normalize_activations": cfg.normalize_activations,
        "dtype": cfg.dtype,
        "seqpos_slice": tuple(cfg.seqpos_slice),
        "dataset_trust_remote_code": cfg.dataset_trust_remote_code,
        "output_hook": row_source(cfg),  # a transcoder's output hook, a CLT's layers
    }


def cache_store_arguments(cfg: CacheActivationsRunnerConfig) -> dict[str, Any]:
    """The `ActivationsStore` arguments a cache config fixes, the same for the store that
    writes the cache and the one that reads it: hook, sequence shape, batch and buffer
    sizes, dtype and seed (no head index, no normalisation)."""
    return {
        "hook_name": cfg.hook_name,
        "hook_layer": cfg.hook_layer,
        "hook_head_index": None,
        "context_size": cfg.context_size,
        "d_in": cfg.d_in,
        "n_batches_in_buffer": max(cfg.n_batches_in_buffer, 2),
        "total_training_tokens": cfg.training_tokens,
        "store_batch_size_prompts": cfg.model_batch_size,
        "normalize_activations": "none",
        "dtype": cfg.dtype,
        "seqpos_slice": cfg.seqpos_slice,
        "seed": cfg.seed,
    }
