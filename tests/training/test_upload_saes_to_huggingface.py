"""`upload_saes_to_huggingface` with the Hugging Face client's network methods replaced by
recorders: checks exactly what would be uploaded, where, and that bad input stops the
upload before anything is sent."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file

from sae_lens.sae import SAE
from sae_lens.toolkit.pretrained_sae_loaders import read_local_sae_folder
from sae_lens.training.upload_saes_to_huggingface import upload_saes_to_huggingface


@dataclass
class RecordedHub:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    uploaded_folders: dict[str, dict[str, bytes]] = field(default_factory=dict)
    readme: str | None = None
    has_readme: bool = False

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> RecordedHub:
    recorded = RecordedHub()

    def create_repo(self: HfApi, **kwargs: Any) -> None:
        recorded.calls.append(("create_repo", kwargs))

    def create_branch(self: HfApi, **kwargs: Any) -> None:
        recorded.calls.append(("create_branch", kwargs))

    def upload_folder(self: HfApi, **kwargs: Any) -> None:
        recorded.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        files = {
            p.name: p.read_bytes()
            for p in folder.iterdir()
            if any(fnmatch.fnmatch(p.name, pattern) for pattern in kwargs["allow_patterns"])
        }
        recorded.uploaded_folders[kwargs["path_in_repo"]] = files

    def file_exists(self: HfApi, repo_id: str, filename: str, **kwargs: Any) -> bool:
        recorded.calls.append(("file_exists", {"repo_id": repo_id, "filename": filename, **kwargs}))
        return recorded.has_readme

    def upload_file(self: HfApi, **kwargs: Any) -> None:
        recorded.calls.append(("upload_file", kwargs))
        recorded.readme = kwargs["path_or_fileobj"].read().decode("utf-8")

    for name, fn in [
        ("create_repo", create_repo),
        ("create_branch", create_branch),
        ("upload_folder", upload_folder),
        ("file_exists", file_exists),
        ("upload_file", upload_file),
    ]:
        monkeypatch.setattr(HfApi, name, fn)
    return recorded


def _tiny_sae(seed: int) -> SAE:
    torch.manual_seed(seed)
    sae = SAE.from_dict(
        {
            "architecture": "standard",
            "d_in": 4,
            "d_sae": 8,
            "dtype": "float32",
            "device": "cpu",
            "model_name": "tiny",
            "hook_name": "blocks.0.hook_resid_pre",
            "hook_layer": 0,
            "hook_head_index": None,
            "activation_fn_str": "relu",
            "apply_b_dec_to_input": True,
            "finetuning_scaling_factor": False,
            "context_size": 16,
            "prepend_bos": True,
            "dataset_path": "d",
            "dataset_trust_remote_code": False,
            "normalize_activations": "none",
            "sae_lens_training_version": None,
        }
    )
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    return sae


def test_uploads_sae_objects_and_folders_with_readme(hub: RecordedHub, tmp_path: Path) -> None:
    sae = _tiny_sae(0)
    folder = tmp_path / "saved"
    _tiny_sae(1).save_model(folder, sparsity=torch.zeros(8))
    (folder / "notes.txt").write_text("not an SAE file")

    upload_saes_to_huggingface(
        {"blocks.0.hook_resid_pre": sae, "layer_1": str(folder)},
        hf_repo_id="me/my-saes",
        show_progress=False,
    )

    assert hub.names() == [
        "create_repo",
        "upload_folder",
        "upload_folder",
        "file_exists",
        "upload_file",
    ]
    assert hub.calls[0][1] == {"repo_id": "me/my-saes", "repo_type": "model", "exist_ok": True}
    for _, kwargs in hub.calls[1:3]:
        assert (kwargs["repo_id"], kwargs["revision"], kwargs["repo_type"]) == (
            "me/my-saes",
            "main",
            "model",
        )
    assert set(hub.uploaded_folders["blocks.0.hook_resid_pre"]) == {
        "cfg.json",
        "sae_weights.safetensors",
    }
    assert set(hub.uploaded_folders["layer_1"]) == {
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
    }

    # The uploaded weights are the SAE's own.
    uploaded = tmp_path / "uploaded"
    uploaded.mkdir()
    for name, data in hub.uploaded_folders["blocks.0.hook_resid_pre"].items():
        (uploaded / name).write_bytes(data)
    weights = load_file(str(uploaded / "sae_weights.safetensors"))
    assert all(torch.equal(weights[k], v) for k, v in sae.state_dict().items())
    cfg, _, _ = read_local_sae_folder(uploaded)
    assert cfg["hook_name"] == "blocks.0.hook_resid_pre"

    readme_call = hub.calls[-1][1]
    assert (readme_call["path_in_repo"], readme_call["revision"]) == ("README.md", "main")
    assert hub.readme is not None
    assert hub.readme.startswith("---\nlibrary_name: saelens\n---\n")
    assert "- `blocks.0.hook_resid_pre`\n- `layer_1`\n" in hub.readme
    assert 'SAE.from_pretrained("me/my-saes", "<sae_id>")' in hub.readme


def test_existing_readme_is_kept_and_branch_is_created(hub: RecordedHub) -> None:
    hub.has_readme = True
    upload_saes_to_huggingface({"a": _tiny_sae(2)}, "me/r", hf_revision="dev", show_progress=False)
    assert hub.names() == ["create_repo", "create_branch", "upload_folder", "file_exists"]
    assert hub.calls[1][1] == {"repo_id": "me/r", "branch": "dev", "exist_ok": True}
    assert hub.calls[2][1]["revision"] == "dev"
    assert hub.calls[3][1]["revision"] == "dev"


def test_no_readme_when_not_asked(hub: RecordedHub) -> None:
    upload_saes_to_huggingface(
        {"a": _tiny_sae(3)}, "me/r", show_progress=False, add_default_readme=False
    )
    assert hub.names() == ["create_repo", "upload_folder"]


def test_invalid_folder_stops_before_anything_is_uploaded(hub: RecordedHub, tmp_path: Path) -> None:
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match="is not an SAE folder: it has no sae_weights.safetensors"
    ):
        upload_saes_to_huggingface(
            {"good": _tiny_sae(4), "bad": tmp_path}, "me/r", show_progress=False
        )
    with pytest.raises(FileNotFoundError, match="SAE folder not found"):
        upload_saes_to_huggingface({"bad": tmp_path / "missing"}, "me/r", show_progress=False)
    assert hub.calls == []


def test_bad_ids_and_empty_input_are_refused(hub: RecordedHub) -> None:
    with pytest.raises(ValueError, match="No SAEs to upload"):
        upload_saes_to_huggingface({}, "me/r")
    with pytest.raises(ValueError, match=r"SAE id '../x' cannot name a folder"):
        upload_saes_to_huggingface({"../x": _tiny_sae(5)}, "me/r")
    assert hub.calls == []
