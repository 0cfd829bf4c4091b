"""A transcoder's folder: cfg.json names it as SAELens 6 does, W_skip is saved [d_out, d_in],
and loading gives back the same transcoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sae_lens.errors import SAEWeightsError
from sae_lens.sae import SAE
from sae_lens.training.training_sae import TrainingSAE
from tests.transcoders.conftest import ARCHITECTURES, perturb_, transcoder_cfg_dict

SAVED_NAMES = {
    "standard": "skip_transcoder",
    "topk": "topk_skip_transcoder",
    "batchtopk": "jumprelu_skip_transcoder",  # BatchTopK saves as JumpReLU
    "jumprelu": "jumprelu_skip_transcoder",
}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_then_load_gives_the_same_predictions(architecture: str, tmp_path: Path) -> None:
    sae = TrainingSAE.from_dict(transcoder_cfg_dict(architecture))
    perturb_(sae)
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(2))
    sae.eval()
    if architecture == "batchtopk":  # its inference threshold comes from training batches
        sae.training_forward_pass(x, 0.0, target=torch.randn(9, 5))
    sae.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == SAVED_NAMES[architecture]
    assert (cfg["hook_name_out"], cfg["hook_layer_out"], cfg["d_out"]) == (
        "blocks.0.hook_mlp_out",
        0,
        5,
    )
    saved = load_file(tmp_path / "sae_weights.safetensors")
    assert torch.equal(saved["W_skip"], sae.W_skip.detach().T)  # [d_out, d_in], as SAELens 6

    loaded = SAE.load_from_pretrained(str(tmp_path))
    assert loaded.cfg.hook_name_out == "blocks.0.hook_mlp_out" and loaded.cfg.skip_connection
    assert torch.equal(loaded.W_skip, sae.W_skip.detach())
    if architecture != "batchtopk":  # (inference is JumpReLU, training BatchTopK)
        torch.testing.assert_close(loaded(x), sae(x).detach())
    again = TrainingSAE.load_from_pretrained(str(tmp_path))
    assert again.cfg.architecture == ("jumprelu" if architecture == "batchtopk" else architecture)


def test_a_transcoder_without_skip_is_saved_as_transcoder(tmp_path: Path) -> None:
    sae = SAE.from_dict(transcoder_cfg_dict(skip_connection=False))
    sae.save_model(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "transcoder"
    assert "W_skip" not in load_file(tmp_path / "sae_weights.safetensors")
    assert not SAE.load_from_pretrained(str(tmp_path)).cfg.skip_connection


def test_weights_of_the_wrong_output_width_are_named(tmp_path: Path) -> None:
    SAE.from_dict(transcoder_cfg_dict()).save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "d_out": 7}))
    with pytest.raises(SAEWeightsError, match=r"'W_dec' has shape \[12, 5\], expected \[12, 7\]"):
        SAE.load_from_pretrained(str(tmp_path))


def test_a_transcoder_cfg_without_its_output_hook_is_refused(tmp_path: Path) -> None:
    SAE.from_dict(transcoder_cfg_dict()).save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["hook_name_out"]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config needs hook_name_out"):
        SAE.load_from_pretrained(str(tmp_path))
