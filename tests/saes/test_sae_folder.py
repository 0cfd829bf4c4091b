"""`read_sae_folder` / `write_sae_folder`: the sae_lens on-disk format as plain dicts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sae_lens.saes.sae_folder import read_sae_folder, write_sae_folder

CFG = {"architecture": "standard", "d_in": 3, "d_sae": 4, "dtype": "float32", "device": "cpu"}


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "W_enc": torch.randn(3, 4),
        "b_enc": torch.randn(4),
        "W_dec": torch.randn(4, 3),
        "b_dec": torch.randn(3),
    }


def test_write_then_read_returns_cfg_weights_and_log_sparsity(tmp_path: Path) -> None:
    state, sparsity = _state(), torch.randn(4)
    written = write_sae_folder(tmp_path / "a" / "b", CFG, state, sparsity)
    assert [p.name for p in written] == [
        "sae_weights.safetensors",
        "cfg.json",
        "sparsity.safetensors",
    ]
    cfg, loaded, log_sparsity = read_sae_folder(tmp_path / "a" / "b", dtype="float64")
    assert cfg["dtype"] == "float64" and cfg["architecture"] == "standard"
    assert cfg["finetuning_scaling_factor"] is False and cfg["normalize_activations"] == "none"
    assert all(torch.equal(loaded[k], state[k].double()) for k in state)
    assert torch.equal(log_sparsity, sparsity)


def test_read_without_sparsity_file(tmp_path: Path) -> None:
    write_sae_folder(tmp_path, CFG, _state())
    assert read_sae_folder(tmp_path)[2] is None


def test_write_accepts_non_contiguous_tensors(tmp_path: Path) -> None:
    state = _state()
    state["W_enc"] = state["W_dec"].T  # a view sharing W_dec's storage
    write_sae_folder(tmp_path, CFG, state)
    assert torch.equal(read_sae_folder(tmp_path)[1]["W_enc"], state["W_dec"].T)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object, got list")],
)
def test_bad_cfg_json(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "cfg.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_sae_folder(tmp_path)


def test_unknown_dtype(tmp_path: Path) -> None:
    write_sae_folder(tmp_path, CFG, _state())
    with pytest.raises(ValueError, match="unknown dtype 'float8': expected one of"):
        read_sae_folder(tmp_path, dtype="float8")


def test_sparsity_file_without_sparsity_tensor(tmp_path: Path) -> None:
    write_sae_folder(tmp_path, CFG, _state())
    save_file({"other": torch.zeros(4)}, tmp_path / "sparsity.safetensors")
    with pytest.raises(ValueError, match="has no tensor 'sparsity'"):
        read_sae_folder(tmp_path)


def test_legacy_scaling_factor(tmp_path: Path) -> None:
    """A non-trivial `scaling_factor` becomes `finetuning_scaling_factor`, if cfg allows it."""
    scale = torch.full((4,), 2.0)
    write_sae_folder(
        tmp_path, {**CFG, "finetuning_scaling_factor": True}, {**_state(), "scaling_factor": scale}
    )
    cfg, state, _ = read_sae_folder(tmp_path)
    assert cfg["finetuning_scaling_factor"] is True
    assert torch.equal(state["finetuning_scaling_factor"], scale) and "scaling_factor" not in state

    (tmp_path / "cfg.json").write_text(json.dumps(CFG))
    with pytest.raises(
        ValueError,
        match="non-trivial 'scaling_factor' but cfg.json has finetuning_scaling_factor=false",
    ):
        read_sae_folder(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_every_file_gets_the_processs_normal_permissions(tmp_path: Path, umask: int) -> None:
    # The weights must be as readable as the config next to them (collaborators on a
    # shared disk), not owner-only as the safetensors writer leaves them.
    from sae_lens.file_modes import current_umask

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        written = write_sae_folder(tmp_path / "sae", CFG, _state(), torch.randn(4))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
