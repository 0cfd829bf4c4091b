"""The JSON metadata file that travels with a dataset the package writes: `sae_lens.json`
beside a pretokenized dataset (read back to check its tokenizer against the model's), and
the runner config beside an activation cache. Either sits in a local folder or in a hub
dataset repo.
"""

from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from huggingface_hub import HfApi
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sae_lens import logger
from sae_lens.embedded import is_embedded_dataset, is_embedded_model, load_embedded_tokenizer

if TYPE_CHECKING:
    from sae_lens.config import CacheActivationsRunnerConfig, PretokenizeRunnerConfig

PRETOKENIZE_METADATA_FILE = "sae_lens.json"


def push_dataset_with_metadata(
    dataset: Dataset,
    cfg: CacheActivationsRunnerConfig | PretokenizeRunnerConfig,
    metadata_file: str,
    metadata_json: str,
    commit_message: str,
) -> None:
    """Push `dataset` to the hub dataset repo `cfg.hf_repo_id` (shards, privacy and
    revision from `cfg`), then upload `metadata_json` beside it as `metadata_file`."""
    if cfg.hf_repo_id is None:
        raise ValueError("hf_repo_id must be set to push to the Hugging Face hub")
    dataset.push_to_hub(
        repo_id=cfg.hf_repo_id,
        num_shards=cfg.hf_num_shards,
        private=cfg.hf_is_private_repo,
        revision=cfg.hf_revision,
    )
    HfApi().upload_file(
        path_or_fileobj=io.BytesIO(metadata_json.encode("utf-8")),
        path_in_repo=metadata_file,
        repo_id=cfg.hf_repo_id,
        repo_type="dataset",
        revision=cfg.hf_revision,
        commit_message=commit_message,
    )


def validate_pretokenized_dataset_tokenizer(
    dataset_path: str, model_tokenizer: PreTrainedTokenizerBase
) -> None:
    """Raise if the pretokenize metadata (sae_lens.json) next to `dataset_path` names a
    tokenizer whose vocabulary differs from `model_tokenizer`'s. Does nothing when there
    is no metadata or the named tokenizer cannot be loaded."""
    metadata = _read_pretokenize_metadata(dataset_path)
    if metadata is None or not metadata.get("tokenizer_name"):
        return
    tokenizer_name = metadata["tokenizer_name"]
    try:
        dataset_tokenizer = (
            load_embedded_tokenizer()
            if is_embedded_model(tokenizer_name)
            else AutoTokenizer.from_pretrained(tokenizer_name)
        )
    except (OSError, ValueError) as error:
        logger.info(f"Cannot load tokenizer {tokenizer_name!r} to check the dataset: {error}")
        return
    if dataset_tokenizer.get_vocab() != model_tokenizer.get_vocab():
        raise ValueError(
            f"dataset {dataset_path!r} was tokenized with {tokenizer_name!r}, whose vocabulary "
            "differs from the model's tokenizer: pretokenize it with the model's tokenizer"
        )


def _read_pretokenize_metadata(dataset_path: str) -> dict[str, Any] | None:
    if is_embedded_dataset(dataset_path):
        return None
    if os.path.exists(dataset_path):
        folder = dataset_path if os.path.isdir(dataset_path) else os.path.dirname(dataset_path)
        path = os.path.join(folder, PRETOKENIZE_METADATA_FILE)
        if not os.path.isfile(path):
            return None
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(dataset_path, PRETOKENIZE_METADATA_FILE, repo_type="dataset")
        except Exception as error:  # hub unreachable, no such repo or file: nothing to check
            logger.info(f"No {PRETOKENIZE_METADATA_FILE} found for {dataset_path!r}: {error}")
            return None
    with open(path) as f:
        return json.load(f)
