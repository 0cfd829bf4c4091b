"""Uploading SAEs to a Hugging Face repo, one folder per SAE id, in the sae_lens on-disk
format, so that `SAE.from_pretrained(repo_id, sae_id)` loads them back."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from tempfile import TemporaryDirectory

from huggingface_hub import HfApi
from tqdm.auto import tqdm

from sae_lens import logger
from sae_lens.sae import SAE
from sae_lens.saes.sae_folder import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME

README_FILENAME = "README.md"
UPLOADED_FILES = [SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME]


def upload_saes_to_huggingface(
    saes_dict: dict[str, SAE | Path | str],
    hf_repo_id: str,
    hf_revision: str = "main",
    show_progress: bool = True,
    add_default_readme: bool = True,
) -> None:
    """Upload SAEs to `hf_repo_id` at `hf_revision`, each under the folder named by its key.

    Values are SAE objects (saved to a temporary folder first) or paths to SAE folders
    (`cfg.json` + `sae_weights.safetensors`, optionally `sparsity.safetensors`). Every
    value and id is checked before anything is uploaded. The repo (and branch) is created
    when missing; a README model card is added unless the repo has one or
    `add_default_readme` is False.
    """
    if not saes_dict:
        raise ValueError("No SAEs to upload: saes_dict is empty")
    for sae_id, sae_ref in saes_dict.items():
        _validate_sae_id(sae_id)
        if not isinstance(sae_ref, SAE):
            validate_sae_folder(Path(sae_ref))

    api = HfApi()
    api.create_repo(repo_id=hf_repo_id, repo_type="model", exist_ok=True)
    if hf_revision != "main":
        api.create_branch(repo_id=hf_repo_id, branch=hf_revision, exist_ok=True)

    for sae_id, sae_ref in tqdm(
        saes_dict.items(), desc="Uploading SAEs", disable=not show_progress
    ):
        with TemporaryDirectory() as tmp_dir:
            folder = _build_sae_path(sae_ref, tmp_dir)
            api.upload_folder(
                folder_path=folder,
                path_in_repo=sae_id,
                repo_id=hf_repo_id,
                revision=hf_revision,
                repo_type="model",
                commit_message=f"Upload SAE {sae_id}",
                allow_patterns=UPLOADED_FILES,
            )

    if add_default_readme:
        if api.file_exists(hf_repo_id, README_FILENAME, revision=hf_revision):
            logger.info("%s already exists in %s, leaving it as it is", README_FILENAME, hf_repo_id)
        else:
            api.upload_file(
                path_or_fileobj=io.BytesIO(default_readme(hf_repo_id, saes_dict).encode("utf-8")),
                path_in_repo=README_FILENAME,
                repo_id=hf_repo_id,
                revision=hf_revision,
                repo_type="model",
                commit_message=f"Add {README_FILENAME}",
            )


def default_readme(repo_id: str, sae_ids: Iterable[str]) -> str:
    """The model card: library tag, the SAE ids, and how to load one."""
    lines = [
        "---",
        "library_name: saelens",
        "---",
        "",
        f"# Sparse autoencoders in {repo_id}",
        "",
        "SAEs in the sae_lens format (`cfg.json`, `sae_weights.safetensors`), one folder per id:",
        "",
        *(f"- `{sae_id}`" for sae_id in sae_ids),
        "",
        "Load one with:",
        "",
        "```python",
        "from sae_lens import SAE",
        "",
        f'sae, cfg_dict, sparsity = SAE.from_pretrained("{repo_id}", "<sae_id>")',
        "```",
    ]
    return "\n".join(lines) + "\n"


_create_default_readme = default_readme  # 5.6.0's name (its card's wording differs)


def validate_sae_folder(path: Path) -> None:
    """One-line error unless `path` is an SAE folder with a readable config."""
    _validate_sae_path(path)
    try:
        cfg = json.loads((path / SAE_CFG_FILENAME).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / SAE_CFG_FILENAME} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path / SAE_CFG_FILENAME} must hold a JSON object")


def _validate_sae_path(path: Path) -> None:
    """FileNotFoundError unless `path` is a folder with the SAE's config and weights files
    (5.6.0's name)."""
    if not path.is_dir():
        raise FileNotFoundError(f"SAE folder not found: {path}")
    for filename in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        if not (path / filename).is_file():
            raise FileNotFoundError(f"{path} is not an SAE folder: it has no {filename}")


def _repo_exists(api: HfApi, repo_id: str) -> bool:
    """Whether the hub has the model repo `repo_id` (5.6.0's helper)."""
    return api.repo_exists(repo_id)


def _repo_file_exists(repo_id: str, filename: str, revision: str) -> bool:
    """Whether `filename` exists in `repo_id` at `revision` (5.6.0's helper)."""
    return HfApi().file_exists(repo_id, filename, revision=revision)


def _validate_sae_id(sae_id: str) -> None:
    parts = sae_id.split("/")
    if not sae_id or sae_id.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"SAE id {sae_id!r} cannot name a folder in the repo: use a relative path "
            "without empty, '.' or '..' parts"
        )


def _build_sae_path(sae_ref: SAE | Path | str, tmp_dir: str | Path) -> Path:
    """The folder to upload: `sae_ref` itself, or a live SAE saved into `tmp_dir`."""
    if isinstance(sae_ref, SAE):
        sae_ref.save_model(str(tmp_dir))
        return Path(tmp_dir)
    return Path(sae_ref)
