"""`--config FILE` is read the same way by every command line: mistakes in the file are one
line naming the file, the line or the key, and the closest valid key; its values are read
as the flags read them (2e5 is an exact integer), and flags override them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sae_lens import cache_activations_runner, evals, sae_training_runner
from sae_lens.cli_support import parse_command_line
from sae_lens.pretokenize_runner import parse_cli_config as parse_pretokenize_config

from .conftest import write

CLIS = ["train", "cache", "pretokenize", "evals"]
# a misspelt key of each command line and the key it means
TYPOS = {
    "train": ("l1_coeficient", "l1_coefficient"),
    "cache": ("hook_nme", "hook_name"),
    "pretokenize": ("context_sise", "context_size"),
    "evals": ("output_dirr", "output_dir"),
}


@pytest.mark.parametrize("cli", CLIS)
def test_a_missing_config_file(cli: str, expect_mistake: Callable[..., str]) -> None:
    expect_mistake(cli, ["--config", "nope.yaml"], "--config file 'nope.yaml' does not exist")


@pytest.mark.parametrize("cli", CLIS)
def test_malformed_yaml_names_its_line(
    cli: str, workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    write(workdir / "run.yaml", "seed: 1\nhook_name: [blocks.0\n")
    expect_mistake(
        cli, ["--config", "run.yaml"], "--config file 'run.yaml' is not valid YAML: line 3"
    )


@pytest.mark.parametrize("cli", CLIS)
def test_a_misspelt_key_gets_the_closest_valid_one(
    cli: str, workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    typo, meant = TYPOS[cli]
    write(workdir / "run.yaml", f"{typo}: 3\n")
    expect_mistake(cli, ["--config", "run.yaml"], f"unknown key '{typo}' (did you mean '{meant}'?)")


def test_malformed_json_names_its_line(workdir: Path, expect_mistake: Callable[..., str]) -> None:
    write(workdir / "run.json", '{\n  "lr": 0.1,\n  "seed": 3,\n}\n')
    expect_mistake("train", ["--config", "run.json"], "is not valid JSON: line 4, column 1")


def test_a_config_file_of_another_format(workdir: Path, expect_mistake: Callable[..., str]) -> None:
    write(workdir / "run.toml", "lr = 0.1\n")
    expect_mistake("train", ["--config", "run.toml"], "'run.toml' must end in .json, .yaml or .yml")


def test_a_folder_as_config_file(workdir: Path, expect_mistake: Callable[..., str]) -> None:
    (workdir / "configs").mkdir()
    expect_mistake("cache", ["--config", "configs"], "--config file 'configs' is a folder")


def test_a_config_file_that_is_not_a_mapping(
    workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    write(workdir / "run.yaml", "- lr: 0.1\n- seed: 2\n")
    expect_mistake("cache", ["--config", "run.yaml"], "must hold a mapping", "not a list")


def test_a_value_of_the_wrong_type_is_named_by_its_key(
    workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    write(workdir / "run.yaml", "training_tokens: 2.5e5x\n")
    expect_mistake(
        "train",
        ["--config", "run.yaml"],
        "key 'training_tokens' in --config file 'run.yaml': expected an integer, got '2.5e5x'",
    )


def test_a_fractional_token_count_is_refused(
    workdir: Path, expect_mistake: Callable[..., str]
) -> None:
    write(workdir / "run.yaml", "training_tokens: 1000.5\n")
    expect_mistake("train", ["--config", "run.yaml"], "'training_tokens'", "got 1000.5")


def test_yaml_numbers_in_scientific_notation_are_read_as_numbers(tmp_path: Path) -> None:
    # PyYAML reads `2e5` and `3e-4` as strings: an exact integer and a float are accepted.
    path = write(tmp_path / "run.yaml", "training_tokens: 2e5\nlr: 3e-4\nd_sae: 2.56e2\n")
    cfg = sae_training_runner.parse_cli_config(["--config", str(path), "--log_to_wandb", "0"])
    assert (cfg.training_tokens, cfg.lr, cfg.d_sae) == (200_000, 0.0003, 256)
    cfg = sae_training_runner.parse_cli_config(["--training_tokens", "1e6", "--log_to_wandb", "0"])
    assert cfg.training_tokens == 1_000_000


def test_every_cli_reads_the_file_and_lets_flags_override_it(tmp_path: Path) -> None:
    cache = write(
        tmp_path / "cache.yaml",
        "hook_name: blocks.1.hook_resid_pre\ncontext_size: 16\nseed: 7\ndevice: cpu\n",
    )
    cache_cfg = cache_activations_runner.parse_cli_config(["--config", str(cache), "--seed", "8"])
    assert (cache_cfg.hook_name, cache_cfg.hook_layer, cache_cfg.seed) == (
        "blocks.1.hook_resid_pre", 1, 8)  # fmt: skip
    assert cache_cfg.dataset_path == "pydoc-corpus" and cache_cfg.reuse_freed_memory is True

    pre = write(tmp_path / "pre.yaml", "context_size: 16\nseed: 7\nnum_proc: 1\n")
    pre_cfg = parse_pretokenize_config(
        [
            "--config",
            str(pre),
            "--seed",
            "9",
            "--dataset_path",
            "pydoc-corpus",
            "--save_path",
            str(tmp_path / "out"),
        ]  # fmt: skip
    )
    assert (pre_cfg.context_size, pre_cfg.seed, pre_cfg.num_proc) == (16, 9, 1)

    ev = write(tmp_path / "evals.json", '{"ctx_lens": [8, 16], "batch_size_prompts": 3}')
    values = parse_command_line(
        evals.build_arg_parser(), ["--config", str(ev), "--batch_size_prompts", "4"]
    )
    assert (values["ctx_lens"], values["batch_size_prompts"]) == ([8, 16], 4)

    run = write(tmp_path / "run.yaml", "seqpos_slice: [1, null]\nlr: 0.01\n")
    cfg = sae_training_runner.parse_cli_config(
        ["--config", str(run), "--lr", "0.02", "--log_to_wandb", "false"]
    )
    assert (cfg.seqpos_slice, cfg.lr) == ((1, None), 0.02)


def test_flags_read_as_their_field_types() -> None:
    cfg = sae_training_runner.parse_cli_config(
        ["--log_to_wandb", "--hook_head_index", "None", "--seqpos_slice", "1", "None",
         "--exclude_special_tokens", "[0, 3]", "--model_kwargs", '{"prepend_bos": false}']
    )  # fmt: skip
    assert cfg.log_to_wandb is True and cfg.hook_head_index is None
    assert cfg.seqpos_slice == (1, None) and cfg.exclude_special_tokens == [0, 3]
    assert cfg.model_kwargs == {"prepend_bos": False}
    pre_cfg = parse_pretokenize_config(
        ["--dataset_path", "pydoc-corpus", "--save_path", "out", "--begin_batch_token", "7",
         "--sequence_separator_token", "None", "--data_files", "a.jsonl", "b.jsonl"]
    )  # fmt: skip
    assert (pre_cfg.begin_batch_token, pre_cfg.sequence_separator_token) == (7, None)
    assert pre_cfg.data_files == ["a.jsonl", "b.jsonl"]
