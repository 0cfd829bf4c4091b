"""The embedded default text corpus, built from documentation that ships with CPython.

The corpus ("pydoc-corpus") holds the pydoc help topics, the docstrings of a fixed list of
standard-library modules and the source of those that are pure Python, as documents in a
fixed pseudo-random order (so the start of the corpus is like the rest). It is built on
first use (a few seconds), in an isolated interpreter so that only the standard library
is seen, and cached under ``$SAE_LENS_CACHE/embedded_corpus/<key>`` (default cache:
``~/.cache/sae_lens``). The key holds the corpus format version and the Python version,
since docstrings change between Python releases. The cache is written atomically: it is
built in a temporary folder next to it and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import datasets

EMBEDDED_DATASET_NAME = "pydoc-corpus"
CORPUS_FORMAT_VERSION = 2  # 2: documents in a fixed pseudo-random order
TEST_EVERY = 20  # one document group in TEST_EVERY (by stable hash) goes to the test split
SPLITS = ("train", "test")
SPLIT_ALIASES = {"train": "train", "test": "test", "validation": "test"}
_INFO_FILE = "corpus_info.json"
_TMP_MARK = ".tmp-"
_COLLECTOR = Path(__file__).with_name("_collect.py")


def is_embedded_dataset(path: str) -> bool:
    """True if ``path`` names the embedded corpus (``"pydoc-corpus"``)."""
    return isinstance(path, str) and path.strip() == EMBEDDED_DATASET_NAME


def cache_root() -> Path:
    """Root of the sae_lens cache: ``$SAE_LENS_CACHE`` or ``~/.cache/sae_lens``."""
    return Path(os.environ.get("SAE_LENS_CACHE", Path.home() / ".cache" / "sae_lens"))


def corpus_key(modules: list[str] | None = None, include_source: bool = True) -> str:
    """Cache key: format version, Python implementation and version, and the options."""
    py = f"{platform.python_implementation().lower()}{'.'.join(map(str, sys.version_info[:3]))}"
    key = f"v{CORPUS_FORMAT_VERSION}-{py}"
    if modules is not None or not include_source:
        spec = json.dumps([modules, include_source]).encode()
        key += "-" + hashlib.sha256(spec).hexdigest()[:12]
    return key


def is_test_group(group: str) -> bool:
    """Stable split rule: a document group is held out if its sha256 is 0 mod TEST_EVERY."""
    return int(hashlib.sha256(group.encode("utf-8")).hexdigest(), 16) % TEST_EVERY == 0


def collect_documents(
    modules: list[str] | None = None, include_source: bool = True
) -> list[tuple[str, str]]:
    """Run the collector in an isolated interpreter; return ``(group, text)`` documents."""
    if not sys.executable:
        raise RuntimeError("cannot build the embedded corpus: sys.executable is not set")
    cmd = [sys.executable, "-I", "-S", str(_COLLECTOR)]
    if not include_source:
        cmd.append("--no-source")
    cmd.extend(modules or [])
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise RuntimeError(f"building the embedded corpus failed: {' '.join(err)}")
    return [(g, t) for g, t in json.loads(proc.stdout.decode("utf-8"))]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_tmp(parent: Path, key: str) -> None:
    """Remove temp build folders for ``key`` whose building process no longer runs."""
    for tmp in parent.glob(f".{key}{_TMP_MARK}*"):
        try:
            pid = int(tmp.name[len(f".{key}{_TMP_MARK}") :].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _is_complete(path: Path) -> bool:
    return (path / _INFO_FILE).is_file() and all((path / s).is_dir() for s in SPLITS)


def shuffled_documents(docs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The documents in a fixed pseudo-random order (by the sha256 of group and text), so
    a run reading the corpus from the start sees every kind of text throughout, not the
    help topics first and the source code last."""

    def order(doc: tuple[str, str]) -> str:
        group, text = doc
        return hashlib.sha256(f"{group}\0{text}".encode()).hexdigest()

    return sorted(docs, key=order)


def _write_corpus(tmp: Path, docs: list[tuple[str, str]], key: str) -> None:
    rows: dict[str, list[str]] = {s: [] for s in SPLITS}
    for group, text in shuffled_documents(docs):
        rows["test" if is_test_group(group) else "train"].append(text)
    info: dict[str, object] = {"name": EMBEDDED_DATASET_NAME, "key": key}
    for split, texts in rows.items():
        if not texts:
            raise RuntimeError(f"embedded corpus split {split!r} came out empty")
        datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp / split))
        info[split] = {"rows": len(texts), "chars": sum(map(len, texts))}
    (tmp / _INFO_FILE).write_text(json.dumps(info, indent=2))


def ensure_corpus(modules: list[str] | None = None, include_source: bool = True) -> Path:
    """Return the cached corpus folder, building it atomically first if it is missing.

    ``modules``/``include_source`` restrict the corpus (used by tests); the default is
    the full corpus.
    """
    key = corpus_key(modules, include_source)
    parent = cache_root() / "embedded_corpus"
    final = parent / key
    if _is_complete(final):
        return final
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(parent, key)
    tmp = parent / f".{key}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_corpus(tmp, collect_documents(modules, include_source), key)
        if final.exists() and not _is_complete(final):
            shutil.rmtree(final, ignore_errors=True)  # left by hand or a foreign tool
        try:
            os.replace(tmp, final)
        except OSError:
            if not _is_complete(final):  # another process won the race if complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_embedded_dataset(
    split: str = "train", streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """Load a split ("train", "test" or its alias "validation") of the embedded corpus as a
    ``datasets.Dataset`` with a ``text`` column (an ``IterableDataset`` if ``streaming``)."""
    if split not in SPLIT_ALIASES:
        allowed = ", ".join(repr(s) for s in SPLIT_ALIASES)
        raise ValueError(
            f"unknown split {split!r} for {EMBEDDED_DATASET_NAME}; use one of {allowed}"
        )
    ds = datasets.load_from_disk(str(ensure_corpus() / SPLIT_ALIASES[split]))
    assert isinstance(ds, datasets.Dataset)
    return ds.to_iterable_dataset() if streaming else ds
