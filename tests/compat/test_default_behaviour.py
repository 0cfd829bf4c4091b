"""The activations store's token stream, its 5.6.0 attributes and pretokenizing give what
sae-lens 5.6.0 gives on the same text and tokenizer (the embedded one).

Expected literals were recorded by running sae-lens 5.6.0 (transformer-lens 2.18,
datasets 2.21) on the same inputs: an `ActivationsStore` built with a HookedTransformer
that carries the embedded tokenizer, and `pretokenize_dataset` with that tokenizer.
Note that under transformer-lens 3 a model's `tokenizer.encode` prepends BOS where
5.6.0's environment did not; the store strips it, as 5.6.0 did through `to_tokens`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from sae_lens.config import LanguageModelSAERunnerConfig, PretokenizeRunnerConfig
from sae_lens.embedded import embedded_model_dir
from sae_lens.pretokenize_runner import pretokenize_dataset
from sae_lens.training.activations_store import ActivationsStore

TEXTS = [
    "hello world",
    "",
    "<|endoftext|>x = 1",
    "import sys",
    "a",
    "def f(a):\n    return a",
    "<|endoftext|>",
    "os.path.join(a, b)",
]

# From sae-lens 5.6.0: three get_batch_tokens() calls, 3 rows of context 6, on TEXTS
# (the third call starts the second epoch).
EXPECTED_TEXT_BATCHES = {
    True: [
        [[0, 268, 76, 320, 307, 269], [0, 626, 0, 88, 286, 498], [0, 850, 835, 0, 65, 0]],
        [[0, 487, 282, 8, 65, 324], [0, 278, 338, 265, 0, 0], [0, 596, 14, 625, 14, 1047]],
        [[0, 8, 65, 12, 296, 9], [0, 268, 76, 320, 307, 269], [0, 626, 0, 88, 286, 498]],
    ],
    False: [
        [[268, 76, 320, 307, 269, 626], [0, 88, 286, 498, 850, 835], [65, 487, 282, 8, 65, 324]],
        [[278, 338, 265, 0, 596, 14], [625, 14, 1047, 8, 65, 12], [268, 76, 320, 307, 269, 626]],
        [[0, 88, 286, 498, 850, 835], [65, 487, 282, 8, 65, 324], [278, 338, 265, 0, 596, 14]],
    ],
}

# From sae-lens 5.6.0: get_batch_tokens() with 2 prompts on "hello world" x 100.
EXPECTED_HELLO_WORLD = {
    11: [
        [0, 268, 76, 320, 307, 269, 626, 0, 268, 76, 320],
        [0, 307, 269, 626, 0, 268, 76, 320, 307, 269, 626],
    ],
    12: [
        [0, 268, 76, 320, 307, 269, 626, 0, 268, 76, 320, 307],
        [0, 269, 626, 0, 268, 76, 320, 307, 269, 626, 0, 268],
    ],
    13: [
        [0, 268, 76, 320, 307, 269, 626, 0, 268, 76, 320, 307, 269],
        [0, 626, 0, 268, 76, 320, 307, 269, 626, 0, 268, 76, 320],
    ],
}

PRETOKENIZE_TEXTS = [
    "hello world",
    "<|endoftext|>x = 1",
    "",
    "import sys",
    "def f(a):\n    return a",
]
# From sae-lens 5.6.0: pretokenize_dataset(PRETOKENIZE_TEXTS, context_size=6, no shuffle)
# for each (begin_batch_token, begin_sequence_token, sequence_separator_token); rows "|"-
# separated, tokens space-separated.
EXPECTED_PRETOKENIZED = {
    "None,None,None": "268 76 320 307 269 626|0 88 286 498 850 835|487 282 8 65 324 278",
    "None,None,bos": "268 76 320 307 269 626|0 88 286 498 0 850|835 0 487 282 8 65",
    "None,None,7": "268 76 320 307 269 626|0 88 286 498 7 850|835 7 487 282 8 65",
    "None,bos,None": "0 268 76 320 307 269|626 0 88 286 498 0|850 835 0 487 282 8",
    "None,bos,bos": "0 268 76 320 307 269|626 0 88 286 498 0|850 835 0 487 282 8",
    "None,bos,7": "0 268 76 320 307 269|626 7 0 88 286 498|0 850 835 7 0 487|282 8 65 324 278 338",
    "None,7,None": "7 268 76 320 307 269|626 7 0 88 286 498|7 850 835 7 487 282|8 65 324 278 338 265",
    "None,7,bos": "7 268 76 320 307 269|626 0 7 0 88 286|498 0 7 850 835 0|487 282 8 65 324 278",
    "None,7,7": "7 268 76 320 307 269|626 7 0 88 286 498|7 850 835 7 487 282|8 65 324 278 338 265",
    "bos,None,None": "0 268 76 320 307 269|0 626 0 88 286 498|0 850 835 487 282 8|0 65 324 278 338 265",
    "bos,None,bos": "0 268 76 320 307 269|0 626 0 88 286 498|0 850 835 0 487 282|0 8 65 324 278 338",
    "bos,None,7": "0 268 76 320 307 269|0 626 7 0 88 286|0 498 7 850 835 7|0 487 282 8 65 324",
    "bos,bos,None": "0 268 76 320 307 269|0 626 0 88 286 498|0 850 835 0 487 282|0 8 65 324 278 338",
    "bos,bos,bos": "0 268 76 320 307 269|0 626 0 88 286 498|0 850 835 0 487 282|0 8 65 324 278 338",
    "bos,bos,7": "0 268 76 320 307 269|0 626 7 0 88 286|0 498 7 0 850 835|0 487 282 8 65 324",
    "bos,7,None": "0 7 268 76 320 307|0 269 626 7 0 88|0 286 498 7 850 835|0 7 487 282 8 65",
    "bos,7,bos": "0 7 268 76 320 307|0 269 626 0 7 0|0 88 286 498 0 7|0 850 835 0 7 487|0 282 8 65 324 278",
    "bos,7,7": "0 7 268 76 320 307|0 269 626 7 0 88|0 286 498 7 850 835|0 7 487 282 8 65",
    "7,None,None": "7 268 76 320 307 269|7 626 0 88 286 498|7 850 835 487 282 8|7 65 324 278 338 265",
    "7,None,bos": "7 268 76 320 307 269|7 626 0 88 286 498|7 850 835 0 487 282|7 8 65 324 278 338",
    "7,None,7": "7 268 76 320 307 269|7 626 7 0 88 286|7 498 7 850 835 7|7 487 282 8 65 324",
    "7,bos,None": "7 0 268 76 320 307|7 269 626 0 88 286|7 498 0 850 835 0|7 487 282 8 65 324",
    "7,bos,bos": "7 0 268 76 320 307|7 269 626 0 88 286|7 498 0 850 835 0|7 487 282 8 65 324",
    "7,bos,7": "7 0 268 76 320 307|7 269 626 7 0 88|7 286 498 7 0 850|7 835 7 0 487 282|7 8 65 324 278 338",
    "7,7,None": "7 268 76 320 307 269|7 626 7 0 88 286|7 498 7 850 835 7|7 487 282 8 65 324",
    "7,7,bos": "7 268 76 320 307 269|7 626 0 7 0 88|7 286 498 0 7 850|7 835 0 7 487 282|7 8 65 324 278 338",
    "7,7,7": "7 268 76 320 307 269|7 626 7 0 88 286|7 498 7 850 835 7|7 487 282 8 65 324",
}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(embedded_model_dir()))


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> HookedTransformer:
    """A tiny random model carrying the embedded tokenizer (only its tokens matter here)."""
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=64, d_head=4, n_heads=4, d_vocab=4096, act_fn="relu"
    )
    return HookedTransformer(cfg, tokenizer=tokenizer)


def build_store(
    model: HookedTransformer, dataset: Any, context_size: int, batch_size: int, bos: bool
) -> ActivationsStore:
    return ActivationsStore(
        model=model,
        dataset=dataset,
        streaming=False,
        hook_name="blocks.0.hook_resid_post",
        hook_layer=0,
        hook_head_index=None,
        context_size=context_size,
        d_in=16,
        n_batches_in_buffer=2,
        total_training_tokens=1000,
        store_batch_size_prompts=batch_size,
        train_batch_size_tokens=8,
        prepend_bos=bos,
        normalize_activations="none",
        device=torch.device("cpu"),
        dtype="float32",
    )


def build_sae_cfg(**kwargs: Any) -> LanguageModelSAERunnerConfig:
    """Like 5.6.0's tests/helpers.build_sae_cfg, on the embedded model and corpus."""
    fields: dict[str, Any] = dict(
        model_name="tiny-pydoc-gpt2",
        hook_name="blocks.0.hook_resid_post",
        hook_layer=0,
        dataset_path="pydoc-corpus",
        d_in=16,
        context_size=6,
        n_batches_in_buffer=2,
        store_batch_size_prompts=4,
        train_batch_size_tokens=4,
        log_to_wandb=False,
        prepend_bos=True,
    )
    fields.update(kwargs)
    return LanguageModelSAERunnerConfig(**fields)


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_get_batch_tokens_on_text_matches_5_6_0(model: HookedTransformer, prepend_bos: bool):
    store = build_store(model, Dataset.from_dict({"text": TEXTS}), 6, 3, prepend_bos)
    batches = [store.get_batch_tokens().tolist() for _ in range(3)]
    assert batches == EXPECTED_TEXT_BATCHES[prepend_bos]


