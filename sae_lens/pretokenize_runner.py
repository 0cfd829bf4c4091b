"""Tokenize a text dataset once, concatenate and cut it into rows of `context_size` tokens,
shuffle, and save it (with a `sae_lens.json` metadata file) and/or push it to the hub.

Command line: `python -m sae_lens.pretokenize_runner --help` (every config field is a flag,
`--config FILE` supplies values that flags override).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sae_lens import __version__, logger
from sae_lens.cli_support import (
    CLIError,
    CommandLineParser,
    check_dataset_path,
    check_input_path,
    check_output_folder,
    did_you_mean,
    exit_code,
    parse_command_line,
    report_user_errors,
)
from sae_lens.config import PretokenizeRunnerConfig
from sae_lens.config_help import PRETOKENIZE_FIELD_HELP
from sae_lens.dataset_sources import load_any_dataset
from sae_lens.embedded import is_embedded_model, load_embedded_tokenizer
from sae_lens.tokenization_and_batching import concat_and_batch_sequences
from sae_lens.training.dataset_metadata import (
    PRETOKENIZE_METADATA_FILE,
    push_dataset_with_metadata,
)

SpecialToken = int | Literal["bos", "eos", "sep"] | None


@dataclass
class PretokenizedDatasetMetadata:
    """What a pretokenized dataset was made from; saved beside it as sae_lens.json."""

    sae_lens_version: str
    tokenizer_name: str
    original_dataset: str
    original_dataset_name: str | None
    original_split: str | None
    original_data_files: list[str] | None
    original_column_name: str | None
    context_size: int
    shuffled: bool
    seed: int | None
    begin_batch_token: SpecialToken
    begin_sequence_token: SpecialToken
    sequence_separator_token: SpecialToken


def metadata_from_config(cfg: PretokenizeRunnerConfig) -> PretokenizedDatasetMetadata:
    return PretokenizedDatasetMetadata(
        sae_lens_version=__version__,
        tokenizer_name=cfg.tokenizer_name,
        original_dataset=cfg.dataset_path,
        original_dataset_name=cfg.dataset_name,
        original_split=cfg.split,
        original_data_files=cfg.data_files,
        original_column_name=cfg.column_name,
        context_size=cfg.context_size,
        shuffled=cfg.shuffle,
        seed=cfg.seed,
        begin_batch_token=cfg.begin_batch_token,
        begin_sequence_token=cfg.begin_sequence_token,
        sequence_separator_token=cfg.sequence_separator_token,
    )


def get_special_token_from_cfg(
    cfg_token: SpecialToken, tokenizer: PreTrainedTokenizerBase
) -> int | None:
    """The token id a config entry names: an int as is, 'bos'/'eos'/'sep' from the
    tokenizer (None, with a warning, if the tokenizer has no such token), None as None."""
    if cfg_token is None or isinstance(cfg_token, int):
        return cfg_token
    if cfg_token not in ("bos", "eos", "sep"):
        raise ValueError(
            f"special token must be an int, 'bos', 'eos', 'sep' or None, got {cfg_token!r}"
        )
    token_id = getattr(tokenizer, f"{cfg_token}_token_id")
    if token_id is None:
        logger.warning(f"The tokenizer has no {cfg_token} token: it will not be inserted")
    return token_id


def pretokenize_dataset(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    cfg: PretokenizeRunnerConfig,
) -> Dataset | IterableDataset:
    """Tokenize `cfg.column_name`, concatenate each map batch of texts into rows of
    `cfg.context_size` tokens (column "input_ids"), shuffle with `cfg.seed`, and set the
    torch format. A streamed `dataset` gives a lazy `IterableDataset` (as in 5.6.0)."""
    if (cfg.streaming or isinstance(dataset, IterableDataset)) and cfg.num_proc > 1:
        raise ValueError("num_proc must be 1 when streaming is True")
    special = {
        "begin_batch_token_id": get_special_token_from_cfg(cfg.begin_batch_token, tokenizer),
        "begin_sequence_token_id": get_special_token_from_cfg(cfg.begin_sequence_token, tokenizer),
        "sequence_separator_token_id": get_special_token_from_cfg(
            cfg.sequence_separator_token, tokenizer
        ),
    }
    column, context_size = cfg.column_name, cfg.context_size

    def tokenize_and_chunk(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        token_rows = tokenizer(batch[column], verbose=False)["input_ids"]
        sequences = (torch.tensor(row, dtype=torch.long) for row in token_rows)
        chunks = concat_and_batch_sequences(sequences, context_size, **special)
        return {"input_ids": [chunk.tolist() for chunk in chunks]}

    columns = _column_names(dataset)
    if column not in columns:
        hint = did_you_mean(column, columns)
        raise ValueError(f"dataset has columns {columns}, not column_name {column!r}{hint}")
    map_options: dict[str, Any] = {"batched": True, "batch_size": cfg.pretokenize_batch_size}
    if isinstance(dataset, Dataset):
        map_options.update(num_proc=cfg.num_proc if cfg.num_proc > 1 else None, desc="Tokenizing")
    tokenized = dataset.map(tokenize_and_chunk, remove_columns=columns, **map_options)
    if cfg.shuffle:
        tokenized = tokenized.shuffle(seed=cfg.seed)
    if isinstance(tokenized, IterableDataset):
        return tokenized.with_format("torch")
    tokenized.set_format(type="torch", columns=["input_ids"])
    return tokenized


def _column_names(dataset: Dataset | IterableDataset) -> list[str]:
    """The dataset's columns (for a stream of unknown features: its first row's keys)."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)
    return [] if first is None else list(first)


