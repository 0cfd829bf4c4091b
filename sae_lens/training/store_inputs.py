"""The activations store's inputs, checked and resolved before any long work: sizes, the
hook point and context length against the model, the dataset's token or text column, and
the special token ids whose activations are never served. Each problem is a one-line
error that says what to change.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from datasets import Dataset, IterableDataset
from transformer_lens import HookedRootModule
from transformers import PreTrainedTokenizerBase

from sae_lens import logger
from sae_lens.analysis.hook_checks import check_hook_layer, require_hook
from sae_lens.dataset_sources import find_tokens_column
from sae_lens.training.dataset_metadata import validate_pretokenized_dataset_tokenizer

if TYPE_CHECKING:
    from sae_lens.config import HfDataset


def check_sizes(
    context_size: int,
    d_in: int,
    store_batch_size_prompts: int,
    n_batches_in_buffer: int,
    hook_head_index: int | None,
) -> None:
    """Raise on a size below its minimum or a negative head index."""
    for name, value in (
        ("context_size", context_size),
        ("d_in", d_in),
        ("store_batch_size_prompts", store_batch_size_prompts),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if n_batches_in_buffer < 2:
        raise ValueError(
            f"n_batches_in_buffer must be at least 2 (half is kept for mixing), got {n_batches_in_buffer}"
        )
    if hook_head_index is not None and hook_head_index < 0:
        raise ValueError(f"hook_head_index must be >= 0, got {hook_head_index}")


def check_train_batch_fits(train_batch_size_tokens: int, half_buffer_tokens: int) -> None:
    """Raise unless a training batch fits in the half of the shuffle buffer served at once."""
    if not 0 < train_batch_size_tokens <= half_buffer_tokens:
        raise ValueError(
            f"train_batch_size_tokens ({train_batch_size_tokens}) must be between 1 and the "
            f"tokens in half the shuffle buffer ({half_buffer_tokens} = n_batches_in_buffer // 2 * "
            "store_batch_size_prompts * context positions): raise n_batches_in_buffer or "
            "store_batch_size_prompts"
        )


def sliced_positions(context_size: int, seqpos_slice: tuple[int | None, ...]) -> int:
    """How many context positions `seqpos_slice` keeps (at least one, or it raises)."""
    n_positions = len(range(context_size)[slice(*seqpos_slice)])
    if n_positions == 0:
        raise ValueError(
            f"seqpos_slice {seqpos_slice} selects no positions of a context of {context_size}"
        )
    return n_positions


def check_hook_name(model: HookedRootModule, hook_name: str, hook_layer: int | None = None) -> None:
    """Raise a HookNameError if the model lists its hook points and `hook_name` is not one
    of them (suggesting the closest), or if `hook_layer` stops the model before the hook."""
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is not None:
        require_hook(hook_name, hook_dict, field="hook_name")
    if hook_layer is not None:
        check_hook_layer(model, hook_name, hook_layer)


def check_output_hook(
    model: HookedRootModule, hook_name_out: str, hook_layer_out: int | None
) -> None:
    """A transcoder's output hook: a HookNameError if the model lacks it (naming the field
    `hook_name_out`) or if `hook_layer_out` stops the model before it."""
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is not None:
        require_hook(hook_name_out, hook_dict, field="hook_name_out")
    if hook_layer_out is not None:
        check_hook_layer(model, hook_name_out, hook_layer_out)


def check_context_fits_model(model: HookedRootModule, context_size: int) -> None:
    """Raise if `context_size` exceeds the model's context length (when it has one)."""
    limit = _model_context_limit(model)
    if limit is not None and context_size > limit:
        raise ValueError(f"context_size {context_size} exceeds the model's context length {limit}")


def _model_context_limit(model: HookedRootModule) -> int | None:
    cfg = getattr(model, "cfg", None)
    if isinstance(getattr(cfg, "n_ctx", None), int):
        return cfg.n_ctx  # type: ignore[union-attr]
    hf_config = getattr(getattr(model, "model", None), "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(hf_config, name, None), int):
            return getattr(hf_config, name)
    return None


def inspect_dataset(
    dataset: Dataset | IterableDataset,
    dataset_arg: HfDataset | str,
    context_size: int,
    tokenizer: PreTrainedTokenizerBase | None,
) -> tuple[str, bool]:
    """The column the store reads and whether it holds tokens (else text), read from the
    first row; checks the row length of tokens, and that text can be tokenized. A dataset
    given by path is checked against the tokenizer named in its pretokenize metadata."""
    try:
        first = next(iter(dataset))
    except StopIteration:
        name = f" {dataset_arg!r}" if isinstance(dataset_arg, str) else ""
        raise ValueError(f"the dataset{name} is empty: it has no rows") from None
    column, is_tokenized = find_tokens_column(first.keys())
    if is_tokenized:
        row_length = len(first[column])
        if row_length < context_size:
            raise ValueError(
                f"pretokenized dataset rows have {row_length} tokens, fewer than context_size "
                f"{context_size}: lower context_size or pretokenize with a larger one"
            )
        if row_length > context_size:
            warnings.warn(
                f"pretokenized dataset rows have {row_length} tokens but context_size is "
                f"{context_size}: the end of each row is discarded",
                RuntimeWarning,
                stacklevel=2,
            )
        if isinstance(dataset_arg, str) and tokenizer is not None:
            validate_pretokenized_dataset_tokenizer(dataset_arg, tokenizer)
    elif tokenizer is None:
        raise ValueError(
            f"the dataset holds text (column {column!r}) but the model has no tokenizer: "
            "give the model a tokenizer or use a pretokenized dataset"
        )
    else:
        logger.info("Dataset is not tokenized: tokenizing on the fly (pretokenizing is faster)")
    return column, is_tokenized


def resolve_excluded_tokens(model: HookedRootModule, exclude: bool | list[int]) -> list[int] | None:
    """The token ids whose activations are dropped: None for False, every special token
    of the model's tokenizer for True, or the ids given."""
    if exclude is False:
        return None
    if exclude is True:
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(
                "exclude_special_tokens=True needs a model with a tokenizer; pass token ids instead"
            )
        return _special_token_ids(tokenizer)
    return list(exclude)


def _special_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """BOS, EOS, PAD and every other special token id of `tokenizer`."""
    ids = set(tokenizer.all_special_ids)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            ids.add(value)
    return sorted(ids)


# --- 5.6.0's helpers, which code written for it imports from activations_store ----------


def _filter_buffer_acts(
    buffer: tuple[torch.Tensor, torch.Tensor | None], exclude_tokens: torch.Tensor | None
) -> torch.Tensor:
    """The activations of `buffer` = (activations [n, ...], token ids [n] or None) whose
    token is not in `exclude_tokens`."""
    activations, tokens = buffer
    if tokens is None or exclude_tokens is None:
        return activations
    return activations[~torch.isin(tokens, exclude_tokens)]


def _get_special_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every special token id of `tokenizer`: its `*_token_id` attributes and the ids of
    the tokens in its special-tokens map."""
    ids = {
        getattr(tokenizer, attr)
        for attr in dir(tokenizer)
        if attr.endswith("_token_id") and isinstance(getattr(tokenizer, attr, None), int)
    }
    for tokens in getattr(tokenizer, "special_tokens_map", {}).values():
        for token in [tokens] if isinstance(tokens, str) else tokens:
            ids.add(tokenizer.convert_tokens_to_ids(token))
    return list(ids)
