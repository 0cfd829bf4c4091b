"""The shuffle buffer of the activations store: activation rows from many prompts, mixed so
that each training batch draws tokens from across the buffer.

All randomness comes from the `torch.Generator` the caller passes in, so the order of the
rows served depends only on the store's seed and the rows added.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from sae_lens.training.token_stream import EndOfEpoch

if TYPE_CHECKING:
    from sae_lens.training.activation_scaler import ActivationScaler


class MixingBuffer:
    """Preallocated shuffle buffer of activation rows [capacity, d_in].

    `stored` lists the slots kept for mixing (in order), `queue` the slots of the served
    half still to be served, `free` the rest. New rows are written into free slots in
    place; `mix` permutes the stored rows and moves all full batches of the larger half
    to the queue, leaving the rest stored.
    """

    def __init__(
        self,
        capacity: int,
        d_in: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator,
    ):
        self.pool = torch.empty((capacity, d_in), dtype=dtype, device=device)
        self._generator = generator
        self._slots = torch.arange(capacity, device=device)
        self.clear()

    def clear(self) -> None:
        self.free = self._slots
        self.stored = self._slots[:0]
        self.queue = self._slots[:0]

    @property
    def n_stored(self) -> int:
        return int(self.stored.numel())

    @property
    def n_queued(self) -> int:
        return int(self.queue.numel())

    def release_served(self) -> None:
        """Drop what is left of the served half (its slots become free)."""
        self.free = torch.cat([self.queue, self.free])
        self.queue = self._slots[:0]

    def add(self, rows: torch.Tensor) -> None:
        """Store `rows` [n, d_in] (converted to the buffer's dtype and device)."""
        n = rows.shape[0]
        if n > self.free.numel():
            raise RuntimeError(f"shuffle buffer overflow: {n} rows, {self.free.numel()} free slots")
        slots, self.free = self.free[:n], self.free[n:]
        self.pool.index_copy_(0, slots, rows.to(device=self.pool.device, dtype=self.pool.dtype))
        self.stored = torch.cat([self.stored, slots])

    def mix(self, batch_size: int) -> None:
        """Shuffle the stored rows and queue whole batches of `batch_size` rows from them,
        as many as fit in the larger half."""
        total = self.n_stored
        (mixed,) = permute_together([self.stored], self._generator)
        n_served = ((total - total // 2) // batch_size) * batch_size
        self.stored, self.queue = mixed[: total - n_served], mixed[total - n_served :]

    def refill(self, add_half: Callable[[bool], None], batch_size: int) -> None:
        """Serve a new half: drop what is left of the served half, let `add_half` add half
        a buffer of rows (twice when nothing is stored), mix, and queue whole batches of
        `batch_size`. `add_half(raise_at_epoch_end)` raises `EndOfEpoch` when the data ran
        out; the buffer is then emptied and filled from the next epoch, so epochs do not mix.
        """
        self.release_served()
        if self.n_stored == 0:
            add_half(False)
        try:
            add_half(True)
        except EndOfEpoch:
            warnings.warn(
                "All samples in the training dataset have been used; starting a new epoch "
                "with the same samples (the shuffle buffer is emptied so epochs do not mix)",
                stacklevel=3,  # the caller of ActivationsStore.get_data_loader
            )
            self.clear()
            add_half(False)
            add_half(False)
        self.mix(batch_size)
        while self.n_queued == 0:  # special tokens dropped so many rows that no batch is full
            n_before = self.n_stored
            add_half(False)
            if self.n_stored == n_before:
                raise ValueError(
                    "exclude_special_tokens removed every token of a buffer refill: check the "
                    "excluded ids against the dataset"
                )
            self.mix(batch_size)

    def next_rows(self, n: int) -> torch.Tensor:
        """The next `n` queued rows [n, d_in] (their slots become free)."""
        slots, self.queue = self.queue[:n], self.queue[n:]
        self.free = torch.cat([self.free, slots])
        return self.pool.index_select(0, slots)

    def stored_rows(self) -> torch.Tensor:
        """A copy of the rows kept for mixing, [n_stored, d_in]."""
        return self.pool.index_select(0, self.stored)

    def queued_rows(self) -> torch.Tensor:
        """A copy of the rows still to be served, in order, [n_queued, d_in]."""
        return self.pool.index_select(0, self.queue)

    def load(self, stored: torch.Tensor, queued: torch.Tensor) -> None:
        """Put saved stored and queued rows back (their order is what matters)."""
        n_stored, n_queued = stored.shape[0], queued.shape[0]
        if n_stored + n_queued > self._slots.numel():
            raise ValueError("saved shuffle buffer is larger than this store's buffer")
        self.clear()
        self.pool[:n_stored] = stored
        self.pool[n_stored : n_stored + n_queued] = queued
        self.stored = self._slots[:n_stored]
        self.queue = self._slots[n_stored : n_stored + n_queued]
        self.free = self._slots[n_stored + n_queued :]


def permute_together(
    tensors: Sequence[torch.Tensor], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, ...]:
    """Apply one random permutation of the first dimension to all `tensors`."""
    permutation = torch.randperm(tensors[0].shape[0], generator=generator).to(tensors[0].device)
    return tuple(t[permutation] for t in tensors)


class ServedBatches:
    """Iterator over the served half of a mixing buffer: batches [batch_size, 1, width] of
    the queued rows, scaled by `scaler` when normalisation asks."""

    def __init__(self, mixer: MixingBuffer, scaler: ActivationScaler, batch_size: int):
        self._mixer = mixer
        self._scaler = scaler
        self._batch_size = batch_size

    def __iter__(self) -> ServedBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self._mixer.n_queued == 0:
            raise StopIteration
        self._scaler.check_ready()
        rows = self._mixer.next_rows(self._batch_size)
        return self._scaler.for_serving(rows.unsqueeze(1))
