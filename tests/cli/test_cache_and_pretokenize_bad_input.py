"""`python -m sae_lens.cache_activations_runner` and `python -m sae_lens.pretokenize_runner`:
mistakes are one line and exit code 2, leaving no folder behind; a run prints what it wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from datasets import Dataset

from .conftest import TINY_CACHE, TINY_PRETOKENIZE, run_main, write


def test_cache_output_that_is_a_file(workdir: Path, expect_mistake: Callable[..., str]) -> None:
    write(workdir / "acts", "a file")
    expect_mistake(
        "cache",
        [*TINY_CACHE, "--new_cached_activations_path", "acts"],
        "new_cached_activations_path 'acts' is a file",
    )


def test_cache_into_a_finished_cache(workdir: Path, expect_mistake: Callable[..., str]) -> None:
    write(workdir / "acts" / "state.json", "{}")
    expect_mistake(
        "cache",
        [*TINY_CACHE, "--new_cached_activations_path", "acts"],
        "acts already holds a finished activation cache",
    )


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--hook_name", "blocks.0.hook_resid_pots"], ["did you mean 'blocks.0.hook_resid_post'"]),
        (["--d_in", "64"], ["d_in=64", "whose width is 128"]),
        (["--dataset_path", "./missing.jsonl"], ["dataset_path './missing.jsonl' does not exist"]),
        (["--model_batch_size", "0"], ["model_batch_size must be > 0, got 0"]),
        (["--dtype", "float31"], ["float31"]),
    ],
)  # fmt: skip
def test_cache_mistakes(
    argv: list[str], fragments: list[str], expect_mistake: Callable[..., str]
) -> None:
    expect_mistake(
        "cache", [*TINY_CACHE, *argv, "--new_cached_activations_path", "acts"], *fragments
    )


def test_cache_of_an_empty_dataset(workdir: Path, expect_mistake: Callable[..., str]) -> None:
    write(workdir / "empty.jsonl", "")
    expect_mistake(
        "cache",
        [*TINY_CACHE, "--dataset_path", "empty.jsonl", "--new_cached_activations_path", "acts"],
        "'empty.jsonl' is empty",
    )


def test_cache_on_a_device_this_machine_lacks(
    without_cuda: None, expect_mistake: Callable[..., str]
) -> None:
    expect_mistake("cache", [*TINY_CACHE, "--device", "cuda"], "device 'cuda'")


def test_cache_needs_no_flag_but_the_sizes_and_prints_what_it_wrote(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main("cache", [*TINY_CACHE, "--new_cached_activations_path", "acts"]) == 0
    out = capsys.readouterr().out
    written = Dataset.load_from_disk("acts")
    assert len(written) * 16 >= 256
    assert out.splitlines()[-1] == (
        f"cached {len(written):,} sequences x 16 tokens = {len(written) * 16:,} activations of "
        f"blocks.0.hook_resid_post (d_in=128, float32, {len(written) * 16 * 512 / 1e9:.3f} GB) "
        "in acts"
    )


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        ([], ["set --save_path (a new folder) or --hf_repo_id"]),
        (["--save_path", "out", "--column_name", "txt"], ["not column_name 'txt' (did you mean 'text'?)"]),
        (["--save_path", "out", "--begin_batch_token", "bso"], ["got 'bso' (did you mean 'bos'?)"]),
        (["--save_path", "out", "--dataset_path", "./none.jsonl"], ["dataset_path './none.jsonl' does not exist"]),
        (["--save_path", "out", "--tokenizer_name", "./no_tokenizer"], ["tokenizer_name './no_tokenizer' does not exist"]),
        (["--save_path", "out", "--context_size", "0"], ["context_size must be > 0, got 0"]),
    ],
)  # fmt: skip
def test_pretokenize_mistakes(
    argv: list[str], fragments: list[str], expect_mistake: Callable[..., str]
) -> None:
    expect_mistake("pretokenize", [*TINY_PRETOKENIZE, *argv], *fragments)


def test_pretokenize_an_empty_dataset(workdir: Path, expect_mistake: Callable[..., str]) -> None:
    write(workdir / "empty.jsonl", "")
    expect_mistake(
        "pretokenize",
        [*TINY_PRETOKENIZE, "--dataset_path", "empty.jsonl", "--save_path", "out"],
        "dataset 'empty.jsonl' is empty",
    )


def test_pretokenize_into_a_file_or_a_full_folder(
    workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    write(workdir / "out.txt", "x")
    expect_mistake("pretokenize", [*TINY_PRETOKENIZE, "--save_path", "out.txt"], "is a file")
    write(workdir / "full" / "old.arrow", "x")
    expect_mistake(
        "pretokenize", [*TINY_PRETOKENIZE, "--save_path", "full"], "'full' exists and is not empty"
    )


def test_pretokenize_prints_what_it_saved(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main("pretokenize", [*TINY_PRETOKENIZE, "--save_path", "out"]) == 0
    rows = len(Dataset.load_from_disk("out"))
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"pretokenized texts.jsonl: {rows:,} rows of 16 tokens ({rows * 16:,} tokens) with "
        "tiny-pydoc-gpt2, saved to out"
    )
