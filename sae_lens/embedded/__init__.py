"""Embedded default corpus, tokenizer and tiny model: everything works offline.

The names and the two `is_embedded_*` checks are light; the loaders (which import
transformers and transformer_lens) are imported on first use."""

import importlib
from typing import Any

from sae_lens.embedded.corpus import (
    EMBEDDED_DATASET_NAME,
    is_embedded_dataset,
    load_embedded_dataset,
)
from sae_lens.embedded.names import EMBEDDED_MODEL_NAME, is_embedded_model

_MODEL_LOADERS = (
    "embedded_model_dir",
    "embedded_tl_config",
    "load_embedded_hf_model",
    "load_embedded_hooked_transformer",
    "load_embedded_tokenizer",
)

__all__ = [
    "EMBEDDED_DATASET_NAME",
    "EMBEDDED_MODEL_NAME",
    "is_embedded_dataset",
    "is_embedded_model",
    "load_embedded_dataset",
    *_MODEL_LOADERS,
]


def __getattr__(name: str) -> Any:
    if name not in _MODEL_LOADERS:
        raise AttributeError(f"module 'sae_lens.embedded' has no attribute {name!r}")
    value = getattr(importlib.import_module("sae_lens.embedded.model"), name)
    globals()[name] = value
    return value