@pytest.mark.parametrize("context_size", [11, 12, 13])
def test_get_batch_tokens_fills_the_context_separated_by_bos(
    model: HookedTransformer, context_size: int
):
    dataset = Dataset.from_list([{"text": "hello world"}] * 100)
    cfg = build_sae_cfg(store_batch_size_prompts=2, context_size=context_size)
    store = ActivationsStore.from_config(model, cfg, override_dataset=dataset)
    tokens = store.get_batch_tokens()
    assert tokens.shape == (2, context_size)
    assert tokens.tolist() == EXPECTED_HELLO_WORLD[context_size]


def test_store_has_the_5_6_0_stream_attributes(model: HookedTransformer, tokenizer: Any):
    dataset = Dataset.from_list([{"text": f"hello world{i}"} for i in (1, 2, 3)] * 20)
    store = ActivationsStore.from_config(
        model, build_sae_cfg(context_size=5), override_dataset=dataset
    )
    raw = store._iterate_raw_dataset_tokens()
    assert [next(raw).tolist() for _ in range(3)] == [
        tokenizer.encode(f"hello world{i}") for i in (1, 2, 3)
    ]
    expected = [0, *tokenizer.encode("hello world1"), 0, *tokenizer.encode("hello world2")]
    assert next(store._iterate_tokenized_sequences()).tolist() == expected[:5]
    assert all(seq.shape == (5,) for seq in store._iterate_tokenized_sequences())

    # iterable_sequences is the stream get_batch_tokens reads from
    assert isinstance(store.iterable_sequences, Iterable)
    first = next(store.iterable_sequences)
    assert first.tolist() == expected[:5]
    fresh = list(itertools.islice(store._iterate_tokenized_sequences(), 3))
    assert torch.equal(store.get_batch_tokens(2), torch.stack(fresh[1:3]))


