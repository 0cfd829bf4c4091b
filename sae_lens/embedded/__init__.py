"""Embedded default corpus, tokenizer and tiny model: everything works offline."""

from sae_lens.embedded.corpus import (
    EMBEDDED_DATASET_NAME,
    is_embedded_dataset,
    load_embedded_dataset,
)

__all__ = [
    "EMBEDDED_DATASET_NAME",
    "is_embedded_dataset",
    "load_embedded_dataset",
]