def _materialize(dataset: IterableDataset) -> Dataset:
    """Write a streamed dataset to an arrow cache file so it can be saved or uploaded."""
    rows = dataset.with_format(None)
    dataset_out = Dataset.from_generator(lambda: iter(rows), features=rows.features)
    dataset_out.set_format(type="torch", columns=["input_ids"])
    return dataset_out


def push_to_hugging_face_hub(dataset: Dataset, cfg: PretokenizeRunnerConfig) -> None:
    """Upload the dataset to `cfg.hf_repo_id`, then its sae_lens.json metadata."""
    push_dataset_with_metadata(
        dataset,
        cfg,
        PRETOKENIZE_METADATA_FILE,
        _metadata_json(cfg),
        commit_message="Add sae_lens metadata",
    )


def _metadata_json(cfg: PretokenizeRunnerConfig) -> str:
    return json.dumps(asdict(metadata_from_config(cfg)), indent=2, ensure_ascii=False)


def _load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    tokenizer = (
        load_embedded_tokenizer()
        if is_embedded_model(name)
        else AutoTokenizer.from_pretrained(name)
    )
    tokenizer.model_max_length = sys.maxsize  # long texts are chunked, not truncated
    return tokenizer


class PretokenizeRunner:
    """Pretokenize the dataset of a `PretokenizeRunnerConfig`; save and/or upload it."""

    def __init__(self, cfg: PretokenizeRunnerConfig):
        self.cfg = cfg

    def run(self) -> Dataset | IterableDataset:
        """Pretokenize, save and/or upload; returns the tokenized dataset (torch format):
        with `cfg.streaming`, a lazy `IterableDataset` unless it is saved or uploaded, which
        needs all its rows (the `Dataset` written is returned then)."""
        cfg = self.cfg
        if cfg.save_path is None and cfg.hf_repo_id is None:
            logger.warning("Neither save_path nor hf_repo_id is set: the result is only returned")
        if (
            cfg.save_path is not None
            and Path(cfg.save_path).exists()
            and any(Path(cfg.save_path).iterdir())
        ):
            raise ValueError(
                f"save_path {cfg.save_path!r} exists and is not empty: choose a new folder"
            )
        tokenizer = _load_tokenizer(cfg.tokenizer_name)
        dataset = self._load_dataset()
        tokenized = pretokenize_dataset(dataset, tokenizer, cfg)
        if cfg.save_path is None and cfg.hf_repo_id is None:
            return tokenized
        stored = _materialize(tokenized) if isinstance(tokenized, IterableDataset) else tokenized
        if cfg.save_path is not None:
            stored.save_to_disk(cfg.save_path)
            (Path(cfg.save_path) / PRETOKENIZE_METADATA_FILE).write_text(_metadata_json(cfg))
            logger.info(f"Saved {len(stored)} rows of {cfg.context_size} tokens to {cfg.save_path}")
        if cfg.hf_repo_id is not None:
            push_to_hugging_face_hub(stored, cfg)
        return stored

    def _load_dataset(self) -> Dataset | IterableDataset:
        cfg = self.cfg
        extra = {
            key: value
            for key, value in (
                ("name", cfg.dataset_name),
                ("data_dir", cfg.data_dir),
                ("data_files", cfg.data_files),
            )
            if value is not None
        }
        dataset = load_any_dataset(
            cfg.dataset_path,
            split=cfg.split,  # type: ignore[arg-type]
            streaming=cfg.streaming,
            trust_remote_code=bool(cfg.dataset_trust_remote_code),
            **extra,
        )
        if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
            raise ValueError(f"dataset has splits {list(dataset)}: set split to one of them")
        return dataset


