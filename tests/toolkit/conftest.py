"""An offline Hugging Face cache in a temporary folder, for loading "published" SAEs
whose files a test wrote itself.

huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE into `huggingface_hub.constants` when
it is imported, and its download functions read those module attributes at call time, so
the fixture patches the attributes (and sets the environment variables for anything that
reads them later).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class OfflineHubCache:
    """A cache laid out as `models--owner--name/{refs/main, snapshots/<commit>/...}`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def repo_folder(self, repo_id: str) -> Path:
        """The snapshot folder of `repo_id` (created, with refs/main pointing at it)."""
        repo_dir = self.root / ("models--" + repo_id.replace("/", "--"))
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text(COMMIT)
        snapshot = repo_dir / "snapshots" / COMMIT
        snapshot.mkdir(parents=True, exist_ok=True)
        return snapshot

    def folder(self, repo_id: str, path_in_repo: str) -> Path:
        """A folder inside the snapshot of `repo_id` (created)."""
        folder = self.repo_folder(repo_id) / path_in_repo
        folder.mkdir(parents=True, exist_ok=True)
        return folder


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OfflineHubCache:
    cache_dir = tmp_path / "hf_cache"
    cache_dir.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return OfflineHubCache(cache_dir)
