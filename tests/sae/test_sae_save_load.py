"""Saving and loading SAE folders: bit-exact round trips for every architecture and dtype,
atomic writes, clear errors, and `from_pretrained` on top of the toolkit's loader."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sae_lens.saes.sae_folder as sae_folder
from sae_lens.sae import SAE

ARCHITECTURES = ["standard", "gated", "jumprelu", "topk"]
D_IN, D_SAE = 6, 10  # as in conftest


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_round_trip_is_bit_exact(
    architecture: str, dtype: str, tmp_path: Path, random_sae: Callable[..., SAE]
) -> None:
    sae = random_sae(architecture).to(getattr(torch, dtype))
    sparsity = torch.randn(D_SAE)
    paths = sae.save_model(tmp_path / "sae", sparsity=sparsity)
    assert [p.name for p in paths] == [
        "sae_weights.safetensors",
        "cfg.json",
        "sparsity.safetensors",
    ]

    loaded = SAE.load_from_pretrained(str(tmp_path / "sae"))
    assert loaded.cfg == sae.cfg and loaded.dtype == getattr(torch, dtype)
    original = sae.state_dict()
    assert original.keys() == loaded.state_dict().keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    x = torch.randn(4, D_IN)
    with torch.no_grad():
        assert torch.equal(loaded(x), sae(x))
    assert torch.equal(load_file(tmp_path / "sae" / "sparsity.safetensors")["sparsity"], sparsity)


def test_saved_files_follow_the_5_6_0_layout(
    tmp_path: Path, random_sae: Callable[..., SAE]
) -> None:
    random_sae("gated").save_model(tmp_path)
    assert set(load_file(tmp_path / "sae_weights.safetensors")) == {
        "W_enc",
        "b_gate",
        "r_mag",
        "b_mag",
        "W_dec",
        "b_dec",
    }
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "gated" and cfg["d_sae"] == D_SAE
    assert not (tmp_path / "sparsity.safetensors").exists()


def test_load_casts_to_a_requested_dtype(tmp_path: Path, random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("standard").to(torch.float16)
    sae.save_model(tmp_path)
    loaded = SAE.load_from_pretrained(str(tmp_path), dtype="float32")
    assert loaded.cfg.dtype == "float32" and loaded.W_enc.dtype == torch.float32
    assert torch.equal(loaded.W_enc, sae.W_enc.float())


def test_failed_save_leaves_no_file_behind(
    tmp_path: Path, random_sae: Callable[..., SAE], monkeypatch: pytest.MonkeyPatch
) -> None:
    def save_half_then_fail(tensors: dict, filename: str | Path) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(sae_folder, "save_tensors", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        random_sae("standard").save_model(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_overwriting_a_folder_leaves_no_temp_files(
    tmp_path: Path, random_sae: Callable[..., SAE]
) -> None:
    random_sae("standard", seed=1).save_model(tmp_path)
    second = random_sae("standard", seed=2)
    second.save_model(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    assert torch.equal(SAE.load_from_pretrained(str(tmp_path)).W_enc, second.W_enc)


def test_missing_folder_or_files(tmp_path: Path, random_sae: Callable[..., SAE]) -> None:
    with pytest.raises(FileNotFoundError, match="SAE folder not found"):
        SAE.load_from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="has no cfg.json"):
        SAE.load_from_pretrained(str(tmp_path))
    random_sae("standard").save_model(tmp_path)
    (tmp_path / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no such weights file: .*sae_weights.safetensors"):
        SAE.load_from_pretrained(str(tmp_path))


def test_corrupt_weights_file(tmp_path: Path, random_sae: Callable[..., SAE]) -> None:
    random_sae("standard").save_model(tmp_path)
    (tmp_path / "sae_weights.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="cannot read .*sae_weights.safetensors as safetensors"):
        SAE.load_from_pretrained(str(tmp_path))


def _edit_weights(folder: Path, edit: Callable[[dict], None]) -> None:
    tensors = load_file(folder / "sae_weights.safetensors")
    edit(tensors)
    save_file(tensors, folder / "sae_weights.safetensors")


def test_missing_tensor_is_named(tmp_path: Path, random_sae: Callable[..., SAE]) -> None:
    random_sae("jumprelu").save_model(tmp_path)
    _edit_weights(tmp_path, lambda t: t.pop("threshold"))
    with pytest.raises(
        ValueError,
        match=r"weights lack tensor 'threshold' \(shape \[10\]\) needed by a jumprelu SAE",
    ):
        SAE.load_from_pretrained(str(tmp_path))


def test_misshaped_tensor_is_named(tmp_path: Path, random_sae: Callable[..., SAE]) -> None:
    random_sae("standard").save_model(tmp_path)
    _edit_weights(tmp_path, lambda t: t.update(W_dec=torch.zeros(D_SAE, D_IN + 1)))
    with pytest.raises(ValueError, match=r"tensor 'W_dec' has shape \[10, 7\], expected \[10, 6\]"):
        SAE.load_from_pretrained(str(tmp_path))


def test_unexpected_tensor_is_named(tmp_path: Path, random_sae: Callable[..., SAE]) -> None:
    random_sae("standard").save_model(tmp_path)
    _edit_weights(tmp_path, lambda t: t.update(b_gate=torch.zeros(D_SAE)))
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) \['b_gate'\] for a standard SAE"):
        SAE.load_from_pretrained(str(tmp_path))


def test_unknown_architecture_in_cfg(tmp_path: Path, random_sae: Callable[..., SAE]) -> None:
    random_sae("standard").save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["architecture"] = "matryoshka"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown SAE architecture 'matryoshka': expected one of"):
        SAE.load_from_pretrained(str(tmp_path))


def test_legacy_config_and_scaling_factor(
    tmp_path: Path, random_sae: Callable[..., SAE], cfg_dict: Callable[..., dict]
) -> None:
    """Configs of early sae_lens versions: old key names, no architecture, boolean
    normalize_activations, an all-ones `scaling_factor` tensor."""
    sae = random_sae("standard")
    cfg = cfg_dict()
    for key in ("architecture", "apply_b_dec_to_input", "finetuning_scaling_factor"):
        del cfg[key]
    cfg["hook_point"] = cfg.pop("hook_name")
    cfg["activation_fn"] = cfg.pop("activation_fn_str")
    cfg["normalize_activations"] = False
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {**sae.state_dict(), "scaling_factor": torch.ones(D_SAE)},
        tmp_path / "sae_weights.safetensors",
    )
    loaded = SAE.load_from_pretrained(str(tmp_path))
    assert loaded.cfg.architecture == "standard" and loaded.cfg.normalize_activations == "none"
    assert loaded.cfg.hook_name == "blocks.0.hook_resid_pre"
    x = torch.randn(3, D_IN)
    with torch.no_grad():
        assert torch.equal(loaded(x), sae(x))


def test_finetuning_scaling_factor_round_trip(
    tmp_path: Path, random_sae: Callable[..., SAE]
) -> None:
    sae = random_sae("standard", finetuning_scaling_factor=True)
    sae.save_model(tmp_path)
    loaded = SAE.load_from_pretrained(str(tmp_path))
    assert loaded.cfg.finetuning_scaling_factor
    assert torch.equal(loaded.finetuning_scaling_factor, sae.finetuning_scaling_factor)


def _fake_toolkit(monkeypatch: pytest.MonkeyPatch, files: tuple) -> list:
    """A stand-in for the toolkit loader `from_pretrained` imports; records the calls."""
    calls: list = []
    loaders = types.ModuleType("sae_lens.toolkit.pretrained_sae_loaders")

    def load_pretrained_sae_files(
        release: str, sae_id: str, device: str = "cpu", force_download: bool = False
    ):  # noqa: ANN202
        calls.append((release, sae_id, device))
        return files

    loaders.load_pretrained_sae_files = load_pretrained_sae_files  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, loaders.__name__, loaders)
    return calls


def test_from_pretrained_builds_the_sae_from_the_toolkit_files(
    monkeypatch: pytest.MonkeyPatch, random_sae: Callable[..., SAE], cfg_dict: Callable[..., dict]
) -> None:
    source = random_sae("jumprelu")
    log_sparsity = torch.randn(D_SAE)
    calls = _fake_toolkit(
        monkeypatch, (cfg_dict("jumprelu"), dict(source.state_dict()), log_sparsity)
    )
    sae, cfg, sparsity = SAE.from_pretrained("some-release", "layer_0")
    assert calls == [("some-release", "layer_0", "cpu")]
    assert cfg["architecture"] == "jumprelu" and sparsity is log_sparsity
    assert torch.equal(sae.threshold, source.threshold)


def test_from_pretrained_refuses_misshaped_weights(
    monkeypatch: pytest.MonkeyPatch, cfg_dict: Callable[..., dict], random_sae: Callable[..., SAE]
) -> None:
    state = dict(random_sae("standard").state_dict())
    state["b_enc"] = torch.zeros(D_SAE + 1)
    _fake_toolkit(monkeypatch, (cfg_dict("standard"), state, None))
    with pytest.raises(ValueError, match=r"tensor 'b_enc' has shape \[11\], expected \[10\]"):
        SAE.from_pretrained("release", "id")
