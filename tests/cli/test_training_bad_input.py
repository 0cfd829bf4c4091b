"""`python -m sae_lens.sae_training_runner`: every mistake below exits with code 2 and one
line naming the culprit (and the closest valid name), before any training and with nothing
written; most are found before the model loads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import TINY_TRAIN, write


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--training_tokens", "0"], ["training_tokens + finetuning_tokens = 0", "nothing would be trained"]),
        (["--training_tokens", "100"], ["less than one step of train_batch_size_tokens = 4,096"]),
        (["--training_tokens", "2.5"], ["argument --training_tokens: expected an integer, got '2.5'"]),
        (["--lr", "fast"], ["argument --lr: expected a number, got 'fast'"]),
        (["--l1_coeficient", "3"], ["--l1_coeficient", "(did you mean --l1_coefficient?)"]),
        (["--architecture", "topkk"], ["argument --architecture", "got 'topkk' (did you mean 'topk'?)"]),
        (["--normalize_activations", "layernorm"], ["normalize_activations must be one of", "got 'layernorm'; did you mean 'layer_norm'?"]),
        (["--device", "gpu"], ["device 'gpu' is not a torch device"]),
        (["--model_name", "gpt2-smal"], ["model_name 'gpt2-smal'", "(did you mean 'gpt2-small'?)"]),
        (["--dataset_path", "./no/such/corpus"], ["dataset_path './no/such/corpus' does not exist"]),
        (["--from_pretrained_path", "no_sae_here"], ["from_pretrained_path 'no_sae_here' does not exist"]),
        (["--resume", "--checkpoint_path", "no/run"], ["checkpoint_path 'no/run' is not a folder"]),
    ],
)  # fmt: skip
def test_a_mistake_found_before_loading(
    argv: list[str], fragments: list[str], expect_mistake: Callable[..., str]
) -> None:
    expect_mistake("train", [*argv, "--log_to_wandb", "false"], *fragments)


def test_a_device_this_machine_lacks(
    without_cuda: None, expect_mistake: Callable[..., str]
) -> None:
    expect_mistake("train", ["--device", "cuda"], "device 'cuda'", "CUDA is not available")
    expect_mistake("train", ["--act_store_device", "cuda:1"], "act_store_device 'cuda:1'")


def test_a_checkpoint_path_that_is_a_file(
    workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    write(workdir / "runs", "not a folder")
    expect_mistake("train", ["--checkpoint_path", "runs"], "checkpoint_path 'runs' is a file")
    expect_mistake("train", ["--checkpoint_path", "runs/a"], "lies under 'runs', which is a file")


def test_a_dataset_file_with_a_typo_gets_the_closest_file(
    workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    write(workdir / "corpus.jsonl", '{"text": "hello"}\n')
    expect_mistake("train", ["--dataset_path", "copus.jsonl"], "(did you mean 'corpus.jsonl'?)")


@pytest.mark.parametrize("content", ["", '{"text": ""}\n'])
def test_an_empty_dataset_file(
    content: str, workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    write(workdir / "empty.jsonl", content)
    expect_mistake(
        "train",
        [*TINY_TRAIN, "--dataset_path", "empty.jsonl", "--checkpoint_path", "runs"],
        "empty",
    )


def test_a_hook_the_model_lacks_gets_the_closest_hooks(
    expect_mistake: Callable[..., str],
) -> None:
    expect_mistake(
        "train",
        [*TINY_TRAIN, "--hook_name", "blocks.0.hook_resid_pots"],
        "'blocks.0.hook_resid_pots'",
        "did you mean 'blocks.0.hook_resid_post'",
    )


def test_a_d_in_that_is_not_the_hook_width(expect_mistake: Callable[..., str]) -> None:
    expect_mistake("train", [*TINY_TRAIN, "--d_in", "64"], "d_in=64", "whose width is 128")
