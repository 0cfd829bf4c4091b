"""The folders we save load in the real SAELens 6.54 as its Transcoder / SkipTranscoder /
JumpReLU(Skip)Transcoder and give the same outputs (run in its own venv, from a neutral
working directory so this checkout does not shadow it; skipped where that venv is absent)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sae_lens.sae import SAE
from sae_lens.training.training_sae import TrainingSAE
from tests.sae_training_runner.runner_helpers import tiny_cfg, tiny_runner
from tests.transcoders.conftest import perturb_, transcoder_cfg_dict

PEER_PYTHON = Path(os.environ.get("SAELENS6_PYTHON", "/work/peer-venv/bin/python"))
SCRIPT = Path(__file__).with_name("saelens6_predict.py")

pytestmark = pytest.mark.skipif(
    not PEER_PYTHON.exists(), reason=f"no SAELens 6 interpreter at {PEER_PYTHON}"
)

# (our architecture, skip connection) -> the class SAELens 6 loads it as
CASES = {
    ("standard", False): "Transcoder",
    ("standard", True): "SkipTranscoder",
    ("jumprelu", False): "JumpReLUTranscoder",
    ("jumprelu", True): "JumpReLUSkipTranscoder",
    ("batchtopk", True): "JumpReLUSkipTranscoder",  # saved as JumpReLU
}


def _saved_transcoder(architecture: str, skip: bool, folder: Path, x: torch.Tensor) -> SAE:
    sae = TrainingSAE.from_dict(transcoder_cfg_dict(architecture, skip_connection=skip))
    perturb_(sae)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if "threshold" in name:  # a JumpReLU threshold is non-negative
                param.abs_()
    if architecture == "batchtopk":  # its inference threshold comes from training batches
        sae.training_forward_pass(x, 0.0, target=torch.zeros(x.shape[0], 5))
    sae.save_model(folder)
    return SAE.load_from_pretrained(str(folder))


def _predict_with_saelens6(
    folders: list[str], x: torch.Tensor, tmp_path: Path
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """SAELens 6's outputs on `x` and class names, by folder index."""
    save_file({"x": x}, tmp_path / "x.safetensors")
    job = {"folders": folders, "inputs": str(tmp_path / "x.safetensors")}
    job["output"] = str(tmp_path / "out.safetensors")
    (tmp_path / "job.json").write_text(json.dumps(job))
    subprocess.run(
        [str(PEER_PYTHON), str(SCRIPT), str(tmp_path / "job.json")],
        cwd="/tmp",
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    with safe_open(job["output"], framework="pt") as f:
        classes = f.metadata()
    return load_file(job["output"]), classes


def test_saelens6_loads_our_transcoders_with_the_same_outputs(tmp_path: Path) -> None:
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(3))
    folders, ours = [], []
    for i, (architecture, skip) in enumerate(CASES):
        folder = tmp_path / f"sae{i}"
        ours.append(_saved_transcoder(architecture, skip, folder, x))
        folders.append(str(folder))
    outputs, classes = _predict_with_saelens6(folders, x, tmp_path)
    for i, ((architecture, skip), expected_class) in enumerate(CASES.items()):
        assert classes[str(i)] == expected_class, (architecture, skip)
        with torch.no_grad():
            torch.testing.assert_close(outputs[str(i)], ours[i](x), msg=f"{architecture} {skip}")


def test_saelens6_loads_the_final_folder_of_a_training_run(tmp_path: Path) -> None:
    cfg = tiny_cfg(
        tmp_path / "run",
        hook_name="blocks.1.ln2.hook_normalized",
        hook_name_out="blocks.1.hook_mlp_out",
        skip_connection=True,
        training_tokens=32 * 10,
    )
    tiny_runner(cfg).run()
    (final,) = Path(cfg.checkpoint_path).glob("final_*")
    x = torch.randn(20, 16, generator=torch.Generator().manual_seed(4))
    outputs, classes = _predict_with_saelens6([str(final)], x, tmp_path)
    assert classes["0"] == "SkipTranscoder"
    with torch.no_grad():
        torch.testing.assert_close(outputs["0"], SAE.load_from_pretrained(str(final))(x))
