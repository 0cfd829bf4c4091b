"""Concatenate token sequences and cut them into fixed-length rows of `context_size`.

Rules (SAELens 5.6.0 semantics):
- every row starts with `begin_batch_token_id` (if set), unless the sequence chunk that
  opens the row already starts with it;
- every sequence starts with `begin_sequence_token_id` (if set), unless it already does;
- a sequence appended after another one in the same row is preceded by
  `sequence_separator_token_id` (if set), unless it already starts with it;
- a sequence longer than the rest of a row continues at the start of the next row;
- empty sequences are skipped and the final incomplete row is dropped.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import torch


class SequenceConcatenator:
    """Incremental form of `concat_and_batch_sequences` whose state can be saved.

    Feed one 1D token tensor with `push`, then call `pop` until it returns None (the
    sequence is used up; a partly filled row waits for the next sequence).
    """

    def __init__(
        self,
        context_size: int,
        begin_batch_token_id: int | None = None,
        begin_sequence_token_id: int | None = None,
        sequence_separator_token_id: int | None = None,
    ):
        if context_size < 1:
            raise ValueError(f"context_size must be at least 1, got {context_size}")
        if context_size == 1 and begin_batch_token_id is not None:
            raise ValueError(
                "context_size 1 with a begin_batch_token_id leaves no room for data tokens: "
                "use a larger context_size or no begin-batch token"
            )
        self.context_size = context_size
        self.begin_batch_token_id = begin_batch_token_id
        self.begin_sequence_token_id = begin_sequence_token_id
        self.sequence_separator_token_id = sequence_separator_token_id
        self._row: list[torch.Tensor] = []  # pieces of the row being filled
        self._row_len = 0
        self._tokens: torch.Tensor | None = None  # [seq] the sequence being consumed
        self._offset = 0
        self._is_start = True

    def push(self, tokens: torch.Tensor) -> None:
        """Start consuming a new 1D token sequence (the previous one must be used up)."""
        if tokens.ndim != 1:
            raise ValueError(f"tokens.shape should be 1D but was {tuple(tokens.shape)}")
        if self.has_pending_tokens():
            raise RuntimeError("push() called before the previous sequence was used up")
        self._tokens = tokens
        self._offset = 0
        self._is_start = True

    def has_pending_tokens(self) -> bool:
        return self._tokens is not None and self._offset < self._tokens.shape[0]

    def pop(self) -> torch.Tensor | None:
        """The next full row [context_size] (long), or None once the sequence is used up."""
        while self.has_pending_tokens():
            self._add_chunk()
            if self._row_len == self.context_size:
                row = torch.cat(self._row).long()
                self._row = []
                self._row_len = 0
                return row
        return None

    def _prefix(self, first_token: int) -> list[int]:
        prefix: list[int] = []
        if self._is_start and self.begin_sequence_token_id is not None:
            if first_token != self.begin_sequence_token_id:
                prefix.append(self.begin_sequence_token_id)
                first_token = self.begin_sequence_token_id
        lead = self.begin_batch_token_id if self._row_len == 0 else self.sequence_separator_token_id
        if lead is not None and first_token != lead:
            prefix.insert(0, lead)
        return prefix

    def _add_chunk(self) -> None:
        tokens = self._tokens
        assert tokens is not None
        prefix = self._prefix(int(tokens[self._offset]))
        room = self.context_size - self._row_len
        prefix = prefix[:room]
        if prefix:
            self._row.append(torch.tensor(prefix, dtype=torch.long, device=tokens.device))
        n_take = room - len(prefix)
        if n_take > 0:
            self._row.append(tokens[self._offset : self._offset + n_take])
        # a chunk that runs past the end simply ends the sequence
        self._row_len += len(prefix) + min(n_take, tokens.shape[0] - self._offset)
        self._offset += n_take
        self._is_start = False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the partial row and the unread tokens."""
        row = torch.cat(self._row).long().cpu() if self._row else torch.zeros(0, dtype=torch.long)
        pending = (
            self._tokens[self._offset :].long().cpu()
            if self.has_pending_tokens() and self._tokens is not None
            else torch.zeros(0, dtype=torch.long)
        )
        return {"row": row, "pending": pending, "is_start": self._is_start}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        row = state["row"].to(device)
        self._row = [row] if row.numel() else []
        self._row_len = int(row.numel())
        pending = state["pending"].to(device)
        self._tokens = pending if pending.numel() else None
        self._offset = 0
        self._is_start = bool(state["is_start"])


@torch.no_grad()
def concat_and_batch_sequences(
    tokens_iterator: Iterator[torch.Tensor],
    context_size: int,
    begin_batch_token_id: int | None = None,
    begin_sequence_token_id: int | None = None,
    sequence_separator_token_id: int | None = None,
) -> Generator[torch.Tensor, None, None]:
    """Yield rows of `context_size` tokens (1D long tensors) built from the 1D token
    sequences of `tokens_iterator`, with the special-token rules of the module docstring."""
    concatenator = SequenceConcatenator(
        context_size, begin_batch_token_id, begin_sequence_token_id, sequence_separator_token_id
    )
    for tokens in tokens_iterator:
        concatenator.push(tokens)
        while (row := concatenator.pop()) is not None:
            yield row


def _add_tokens_to_batch(
    batch: torch.Tensor | None,
    tokens: torch.Tensor,
    offset: int,
    context_size: int,
    is_start_of_sequence: bool,
    begin_batch_token_id: int | None = None,
    begin_sequence_token_id: int | None = None,
    sequence_separator_token_id: int | None = None,
) -> tuple[torch.Tensor, int]:
    """5.6.0's step of `concat_and_batch_sequences`: `batch` (None for a new one) extended
    by `tokens[offset:]`, with the special tokens that belong in front (begin-sequence,
    begin-batch or separator, each only when the next token is not already it), up to
    `context_size` tokens; returns (batch, the offset of the first token not taken)."""
    prefix: list[int] = []
    first = int(tokens[offset])

    def put_in_front(token_id: int | None) -> None:
        nonlocal first
        if token_id is not None and first != token_id:
            prefix.insert(0, token_id)
            first = token_id

    if is_start_of_sequence:
        put_in_front(begin_sequence_token_id)
    put_in_front(begin_batch_token_id if batch is None else sequence_separator_token_id)
    current = tokens.new_empty(0) if batch is None else batch
    room = max(context_size - current.shape[0], 0)
    n_taken = max(room - len(prefix), 0)
    front = torch.tensor(prefix[:room], dtype=torch.long, device=tokens.device)
    return torch.cat([current, front, tokens[offset : offset + n_taken]]), offset + n_taken
