"""TokenSequences: rows cut or concatenated to context_size, batches across epochs, and a
saved position that resumes the exact same sequences."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset, DatasetDict

from sae_lens.tokenization_and_batching import concat_and_batch_sequences
from sae_lens.training.token_stream import EndOfEpoch, TokenSequences, single_split
from tests.training.test_activations_store import text_dataset, word_tokenizer

CTX = 8


def test_text_rows_are_tokenized_and_concatenated_with_bos() -> None:
    dataset = text_dataset(30)
    tokenizer = word_tokenizer()
    stream = TokenSequences.for_store(dataset, "text", CTX, 4, tokenizer, prepend_bos=True)
    token_rows = (torch.tensor(tokenizer(t)["input_ids"]) for t in dataset["text"])
    expected = torch.stack(list(concat_and_batch_sequences(token_rows, CTX, 0, None, 0))[:8])
    assert torch.equal(torch.cat([stream.next_batch(4, False) for _ in range(2)]), expected)


def test_pretokenized_rows_are_cut_and_epochs_restart_the_data() -> None:
    rows = torch.arange(5 * 10).reshape(5, 10)
    stream = TokenSequences.for_store(
        Dataset.from_dict({"tokens": rows.tolist()}), "tokens", CTX, 2, None, prepend_bos=False
    )
    assert torch.equal(stream.next_batch(4, False), rows[:4, :CTX])
    with pytest.raises(EndOfEpoch, match="after 5 rows; starting epoch 1"):
        stream.next_batch(2, raise_at_epoch_end=True)
    assert stream.epoch == 1 and torch.equal(stream.next_batch(3, False), rows[:3, :CTX])
    assert stream.total_rows_read == 8


def test_a_saved_position_resumes_the_same_sequences_mid_document() -> None:
    dataset = text_dataset(40)
    tokenizer = word_tokenizer()

    def new_stream() -> TokenSequences:
        return TokenSequences.for_store(dataset, "text", CTX, 3, tokenizer, prepend_bos=True)

    stream = new_stream()
    stream.next_batch(5, False)
    resumed = new_stream()
    resumed.load_state_dict(stream.state_dict())
    assert "concat_pending" in stream.state_dict()
    assert torch.equal(resumed.next_batch(7, False), stream.next_batch(7, False))


def test_a_dataset_dict_needs_a_train_split() -> None:
    train = Dataset.from_dict({"tokens": [[1, 2]]})
    assert single_split(DatasetDict({"train": train})) is train
    with pytest.raises(ValueError, match=r"splits \['test'\] and no 'train' split"):
        single_split(DatasetDict({"test": train}))
