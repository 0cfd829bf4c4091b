"""concat_and_batch_sequences: worked examples of the 5.6.0 rules, and resumability.
(Exact agreement with sae-lens 5.6.0 on random inputs: scripts/check_tokenization_against_oracle.py.)"""

import pytest
import torch

from sae_lens.tokenization_and_batching import SequenceConcatenator, concat_and_batch_sequences


def rows(seqs: list[list[int]], context_size: int, **kwargs: int | None) -> list[list[int]]:
    tensors = iter([torch.tensor(s, dtype=torch.long) for s in seqs])
    return [r.tolist() for r in concat_and_batch_sequences(tensors, context_size, **kwargs)]


def test_plain_concatenation_drops_the_incomplete_last_row() -> None:
    assert rows([[1, 2, 3], [4, 5, 6, 7]], 3) == [[1, 2, 3], [4, 5, 6]]


def test_begin_batch_token_starts_every_row_and_separator_joins_sequences() -> None:
    # row 1: BOS 0, seq [1, 2], separator 9; row 2: BOS then the next sequence; [0, 6] dropped
    out = rows([[1, 2], [3, 4, 5, 6]], 4, begin_batch_token_id=0, sequence_separator_token_id=9)
    assert out == [[0, 1, 2, 9], [0, 3, 4, 5]]


def test_sequence_split_over_rows_gets_begin_sequence_token_only_once() -> None:
    assert rows([[1, 2, 3, 4, 5]], 3, begin_sequence_token_id=8) == [[8, 1, 2], [3, 4, 5]]


def test_special_tokens_are_not_doubled_when_the_sequence_already_starts_with_them() -> None:
    out = rows([[0, 1], [9, 2]], 4, begin_batch_token_id=0, sequence_separator_token_id=9)
    assert out == [[0, 1, 9, 2]]


def test_prefix_cut_at_a_full_row_loses_the_begin_sequence_token_like_5_6() -> None:
    # the second sequence's prefix [9, 8] meets a row with room for one token
    out = rows(
        [[1, 2], [3, 4, 5], [6, 7]],
        5,
        begin_batch_token_id=0,
        begin_sequence_token_id=8,
        sequence_separator_token_id=9,
    )
    assert out == [[0, 8, 1, 2, 9], [0, 3, 4, 5, 9]]


def test_empty_sequences_are_skipped_without_separator() -> None:
    assert rows([[1], [], [2, 3]], 3, sequence_separator_token_id=9) == [[1, 9, 2]]


def test_rows_are_long_tensors_of_context_size() -> None:
    out = list(concat_and_batch_sequences(iter([torch.arange(10, dtype=torch.int32)]), 4))
    assert [r.dtype for r in out] == [torch.long, torch.long]
    assert torch.equal(torch.stack(out), torch.arange(8).view(2, 4))


def test_rejects_non_1d_tokens() -> None:
    with pytest.raises(ValueError, match="should be 1D"):
        list(concat_and_batch_sequences(iter([torch.zeros(2, 3, dtype=torch.long)]), 4))


def test_context_one_with_begin_batch_token_is_refused() -> None:
    with pytest.raises(ValueError, match="no room for data tokens"):
        list(concat_and_batch_sequences(iter([torch.tensor([1, 2])]), 1, begin_batch_token_id=0))


def test_concatenator_state_resumes_mid_sequence_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    seqs = [
        torch.randint(1, 20, (int(n),), generator=gen)
        for n in torch.randint(0, 9, (30,), generator=gen)
    ]
    kwargs = dict(
        begin_batch_token_id=0, begin_sequence_token_id=21, sequence_separator_token_id=22
    )
    expected = list(concat_and_batch_sequences(iter(seqs), 5, **kwargs))

    first = SequenceConcatenator(5, **kwargs)
    got: list[torch.Tensor] = []
    for i, seq in enumerate(seqs):
        first.push(seq)
        while (row := first.pop()) is not None:
            got.append(row)
            if len(got) == 3:  # save in the middle of a sequence, then continue in a new object
                split_at, state = i, first.state_dict()
                break
        if len(got) == 3:
            break
    second = SequenceConcatenator(5, **kwargs)
    second.load_state_dict(state)
    while (row := second.pop()) is not None:
        got.append(row)
    for seq in seqs[split_at + 1 :]:
        second.push(seq)
        while (row := second.pop()) is not None:
            got.append(row)
    assert len(got) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
