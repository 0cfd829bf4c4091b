"""load_any_dataset resolves every kind of source; find_tokens_column picks the data column."""

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from datasets import Dataset, DatasetDict, IterableDataset

import sae_lens.dataset_sources as sources
from sae_lens.dataset_sources import find_tokens_column, load_any_dataset

TEXTS = ["alpha beta", "gamma", "delta epsilon zeta"]


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def texts_of(dataset: Dataset | IterableDataset) -> list[str]:
    return [row["text"] for row in dataset]


def test_single_jsonl_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", TEXTS)
    loaded = load_any_dataset(str(tmp_path / "a.jsonl"), streaming=False)
    assert isinstance(loaded, Dataset)
    assert texts_of(loaded) == TEXTS


def test_folder_and_glob_of_files_in_name_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", TEXTS[1:])
    write_jsonl(tmp_path / "a.jsonl", TEXTS[:1])
    for path in (str(tmp_path), str(tmp_path / "*.jsonl")):
        loaded = load_any_dataset(path, streaming=True)
        assert isinstance(loaded, IterableDataset)
        assert texts_of(loaded) == TEXTS


def test_text_and_parquet_files(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("\n".join(TEXTS) + "\n")
    assert texts_of(load_any_dataset(str(tmp_path / "t.txt"), streaming=True)) == TEXTS
    Dataset.from_dict({"text": TEXTS}).to_parquet(str(tmp_path / "p.parquet"))
    assert texts_of(load_any_dataset(str(tmp_path / "p.parquet"), streaming=False)) == TEXTS


def test_saved_dataset_folder_streaming_or_not(tmp_path: Path) -> None:
    Dataset.from_dict({"tokens": [[1, 2], [3, 4]]}).save_to_disk(str(tmp_path / "ds"))
    mapped = load_any_dataset(str(tmp_path / "ds"), streaming=False)
    streamed = load_any_dataset(str(tmp_path / "ds"), streaming=True)
    assert isinstance(mapped, Dataset) and isinstance(streamed, IterableDataset)
    assert [r["tokens"] for r in mapped] == [r["tokens"] for r in streamed] == [[1, 2], [3, 4]]


def test_saved_dataset_dict_picks_the_split(tmp_path: Path) -> None:
    DatasetDict(
        {"train": Dataset.from_dict({"text": ["tr"]}), "test": Dataset.from_dict({"text": ["te"]})}
    ).save_to_disk(str(tmp_path / "dd"))
    assert texts_of(load_any_dataset(str(tmp_path / "dd"), split="test", streaming=False)) == ["te"]
    with pytest.raises(
        ValueError, match=r"has splits \['train', 'test'\], not the requested 'dev'"
    ):
        load_any_dataset(str(tmp_path / "dd"), split="dev")


def test_bad_local_paths_get_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(ValueError, match="neither a saved dataset"):
        load_any_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="no files match the pattern"):
        load_any_dataset(str(tmp_path / "*.parquet"))
    write_jsonl(tmp_path / "a.jsonl", TEXTS)
    (tmp_path / "b.csv").write_text("text\nx\n")
    with pytest.raises(ValueError, match=r"mixes data file types \['csv', 'json'\]"):
        load_any_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="dataset path is empty"):
        load_any_dataset("")


def test_embedded_corpus_name_goes_to_the_embedded_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []
    marker = Dataset.from_dict({"text": ["embedded"]})

    def fake(split: str = "train", streaming: bool = False) -> Dataset:
        calls.append((split, streaming))
        return marker

    monkeypatch.setattr(sources, "load_embedded_dataset", fake)
    assert load_any_dataset("pydoc-corpus", split="test", streaming=False) is marker
    assert calls == [("test", False)]


def test_hub_names_go_to_load_dataset_with_remote_code_off_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_load_dataset(path: str, **kwargs: Any) -> str:
        calls.append((path, kwargs))
        return "loaded"

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_any_dataset("org/some-dataset", split="validation") == "loaded"
    load_any_dataset("org/other", streaming=False, trust_remote_code=True)
    assert calls == [
        ("org/some-dataset", {"split": "validation", "streaming": True}),
        ("org/other", {"split": "train", "streaming": False, "trust_remote_code": True}),
    ]


def test_find_tokens_column_prefers_tokens_over_text() -> None:
    assert find_tokens_column(["text", "input_ids"]) == ("input_ids", True)
    assert find_tokens_column(["tokens", "input_ids"]) == ("tokens", True)
    assert find_tokens_column(["id", "problem"]) == ("problem", False)
    with pytest.raises(
        ValueError,
        match=r"columns \['id', 'body'\], none of the accepted ones \['tokens', 'input_ids', 'text', 'problem'\]",
    ):
        find_tokens_column(["id", "body"])


def test_held_out_split_of_every_kind_of_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sae_lens.dataset_sources import held_out_split

    assert held_out_split("pydoc-corpus") == "test"
    splits = {name: Dataset.from_dict({"text": [name]}) for name in ("train", "validation")}
    DatasetDict(splits).save_to_disk(str(tmp_path / "with_validation"))
    assert held_out_split(str(tmp_path / "with_validation")) == "validation"
    Dataset.from_dict({"text": TEXTS}).save_to_disk(str(tmp_path / "one_split"))
    assert held_out_split(str(tmp_path / "one_split")) is None
    write_jsonl(tmp_path / "data.jsonl", TEXTS)
    assert held_out_split(str(tmp_path / "data.jsonl")) is None  # files are one split

    asked: list[str] = []

    def split_names(path: str) -> list[str]:
        asked.append(path)
        if path == "offline/or-unknown":
            raise ConnectionError("no network")
        return ["train", "test"] if path == "org/with-test" else ["train"]

    monkeypatch.setattr(datasets, "get_dataset_split_names", split_names)
    assert held_out_split("org/with-test") == "test"
    assert held_out_split("org/train-only") is None
    assert held_out_split("offline/or-unknown") is None
    assert asked == ["org/with-test", "org/train-only", "offline/or-unknown"]


def test_a_sliced_split_of_local_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", TEXTS)
    sliced = load_any_dataset(str(tmp_path / "data.jsonl"), split="train[:2]", streaming=False)
    assert texts_of(sliced) == TEXTS[:2]
