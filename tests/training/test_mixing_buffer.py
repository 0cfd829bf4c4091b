"""MixingBuffer: rows are kept for mixing or queued in whole batches, refills never mix two
epochs, and a saved buffer comes back in the same order; permute_together."""

from __future__ import annotations

import pytest
import torch

from sae_lens.training.mixing_buffer import MixingBuffer, permute_together
from sae_lens.training.token_stream import EndOfEpoch

D_IN = 3


def make_buffer(capacity: int = 40, seed: int = 0) -> MixingBuffer:
    return MixingBuffer(
        capacity, D_IN, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(seed)
    )


def rows(start: int, n: int) -> torch.Tensor:
    """Rows whose first value is their id: [n, D_IN]."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].expand(n, D_IN)


def ids(tensor: torch.Tensor) -> list[int]:
    return tensor[:, 0].long().tolist()


def test_permute_together_keeps_rows_aligned() -> None:
    a = torch.arange(10)
    b = torch.arange(10) * 10
    pa, pb = permute_together([a, b], generator=torch.Generator().manual_seed(0))
    assert torch.equal(pb, pa * 10) and not torch.equal(pa, a)


def test_mix_queues_whole_batches_of_the_larger_half_and_keeps_the_rest() -> None:
    buffer = make_buffer()
    buffer.add(rows(0, 20))
    buffer.mix(batch_size=4)
    assert (buffer.n_stored, buffer.n_queued) == (12, 8)  # 10 of 20 served: 2 whole batches
    served = [buffer.next_rows(4) for _ in range(2)]
    assert buffer.n_queued == 0 and buffer.free.numel() == 40 - 12
    seen = ids(torch.cat([*served, buffer.stored_rows()]))
    assert sorted(seen) == list(range(20)) and seen != list(range(20))  # all rows, mixed


def test_same_generator_seed_gives_the_same_order() -> None:
    orders = []
    for _ in range(2):
        buffer = make_buffer(seed=3)
        buffer.add(rows(0, 20))
        buffer.mix(batch_size=5)
        orders.append(ids(buffer.queued_rows()))
    assert orders[0] == orders[1]


def test_adding_more_rows_than_free_slots_fails_clearly() -> None:
    buffer = make_buffer(capacity=8)
    buffer.add(rows(0, 6))
    with pytest.raises(RuntimeError, match="shuffle buffer overflow: 3 rows, 2 free slots"):
        buffer.add(rows(6, 3))


def test_refill_keeps_half_and_at_the_end_of_the_data_starts_afresh() -> None:
    buffer = make_buffer()
    calls: list[bool] = []
    next_id = [0]

    def add_half(raise_at_epoch_end: bool) -> None:
        if raise_at_epoch_end and next_id[0] == 30:  # an epoch holds rows 0-29
            next_id[0] = 100  # the rows of the next epoch
            raise EndOfEpoch("ran out")
        calls.append(raise_at_epoch_end)
        buffer.add(rows(next_id[0], 10))
        next_id[0] += 10

    buffer.refill(add_half, batch_size=5)  # empty: two halves, rows 0-19
    assert calls == [False, True] and (buffer.n_stored, buffer.n_queued) == (10, 10)
    buffer.refill(add_half, batch_size=5)  # keeps 10 stored rows, adds rows 20-29
    assert calls == [False, True, True] and (buffer.n_stored, buffer.n_queued) == (10, 10)
    with pytest.warns(UserWarning, match="starting a new epoch"):
        buffer.refill(add_half, batch_size=5)  # out of data: emptied, rows 100-119
    everything = ids(torch.cat([buffer.stored_rows(), buffer.queued_rows()]))
    assert sorted(everything) == list(range(100, 120))


def test_refill_fails_clearly_when_no_rows_are_added() -> None:
    buffer = make_buffer()
    with pytest.raises(ValueError, match="exclude_special_tokens removed every token"):
        buffer.refill(lambda raise_at_epoch_end: None, batch_size=5)


def test_load_puts_back_stored_and_queued_rows_in_order() -> None:
    buffer = make_buffer()
    buffer.add(rows(0, 20))
    buffer.mix(batch_size=4)
    stored, queued = buffer.stored_rows(), buffer.queued_rows()
    restored = make_buffer()
    restored.load(stored, queued)
    assert torch.equal(restored.stored_rows(), stored)
    assert [ids(restored.next_rows(4)) for _ in range(2)] == [ids(queued[:4]), ids(queued[4:])]
    with pytest.raises(ValueError, match="larger than this store's buffer"):
        make_buffer(capacity=10).load(stored, queued)
