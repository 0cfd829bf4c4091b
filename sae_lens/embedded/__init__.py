"""Embedded default corpus, tokenizer and tiny model: everything works offline."""

from sae_lens.embedded.corpus import (
    EMBEDDED_DATASET_NAME,
    is_embedded_dataset,
    load_embedded_dataset,
)
from sae_lens.embedded.model import (
    EMBEDDED_MODEL_NAME,
    embedded_model_dir,
    embedded_tl_config,
    is_embedded_model,
    load_embedded_hf_model,
    load_embedded_hooked_transformer,
    load_embedded_tokenizer,
)

__all__ = [
    "EMBEDDED_DATASET_NAME",
    "EMBEDDED_MODEL_NAME",
    "embedded_model_dir",
    "embedded_tl_config",
    "is_embedded_dataset",
    "is_embedded_model",
    "load_embedded_dataset",
    "load_embedded_hf_model",
    "load_embedded_hooked_transformer",
    "load_embedded_tokenizer",
]
