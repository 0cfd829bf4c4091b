"""Fetching SAE files from the Hugging Face hub, or from its local cache when offline.

`hf_hub_download` / `snapshot_download` read `HF_HUB_CACHE` (or `HF_HOME`) and
`HF_HUB_OFFLINE=1`: with the files in the cache nothing goes over the network.
Errors become one-line `FileNotFoundError`s naming the repo, the file and the cache.
"""

from __future__ import annotations

from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def repo_path(folder: str, filename: str) -> str:
    """`folder/filename` inside a repo ('' or '.' for the repo root)."""
    folder = folder.strip("/")
    return filename if folder in ("", ".") else f"{folder}/{filename}"


def _unreachable_message(repo_id: str, what: str) -> str:
    reason = (
        "HF_HUB_OFFLINE is set"
        if constants.HF_HUB_OFFLINE
        else "the Hugging Face hub could not be reached"
    )
    return (
        f"{what} of Hugging Face repo {repo_id!r} is not in the local cache "
        f"({constants.HF_HUB_CACHE}) and {reason}; download it once with network access "
        f"or point HF_HUB_CACHE at a cache that has it"
    )


def download(repo_id: str, filename: str, force_download: bool = False) -> str:
    """Local path of `filename` from `repo_id`, downloading it unless it is cached."""
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, force_download=force_download)
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(_unreachable_message(repo_id, repr(filename))) from e
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise FileNotFoundError(
            f"Hugging Face repo {repo_id!r} not found (or private/gated: log in with "
            f"`hf auth login`)"
        ) from e
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"{filename!r} not found in Hugging Face repo {repo_id!r}") from e


def download_optional(repo_id: str, filename: str, force_download: bool = False) -> str | None:
    """Like `download`, but None when the repo (or, offline, the cache) lacks the file."""
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, force_download=force_download)
    except EntryNotFoundError:  # includes LocalEntryNotFoundError (offline, not cached)
        return None


def download_folder(repo_id: str, folder: str, force_download: bool = False) -> str:
    """Local path of `folder` (or single file) `folder` of `repo_id`, with everything in it."""
    folder = folder.strip("/")
    patterns = None if folder in ("", ".") else [folder, f"{folder}/*"]
    try:
        root = snapshot_download(
            repo_id=repo_id, allow_patterns=patterns, force_download=force_download
        )
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(_unreachable_message(repo_id, f"folder {folder!r}")) from e
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise FileNotFoundError(
            f"Hugging Face repo {repo_id!r} not found (or private/gated: log in with "
            f"`hf auth login`)"
        ) from e
    return root if folder in ("", ".") else f"{root}/{folder}"
