"""Bad SAE files, folders, registry names and devices: each load fails with a named
exception whose one-line message names the file and the field, tensor or name at fault,
with the closest valid name where there is one, and leaves the files as they were."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_lens.errors import (
    DeviceError,
    NonFiniteWeightsError,
    SAEConfigError,
    SAEWeightsError,
    UnknownPretrainedSAEError,
)
from sae_lens.load_model import load_model
from sae_lens.sae import SAE, SAEConfig
from sae_lens.saes.sae_folder import CFG_FIELD_TYPES, REQUIRED_CFG_FIELDS
from sae_lens.training.training_sae import TrainingSAE
from tests.loaders_bad_input.conftest import (
    OfflineHubCache,
    assert_one_line,
    edit_cfg,
    make_sae,
    snapshot,
)
from tests.sae_configs import training_sae_cfg_dict

WEIGHTS = "sae_weights.safetensors"


def _edit_weights(folder: Path, name: str, value: torch.Tensor | None) -> None:
    tensors = load_file(str(folder / WEIGHTS))
    if value is None:
        del tensors[name]
    else:
        tensors[name] = value
    save_file(tensors, str(folder / WEIGHTS))


def _load_fails(folder: Path, error: type[Exception], **kwargs: str) -> BaseException:
    """Load `folder`, expecting `error`; also checks that no file changed."""
    before = snapshot(folder)
    with pytest.raises(error) as caught:
        SAE.load_from_pretrained(str(folder), **kwargs)
    assert snapshot(folder) == before
    return caught.value


# --- folders -----------------------------------------------------------------------------


def test_a_missing_folder_names_it_and_the_closest_sibling(sae_folder: Path) -> None:
    missing = sae_folder.parent / "final_409"
    with pytest.raises(FileNotFoundError) as caught:
        SAE.load_from_pretrained(str(missing))
    assert_one_line(
        caught.value, f"SAE folder not found: {missing}", f"did you mean {str(sae_folder)!r}"
    )
    assert not missing.exists()


def test_a_folder_without_cfg_json_says_which_files_it_has(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an SAE")
    error = _load_fails(tmp_path, FileNotFoundError)
    assert_one_line(error, f"{tmp_path} has no cfg.json", "notes.txt")


def test_a_missing_weights_file_is_named(sae_folder: Path) -> None:
    (sae_folder / WEIGHTS).unlink()
    error = _load_fails(sae_folder, FileNotFoundError)
    assert_one_line(error, f"no such weights file: {sae_folder / WEIGHTS}")


# --- cfg.json ----------------------------------------------------------------------------


def test_a_missing_required_field_is_listed_with_the_file(sae_folder: Path) -> None:
    edit_cfg(sae_folder, lambda cfg: cfg.pop("d_sae"))
    error = _load_fails(sae_folder, SAEConfigError)
    assert_one_line(error, f"{sae_folder / 'cfg.json'} lacks required field(s) ['d_sae']")


def test_a_misspelt_required_field_is_pointed_out(sae_folder: Path) -> None:
    edit_cfg(sae_folder, lambda cfg: cfg.update(d_sea=cfg.pop("d_sae")))
    error = _load_fails(sae_folder, SAEConfigError)
    assert_one_line(error, "lacks required field(s) ['d_sae']", "it has 'd_sea' for 'd_sae'")


def test_a_width_that_is_not_a_number_names_field_type_and_value(sae_folder: Path) -> None:
    edit_cfg(sae_folder, lambda cfg: cfg.update(d_sae="abc"))
    error = _load_fails(sae_folder, SAEConfigError)
    assert_one_line(
        error, f"{sae_folder / 'cfg.json'}: field 'd_sae' must be an integer, got a string 'abc'"
    )


def test_a_boolean_is_no_width_and_a_width_must_be_positive(sae_folder: Path) -> None:
    edit_cfg(sae_folder, lambda cfg: cfg.update(d_in=True))
    error = _load_fails(sae_folder, SAEConfigError)
    assert_one_line(error, "field 'd_in' must be an integer, got true or false True")
    edit_cfg(sae_folder, lambda cfg: cfg.update(d_in=0))
    error = _load_fails(sae_folder, SAEConfigError)
    assert_one_line(error, "field 'd_in' must be a positive integer, got 0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty: expected a JSON object"),
        ("{d_in: 3", "is not valid JSON"),
        ("[1]", "got list"),
    ],
)
def test_cfg_json_that_is_empty_or_not_a_json_object(
    sae_folder: Path, text: str, expected: str
) -> None:
    (sae_folder / "cfg.json").write_text(text)
    error = _load_fails(sae_folder, SAEConfigError)
    assert_one_line(error, str(sae_folder / "cfg.json"), expected)


def test_an_unknown_architecture_gets_the_closest_registered_one(sae_folder: Path) -> None:
    edit_cfg(sae_folder, lambda cfg: cfg.update(architecture="standrad"))
    error = _load_fails(sae_folder, SAEConfigError)
    assert_one_line(
        error, "unknown SAE architecture 'standrad': expected one of", "did you mean 'standard'?"
    )


def test_an_unknown_dtype_gets_the_closest_known_one(sae_folder: Path) -> None:
    edit_cfg(sae_folder, lambda cfg: cfg.update(dtype="float23"))
    error = _load_fails(sae_folder, SAEConfigError)
    assert_one_line(error, "unknown dtype 'float23'", "did you mean 'float32'")


def test_the_checked_fields_are_exactly_sae_configs() -> None:
    fields = dataclasses.fields(SAEConfig)
    assert list(CFG_FIELD_TYPES) == [f.name for f in fields]
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    assert list(REQUIRED_CFG_FIELDS) == required


# --- weights -----------------------------------------------------------------------------


def test_nan_weights_are_refused_naming_the_file_tensor_and_count(sae_folder: Path) -> None:
    w_enc = load_file(str(sae_folder / WEIGHTS))["W_enc"]
    w_enc[0, :3] = float("nan")
    _edit_weights(sae_folder, "W_enc", w_enc)
    error = _load_fails(sae_folder, NonFiniteWeightsError)
    assert_one_line(error, f"{sae_folder / WEIGHTS}: W_enc holds 3 NaN values")


def test_infinite_weights_are_refused_also_by_training_sae_loading(tmp_path: Path) -> None:
    TrainingSAE.from_dict(training_sae_cfg_dict(d_in=4, d_sae=8)).save_model(tmp_path)
    b_dec = torch.zeros(4)
    b_dec[1] = float("-inf")
    _edit_weights(tmp_path, "b_dec", b_dec)
    with pytest.raises(NonFiniteWeightsError) as caught:
        TrainingSAE.load_from_pretrained(str(tmp_path))
    assert_one_line(caught.value, f"{tmp_path / WEIGHTS}: b_dec holds 1 infinite value")


def test_nan_weights_in_another_format_name_its_file(tmp_path: Path) -> None:
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_3" / "width_16k" / "average_l0_50"
    folder.mkdir(parents=True)
    params = {
        "W_enc": np.zeros((2304, 8), np.float32),
        "W_dec": np.zeros((8, 2304), np.float32),
        "b_enc": np.full(8, np.nan, np.float32),
        "b_dec": np.zeros(2304, np.float32),
        "threshold": np.ones(8, np.float32),
    }
    np.savez(folder / "params.npz", **params)
    error = _load_fails(folder, NonFiniteWeightsError)
    assert_one_line(error, f"{folder / 'params.npz'}: b_enc holds 8 NaN values")


def test_a_missing_tensor_is_named_with_its_shape_and_file(sae_folder: Path) -> None:
    _edit_weights(sae_folder, "b_dec", None)
    error = _load_fails(sae_folder, SAEWeightsError)
    assert_one_line(error, f"{sae_folder / WEIGHTS}: weights lack tensor 'b_dec' (shape [4])")


def test_a_misshapen_tensor_names_expected_and_actual_shapes(sae_folder: Path) -> None:
    _edit_weights(sae_folder, "W_dec", torch.zeros(8, 5))
    error = _load_fails(sae_folder, SAEWeightsError)
    assert_one_line(error, str(sae_folder / WEIGHTS), "'W_dec' has shape [8, 5], expected [8, 4]")


def test_a_corrupt_safetensors_file_is_named(sae_folder: Path) -> None:
    (sae_folder / WEIGHTS).write_bytes(b"not a safetensors file")
    error = _load_fails(sae_folder, SAEWeightsError)
    assert_one_line(error, f"cannot read {sae_folder / WEIGHTS} as safetensors")


# --- the registry and local paths in from_pretrained --------------------------------------


def test_a_misspelt_release_gets_the_closest_releases() -> None:
    with pytest.raises(UnknownPretrainedSAEError) as caught:
        SAE.from_pretrained("gpt2-small-res-jbb", "blocks.0.hook_resid_pre")
    assert_one_line(
        caught.value, "Release 'gpt2-small-res-jbb'", "Did you mean one of ['gpt2-small-res-jb'"
    )


def test_a_misspelt_sae_id_gets_the_closest_ids_of_its_release() -> None:
    with pytest.raises(UnknownPretrainedSAEError) as caught:
        SAE.from_pretrained("gpt2-small-res-jb", "blocks.0.hook_resid_pr")
    assert_one_line(
        caught.value,
        "SAE id 'blocks.0.hook_resid_pr' not found in release 'gpt2-small-res-jb'",
        "Did you mean one of ['blocks.0.hook_resid_pre'",
    )


def test_a_registry_sae_with_nan_weights_is_refused(hub_cache: OfflineHubCache) -> None:
    folder = hub_cache.folder("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.0.hook_resid_pre")
    sae = make_sae()
    sae.W_dec.data[2, 1] = float("nan")
    sae.save_model(folder)
    with pytest.raises(NonFiniteWeightsError) as caught:
        SAE.from_pretrained("gpt2-small-res-jb", "blocks.0.hook_resid_pre")
    assert_one_line(
        caught.value, "gpt2-small-res-jb/blocks.0.hook_resid_pre: W_dec holds 1 NaN value "
    )


def test_from_pretrained_on_a_local_path_checks_the_weights(sae_folder: Path) -> None:
    _edit_weights(sae_folder, "b_enc", torch.full((8,), float("nan")))
    with pytest.raises(NonFiniteWeightsError) as caught:
        SAE.from_pretrained(str(sae_folder.parent), sae_folder.name)
    assert_one_line(caught.value, f"{sae_folder / WEIGHTS}: b_enc holds 8 NaN values")
    with pytest.raises(FileNotFoundError) as missing:
        SAE.from_pretrained(str(sae_folder.parent), "final_409")
    assert_one_line(missing.value, "SAE id 'final_409'", "did you mean 'final_4096'?")


# --- devices ---------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_says_so(sae_folder: Path) -> None:
    error = _load_fails(sae_folder, DeviceError, device="cuda")
    assert_one_line(error, "device 'cuda' asked for, but CUDA is not available", "use 'cpu'")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        SAE.from_pretrained(str(sae_folder.parent), sae_folder.name, device="cuda:1")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        make_sae(device="cuda")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        load_model("AutoModelForCausalLM", "tiny-pydoc-gpt2", device="cuda")


def test_a_device_torch_does_not_know_is_named(sae_folder: Path) -> None:
    error = _load_fails(sae_folder, DeviceError, device="gpu")
    assert_one_line(error, "device 'gpu' is not a torch device: use 'cpu', 'cuda'")


@pytest.mark.gpu
def test_a_cuda_index_past_the_machines_devices_is_named(sae_folder: Path) -> None:
    count = torch.cuda.device_count()
    error = _load_fails(sae_folder, DeviceError, device=f"cuda:{count}")
    assert_one_line(error, f"this machine has {count} CUDA device(s)", "'cuda:0'")
    sae = SAE.load_from_pretrained(str(sae_folder), device="cuda")  # a valid device still loads
    assert sae.W_enc.is_cuda
