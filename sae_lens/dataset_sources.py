"""Where datasets come from: the embedded corpus, a folder written by `save_to_disk`, local
data files (a file, a glob or a folder of them), or a Hugging Face hub name. Also finds the
column that holds the tokens or the text."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, IterableDataset

from sae_lens.embedded import is_embedded_dataset, load_embedded_dataset

# File extension -> `datasets` builder that reads it.
DATA_FILE_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".arrow": "arrow",
    ".csv": "csv",
}
TOKENIZED_COLUMNS = ("tokens", "input_ids")
TEXT_COLUMNS = ("text", "problem")


def load_any_dataset(
    path: str,
    split: str = "train",
    streaming: bool = True,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> Dataset | IterableDataset:
    """Load one split of a dataset named by `path`.

    `path` may be the embedded corpus name ("pydoc-corpus"), a folder written with
    `Dataset.save_to_disk`/`DatasetDict.save_to_disk`, a local data file (.json, .jsonl,
    .parquet, .txt, .arrow, .csv), a glob or a folder of such files, or a hub dataset name.
    Extra keyword arguments go to `datasets.load_dataset` (data files and hub names).
    """
    if not path:
        raise ValueError("dataset path is empty: give a hub name, a local path or 'pydoc-corpus'")
    if is_embedded_dataset(path):
        return load_embedded_dataset(split=split, streaming=streaming)
    if _is_saved_dataset(path):
        return _load_saved_dataset(path, split, streaming)
    data_files = _local_data_files(path)
    if data_files is not None:
        builder = _builder_for(data_files, path)
        # the files are the split named before any slice ("train" of "train[:20]")
        split_name = split.split("[", 1)[0]
        return datasets.load_dataset(
            builder, data_files={split_name: data_files}, split=split, streaming=streaming, **kwargs
        )
    if not os.path.exists(path) and looks_like_local_path(path):
        raise FileNotFoundError(f"dataset path {path!r} does not exist")
    if os.path.exists(path):
        raise ValueError(
            f"{path!r} is neither a saved dataset (save_to_disk) nor holds data files with "
            f"an extension in {sorted(DATA_FILE_BUILDERS)}"
        )
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    return datasets.load_dataset(path, split=split, streaming=streaming, **kwargs)


HELD_OUT_SPLITS = ("test", "validation")


def held_out_split(path: str) -> str | None:
    """The split of the dataset named by `path` that training does not read ("test" or
    "validation"), or None when it has none: local data files are one split, and a hub
    dataset's splits are asked of the hub (None when it cannot be reached)."""
    if is_embedded_dataset(path):
        return "test"
    if _is_saved_dataset(path):
        loaded = datasets.load_from_disk(path)
        names = list(loaded) if isinstance(loaded, DatasetDict) else []
    elif _local_data_files(path) is not None or os.path.exists(path):
        return None
    else:
        try:
            names = datasets.get_dataset_split_names(path)
        except Exception:  # offline, unknown name, or a dataset without split metadata
            return None
    return next((name for name in HELD_OUT_SPLITS if name in names), None)


def tokenized_row_length(path: str, trust_remote_code: bool = False) -> int | None:
    """The tokens per row of the (train split of the) dataset at `path`, read from its
    first row; None when it holds text. A ValueError when it has no rows."""
    dataset = load_any_dataset(
        path, split="train", streaming=True, trust_remote_code=trust_remote_code
    )
    first = next(iter(dataset), None)
    if first is None:
        raise ValueError(f"dataset {path!r} is empty: it has no rows")
    tokens = first.get("tokens") or first.get("input_ids")
    return None if tokens is None else len(tokens)


def find_tokens_column(columns: Iterable[str]) -> tuple[str, bool]:
    """The column holding the data and whether it is tokenized: `tokens`/`input_ids`
    (tokenized) are preferred over `text`/`problem` (raw text)."""
    columns = list(columns)
    for name in TOKENIZED_COLUMNS:
        if name in columns:
            return name, True
    for name in TEXT_COLUMNS:
        if name in columns:
            return name, False
    raise ValueError(
        f"dataset has columns {columns}, none of the accepted ones "
        f"{[*TOKENIZED_COLUMNS, *TEXT_COLUMNS]}: rename the column with tokens or text"
    )


def looks_like_local_path(path: str) -> bool:
    """Whether `path` can only name a local file or folder: it starts with /, ./, ../ or ~,
    or ends in a data-file extension (a hub name, `owner/name`, does neither)."""
    return (
        path.startswith(("./", "../", "~", ".\\", "..\\"))
        or os.path.isabs(path)
        or _extension(path) in DATA_FILE_BUILDERS
    )


def _is_saved_dataset(path: str) -> bool:
    return os.path.isdir(path) and (
        os.path.exists(os.path.join(path, "state.json"))
        or os.path.exists(os.path.join(path, "dataset_dict.json"))
    )


def _load_saved_dataset(path: str, split: str, streaming: bool) -> Dataset | IterableDataset:
    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise ValueError(
                f"saved dataset {path!r} has splits {list(loaded)}, not the requested {split!r}"
            )
        loaded = loaded[split]
    return loaded.to_iterable_dataset() if streaming else loaded


def _local_data_files(path: str) -> list[str] | None:
    """The data files `path` names (a file, a glob or a folder), or None if it names none."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        candidates = glob.glob(os.path.join(path, "**", "*"), recursive=True)
    elif glob.has_magic(path):
        candidates = glob.glob(path, recursive=True)
        if not candidates:
            raise ValueError(f"no files match the pattern {path!r}")
    else:
        return None
    files = sorted(
        f for f in candidates if os.path.isfile(f) and _extension(f) in DATA_FILE_BUILDERS
    )
    return files or None


def _extension(file: str) -> str:
    return os.path.splitext(file)[1].lower()


def _builder_for(files: list[str], path: str) -> str:
    builders = {DATA_FILE_BUILDERS.get(_extension(f)) for f in files}
    if None in builders:
        raise ValueError(
            f"unsupported data file type in {path!r}: expected one of {sorted(DATA_FILE_BUILDERS)}"
        )
    if len(builders) > 1:
        raise ValueError(
            f"{path!r} mixes data file types {sorted(b for b in builders if b)}: use one type"
        )
    return builders.pop()  # type: ignore[return-value]