def pretokenize_runner(cfg: PretokenizeRunnerConfig) -> Dataset | IterableDataset:
    """Deprecated alias of `PretokenizeRunner(cfg).run()`."""
    warnings.warn(
        "pretokenize_runner is deprecated: use PretokenizeRunner", DeprecationWarning, stacklevel=2
    )
    return PretokenizeRunner(cfg).run()


PROG = "python -m sae_lens.pretokenize_runner"


def build_cli_parser() -> CommandLineParser:
    """The parser of `python -m sae_lens.pretokenize_runner`."""
    parser = CommandLineParser(
        prog=PROG,
        description="Tokenize a text dataset, concatenate and cut it into rows of "
        "context_size tokens, shuffle, and save it (with sae_lens.json metadata) and/or push "
        "it to the hub. Every PretokenizeRunnerConfig field is a flag. Mistakes exit with code "
        "2 and one line naming the culprit.",
    )
    parser.add_config_option()
    parser.add_fields(PretokenizeRunnerConfig, PRETOKENIZE_FIELD_HELP)
    return parser


def parse_cli_config(argv: Sequence[str]) -> PretokenizeRunnerConfig:
    """The pretokenize config from command-line arguments (`--config FILE`, then flags),
    checked before any dataset or tokenizer is loaded."""
    cfg = PretokenizeRunnerConfig(**parse_command_line(build_cli_parser(), argv))
    check_dataset_path(cfg.dataset_path)
    if not is_embedded_model(cfg.tokenizer_name):
        check_input_path(cfg.tokenizer_name, "tokenizer_name")
    if cfg.save_path is None and cfg.hf_repo_id is None:
        raise CLIError(
            "set --save_path (a new folder) or --hf_repo_id: otherwise nothing is written"
        )
    if cfg.save_path is not None:
        check_output_folder(cfg.save_path, "save_path")
    return cfg


def main(args: Sequence[str] | None = None) -> int:
    """`python -m sae_lens.pretokenize_runner`; returns the exit code: 0 done, 2 a mistake
    (one line on stderr, nothing saved)."""
    argv = sys.argv[1:] if args is None else list(args)
    return exit_code(report_user_errors(lambda: _pretokenize_from_command_line(argv)))


def _check_column(cfg: PretokenizeRunnerConfig) -> None:
    """Refuse a `column_name` the dataset lacks from its first row, streamed, before the
    whole dataset is loaded."""
    peek = PretokenizeRunner(dataclasses.replace(cfg, streaming=True, num_proc=1))
    columns = _column_names(peek._load_dataset())
    if not columns:
        raise CLIError(f"dataset {cfg.dataset_path!r} is empty: it has no rows")
    if cfg.column_name not in columns:
        hint = did_you_mean(cfg.column_name, columns)
        raise CLIError(f"dataset has columns {columns}, not column_name {cfg.column_name!r}{hint}")


def _pretokenize_from_command_line(argv: list[str]) -> int:
    cfg = parse_cli_config(argv)
    _check_column(cfg)
    dataset = PretokenizeRunner(cfg).run()
    n_rows = len(dataset) if isinstance(dataset, Dataset) else 0
    where = " and ".join(
        place
        for place in (cfg.save_path, cfg.hf_repo_id and f"hub dataset {cfg.hf_repo_id}")
        if place
    )
    print(
        f"pretokenized {cfg.dataset_path}: {n_rows:,} rows of {cfg.context_size} tokens "
        f"({n_rows * cfg.context_size:,} tokens) with {cfg.tokenizer_name}, saved to {where}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