def test_storage_buffer_and_norm_estimate_as_5_6_0_tests_read_them(model: HookedTransformer):
    cfg = build_sae_cfg(normalize_activations="expected_average_only_in")
    store = ActivationsStore.from_config(model, cfg)
    assert store._storage_buffer is None and store._dataloader is None
    factor = store.estimate_norm_scaling_factor(n_batches_for_norm_estimate=10)
    assert isinstance(factor, float)
    assert store._storage_buffer is not None
    scaled_norm = store._storage_buffer[0].norm(dim=-1).mean() * factor
    assert scaled_norm == pytest.approx(np.sqrt(store.d_in), abs=5)
    store.estimated_norm_scaling_factor = factor
    assert store.storage_buffer.shape[1:] == (1, cfg.d_in)
    assert torch.equal(store.storage_buffer, store._storage_buffer)


def test_store_reads_pretokenized_rows_like_text(model: HookedTransformer, tokenizer: Any):
    dataset = Dataset.from_list([{"text": f"hello world{i}"} for i in (1, 2, 3)] * 20)
    pretokenize_cfg = PretokenizeRunnerConfig(
        context_size=5,
        num_proc=1,
        shuffle=False,
        begin_batch_token="bos",
        sequence_separator_token="bos",
    )
    tokenized = pretokenize_dataset(dataset, tokenizer, cfg=pretokenize_cfg)
    cfg = build_sae_cfg(context_size=5)
    text_store = ActivationsStore.from_config(model, cfg, override_dataset=dataset)
    token_store = ActivationsStore.from_config(model, cfg, override_dataset=tokenized)
    seqs = [seq.tolist() for seq in text_store._iterate_tokenized_sequences()]
    pretok_seqs = [seq.tolist() for seq in token_store._iterate_tokenized_sequences()]
    assert seqs == pretok_seqs


@pytest.mark.parametrize(
    "special", list(itertools.product([None, "bos", 7], repeat=3)), ids=lambda s: str(s)
)
def test_pretokenize_special_token_combinations_match_5_6_0(tokenizer: Any, special: tuple):
    begin_batch, begin_sequence, separator = special
    cfg = PretokenizeRunnerConfig(
        context_size=6,
        num_proc=1,
        shuffle=False,
        begin_batch_token=begin_batch,
        begin_sequence_token=begin_sequence,
        sequence_separator_token=separator,
    )
    tokenized = pretokenize_dataset(Dataset.from_dict({"text": PRETOKENIZE_TEXTS}), tokenizer, cfg)
    rows = "|".join(" ".join(map(str, row)) for row in tokenized["input_ids"].tolist())
    assert rows == EXPECTED_PRETOKENIZED[",".join(map(str, special))]
