"""The embedded corpus: deterministic, split, cached atomically, loadable as a Dataset."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest

from sae_lens.embedded import (
    EMBEDDED_DATASET_NAME,
    corpus,
    is_embedded_dataset,
    load_embedded_dataset,
)

SMALL = ["colorsys", "json", "textwrap"]  # a reduced corpus: topics + three modules


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The full corpus, built once into a private cache for this module."""
    root = tmp_path_factory.mktemp("sae_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAE_LENS_CACHE", str(root))
        corpus.ensure_corpus()
        yield root


@pytest.fixture
def use_full_cache(full_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAE_LENS_CACHE", str(full_cache))
    return full_cache


def _texts(cache: Path, key: str, split: str) -> list[str]:
    return list(datasets.load_from_disk(str(cache / "embedded_corpus" / key / split))["text"])


def test_name() -> None:
    assert EMBEDDED_DATASET_NAME == "pydoc-corpus"
    assert is_embedded_dataset("pydoc-corpus")
    assert not is_embedded_dataset("NeelNanda/pile-10k")


def test_build_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = corpus.corpus_key(SMALL)
    results = []
    for name in ("a", "b"):
        monkeypatch.setenv("SAE_LENS_CACHE", str(tmp_path / name))
        path = corpus.ensure_corpus(SMALL)
        assert path == tmp_path / name / "embedded_corpus" / key
        results.append({s: _texts(tmp_path / name, key, s) for s in corpus.SPLITS})
    assert results[0] == results[1]
    assert len(results[0]["train"]) > 50 and len(results[0]["test"]) > 0
    assert any("textwrap" in t for t in results[0]["train"] + results[0]["test"])


def test_key_names_format_and_python_version() -> None:
    import sys

    key = corpus.corpus_key()
    assert key.startswith(f"v{corpus.CORPUS_FORMAT_VERSION}-")
    assert ".".join(map(str, sys.version_info[:3])) in key
    assert corpus.corpus_key(SMALL) != key


def test_splits_disjoint_nonempty_and_large(use_full_cache: Path) -> None:
    train = load_embedded_dataset("train")
    test = load_embedded_dataset("test")
    assert isinstance(train, datasets.Dataset) and train.column_names == ["text"]
    train_texts, test_texts = train["text"], test["text"]
    assert len(test_texts) > 10
    assert not set(train_texts) & set(test_texts)
    assert sum(len(t) for t in train_texts) >= 2_000_000
    assert all(isinstance(t, str) and len(t) >= 40 for t in test_texts[:100])
    # the split rule is the documented stable hash of each document's group
    assert len(test_texts) < len(train_texts) / 5


def test_validation_alias_and_streaming(use_full_cache: Path) -> None:
    test = load_embedded_dataset("test")
    assert load_embedded_dataset("validation")["text"] == test["text"]
    stream = load_embedded_dataset("test", streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    first = [row["text"] for _, row in zip(range(3), stream, strict=False)]
    assert first == test["text"][:3]


def test_bad_split_names_allowed(use_full_cache: Path) -> None:
    with pytest.raises(ValueError, match="'train'.*'test'"):
        load_embedded_dataset("dev")


def test_stale_temp_and_partial_dirs_are_not_a_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAE_LENS_CACHE", str(tmp_path))
    key = corpus.corpus_key(SMALL)
    parent = tmp_path / "embedded_corpus"
    stale = parent / f".{key}{corpus._TMP_MARK}999999999-dead"  # pid that cannot exist
    (stale / "train").mkdir(parents=True)
    (parent / key / "train").mkdir(parents=True)  # a half-written final folder
    path = corpus.ensure_corpus(SMALL)
    assert (path / "corpus_info.json").is_file()
    assert len(_texts(tmp_path, key, "train")) > 50
    assert not stale.exists()


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAE_LENS_CACHE", str(tmp_path))

    def write_then_die(tmp: Path, docs: list[tuple[str, str]], key: str) -> None:
        (tmp / "train").mkdir(parents=True)
        raise KeyboardInterrupt  # killed mid-build

    monkeypatch.setattr(corpus, "_write_corpus", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        corpus.ensure_corpus(SMALL)
    assert os.listdir(tmp_path / "embedded_corpus") == []


def test_documents_come_in_a_fixed_shuffled_order(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    # Read from the start, the corpus must not serve all help topics first and all module
    # text last (a run's data, and its curves, would drift with the position).
    monkeypatch.setenv("SAE_LENS_CACHE", str(tmp_path))
    key = corpus.corpus_key(SMALL)
    corpus.ensure_corpus(SMALL)
    docs = corpus.collect_documents(SMALL)
    expected = [t for g, t in corpus.shuffled_documents(docs) if not corpus.is_test_group(g)]
    train = _texts(tmp_path, key, "train")
    assert train == expected
    kinds = [g.startswith("topic:") for g, _ in corpus.shuffled_documents(docs)]
    collected_kinds = [g.startswith("topic:") for g, _ in docs]
    assert collected_kinds == sorted(collected_kinds, reverse=True)  # topics, then modules
    first_quarter = kinds[: len(kinds) // 4]
    assert 0 < sum(first_quarter) < len(first_quarter)  # both kinds from the start
    assert corpus.shuffled_documents(list(reversed(docs))) == corpus.shuffled_documents(docs)
