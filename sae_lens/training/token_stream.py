"""The token stream of the activations store: sequences of `context_size` tokens read from a
dataset, in model batches [batch, context_size], with a position that can be saved.

Pretokenized rows are cut to `context_size`; text is tokenized on the fly (like
TransformerLens' `to_tokens(text, prepend_bos=False)`) and concatenated into rows by a
`SequenceConcatenator`, with BOS at the start of each row and between documents when
`prepend_bos` is set (SAELens 5.6.0 semantics).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from transformers import PreTrainedTokenizerBase

from sae_lens import logger
from sae_lens.load_model import tokenizer_prepends_bos
from sae_lens.tokenization_and_batching import SequenceConcatenator

if TYPE_CHECKING:
    from sae_lens.config import HfDataset

_TEXT_ROWS_PER_READ = 64  # text rows read from the dataset at once
_CHARS_PER_TOKEN = 4  # rough guess, to tokenize about one model batch of text at a time


class EndOfEpoch(StopIteration):
    """The dataset ran out; the store has already restarted it for the next epoch."""


class TokenSequences:
    """Sequences of `context_size` tokens read from a dataset, with a resumable position.

    Pretokenized rows are cut to `context_size`; text rows are tokenized in groups of about
    `tokenize_chars` characters (so long documents are not tokenized far ahead) and
    concatenated by a `SequenceConcatenator`. The position is the number of rows read
    in this epoch plus the concatenator's state; rows read ahead are not part of it.
    """

    def __init__(
        self,
        dataset: Dataset | IterableDataset,
        column: str,
        context_size: int,
        read_batch_size: int,
        tokenize: Callable[[list[str]], list[torch.Tensor]] | None,
        concatenator_factory: Callable[[], SequenceConcatenator] | None,
        tokenize_chars: int = 1,
    ):
        self._dataset = dataset
        self._column = column
        self._context_size = context_size
        self._read_batch_size = read_batch_size
        self._tokenize = tokenize
        self._tokenize_chars = tokenize_chars
        self._concatenator_factory = concatenator_factory
        self.epoch = 0
        self.total_rows_read = 0
        self._start(rows_read=0)

    @classmethod
    def for_store(
        cls,
        dataset: Dataset | IterableDataset,
        column: str,
        context_size: int,
        batch_size: int,
        tokenizer: PreTrainedTokenizerBase | None,
        prepend_bos: bool,
    ) -> TokenSequences:
        """The stream an activations store reads: `tokenizer` is None for a pretokenized
        dataset; `batch_size` sequences make one model batch."""
        if tokenizer is None:
            return cls(dataset, column, context_size, max(batch_size, 1), None, None)
        bos = tokenizer.bos_token_id if prepend_bos else None
        return cls(
            dataset,
            column,
            context_size,
            read_batch_size=_TEXT_ROWS_PER_READ,
            tokenize=_text_tokenizer(tokenizer),
            concatenator_factory=lambda: SequenceConcatenator(
                context_size, begin_batch_token_id=bos, sequence_separator_token_id=bos
            ),
            tokenize_chars=_CHARS_PER_TOKEN * context_size * batch_size,
        )

    def _start(self, rows_read: int) -> None:
        self.rows_read = rows_read
        self.sequences_this_epoch = 0
        self._ahead: list[torch.Tensor] = []  # converted rows, next one last
        self._unread: list[Any] = []  # raw rows read from the dataset, next one last
        self._batches = _iter_row_batches(
            self._dataset, self._column, rows_read, self._read_batch_size
        )
        self._concatenator = self._concatenator_factory() if self._concatenator_factory else None

    def start_new_epoch(self) -> None:
        if self.sequences_this_epoch == 0:
            raise ValueError(
                f"the dataset yields no sequence of {self._context_size} tokens: it is empty or "
                "its text is shorter than context_size"
            )
        self.epoch += 1
        self._start(rows_read=0)

    def next_batch(self, batch_size: int, raise_at_epoch_end: bool) -> torch.Tensor:
        """The next `batch_size` sequences [batch_size, context_size] (on the CPU). At the
        end of the dataset it starts the next epoch; with `raise_at_epoch_end` it then
        raises `EndOfEpoch`."""
        rows: list[torch.Tensor] = []
        while len(rows) < batch_size:
            sequence = self.next()
            if sequence is not None:
                rows.append(sequence)
                continue
            rows_read = self.rows_read
            self.start_new_epoch()
            message = f"Ran out of tokens in the dataset after {rows_read} rows; starting epoch {self.epoch}"
            logger.info(message)
            if raise_at_epoch_end:
                raise EndOfEpoch(message)
        return torch.stack(rows)

    def __iter__(self) -> TokenSequences:
        return self

    def __next__(self) -> torch.Tensor:
        """The next sequence [context_size]; StopIteration when this epoch's data is used
        up (the stream stays exhausted until `start_new_epoch`)."""
        sequence = self.next()
        if sequence is None:
            raise StopIteration
        return sequence

    def next(self) -> torch.Tensor | None:
        """The next sequence, or None when this epoch's data is used up."""
        sequence = (
            self._next_tokenized() if self._concatenator is None else self._next_concatenated()
        )
        if sequence is not None:
            self.sequences_this_epoch += 1
        return sequence

    def _next_tokenized(self) -> torch.Tensor | None:
        row = self._next_row()
        if row is None:
            return None
        if row.shape[0] < self._context_size:
            raise ValueError(
                f"dataset row {self.rows_read} has {row.shape[0]} tokens, fewer than context_size {self._context_size}"
            )
        self._count_row()
        return row[: self._context_size]

    def _next_concatenated(self) -> torch.Tensor | None:
        concatenator = self._concatenator
        assert concatenator is not None
        while (sequence := concatenator.pop()) is None:
            tokens = self._next_row()
            if tokens is None:
                return None
            concatenator.push(tokens)
            self._count_row()
        return sequence

    def _count_row(self) -> None:
        self._ahead.pop()
        self.rows_read += 1
        self.total_rows_read += 1

    def _next_row(self) -> torch.Tensor | None:
        """The next unread row (tokens), read ahead in groups; None at the end."""
        if not self._ahead:
            if not self._unread:
                batch = next(self._batches, None)
                if batch is None:
                    return None
                self._unread = list(batch)[::-1]
            group = self._take_group()
            rows = self._tokenize(group) if self._tokenize else [_as_token_tensor(r) for r in group]
            self._ahead = rows[::-1]
        return self._ahead[-1]

    def _take_group(self) -> list[Any]:
        """The raw rows to convert next: every row read for tokens; for text, rows adding
        up to about `tokenize_chars` characters (at least one)."""
        if self._tokenize is None:
            group, self._unread = self._unread[::-1], []
            return group
        group: list[Any] = []
        n_chars = 0
        while self._unread and (not group or n_chars < self._tokenize_chars):
            group.append(self._unread.pop())
            n_chars += len(group[-1])
        return group

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "rows_read": self.rows_read,
            "total_rows_read": self.total_rows_read,
            "count_this_epoch": self.sequences_this_epoch,
        }
        if self._concatenator is not None:
            concat = self._concatenator.state_dict()
            state.update(
                concat_row=concat["row"],
                concat_pending=concat["pending"],
                concat_is_start=concat["is_start"],
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.total_rows_read = int(state["total_rows_read"])
        self._start(rows_read=int(state["rows_read"]))
        self.sequences_this_epoch = int(state["count_this_epoch"])
        if self._concatenator is not None:
            self._concatenator.load_state_dict(
                {
                    "row": state["concat_row"],
                    "pending": state["concat_pending"],
                    "is_start": state["concat_is_start"],
                }
            )


def single_split(dataset: HfDataset) -> Dataset | IterableDataset:
    """The 'train' split of a dataset dict; a single dataset as it is."""
    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        if "train" not in dataset:
            raise ValueError(
                f"dataset has splits {list(dataset)} and no 'train' split: pass one split"
            )
        return dataset["train"]
    return dataset


def dataset_shard(
    dataset: Dataset | IterableDataset, index: int, n_shards: int
) -> Dataset | IterableDataset:
    """Part `index` of `n_shards` disjoint parts of `dataset` (map-style: a contiguous
    block of rows; streaming: whole files where they divide evenly, else every
    `n_shards`-th row)."""
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(dataset, rank=index, world_size=n_shards)


def shuffled(
    dataset: Dataset | IterableDataset, seed: int, buffer_size: int
) -> Dataset | IterableDataset:
    """`dataset` shuffled with `seed` (`buffer_size` matters for streaming datasets only)."""
    if isinstance(dataset, IterableDataset):
        return dataset.shuffle(seed=seed, buffer_size=buffer_size)
    return dataset.shuffle(seed=seed)


def _iter_row_batches(
    dataset: Dataset | IterableDataset, column: str, start: int, batch_size: int
) -> Iterator[Sequence[Any]]:
    """Values of `column` in groups of `batch_size` rows, from row `start` on."""
    tokenized = column in ("tokens", "input_ids")
    if isinstance(dataset, Dataset):
        formatted = dataset.with_format("torch" if tokenized else None)
        for i in range(start, len(dataset), batch_size):
            yield formatted[i : i + batch_size][column]
        return
    # numpy, not torch: a stream's torch formatter copies tensors again (and warns)
    source = dataset.with_format("numpy" if tokenized else None)
    # rows are skipped here, not with `IterableDataset.skip`: after `split_dataset_by_node`
    # (a data-parallel rank's part) that skips rows of the whole stream, not of the part
    for batch in source.iter(batch_size=batch_size):
        values = batch[column]
        if start >= len(values):
            start -= len(values)
            continue
        yield values[start:] if start else values
        start = 0


def iter_row_tokens(
    values: Iterable[Any], tokenizer: PreTrainedTokenizerBase | None
) -> Iterator[torch.Tensor]:
    """Each dataset row value as a 1D long tensor of tokens, in order: text tokenized
    without BOS (as the store tokenizes it) when `tokenizer` is given, token rows as they
    are otherwise."""
    tokenize = None if tokenizer is None else _text_tokenizer(tokenizer)
    for value in values:
        yield _as_token_tensor(value) if tokenize is None else tokenize([value])[0]


def _as_token_tensor(row: Any) -> torch.Tensor:
    return torch.as_tensor(row, dtype=torch.long).reshape(-1)


def _text_tokenizer(
    tokenizer: PreTrainedTokenizerBase,
) -> Callable[[list[str]], list[torch.Tensor]]:
    """Tokenize texts like TransformerLens' `to_tokens(text, prepend_bos=False)`."""
    strip_bos = tokenizer_prepends_bos(tokenizer)
    bos = tokenizer.bos_token_id

    def tokenize(texts: list[str]) -> list[torch.Tensor]:
        rows = tokenizer(texts, verbose=False)["input_ids"]
        if strip_bos:
            rows = [row[1:] if row and row[0] == bos else row for row in rows]
        return [torch.tensor(row, dtype=torch.long) for row in rows]

    return tokenize
