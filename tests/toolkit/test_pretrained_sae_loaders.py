"""`SAE.from_pretrained` / `load_pretrained_sae_files` on registry releases, unregistered
repos and local paths, with the files placed by the test in an offline Hugging Face cache
(see conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_lens.sae import SAE
from sae_lens.toolkit.pretrained_sae_loaders import (
    get_conversion_loader_name,
    load_pretrained_sae_files,
)
from sae_lens.toolkit.pretrained_saes_directory import (
    PretrainedSAELookup,
    get_norm_scaling_factor,
    get_pretrained_saes_directory,
)

if TYPE_CHECKING:
    from tests.toolkit.conftest import OfflineHubCache

D_IN, D_SAE = 6, 10
ATOL = 1e-5


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _standard_weights(seed: int) -> dict[str, torch.Tensor]:
    return {
        "W_enc": _rand(D_IN, D_SAE, seed=seed),
        "W_dec": _rand(D_SAE, D_IN, seed=seed + 1),
        "b_enc": _rand(D_SAE, seed=seed + 2),
        "b_dec": _rand(D_IN, seed=seed + 3),
    }


def _sae_lens_cfg(hook_name: str = "blocks.0.hook_resid_pre") -> dict[str, Any]:
    return {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "model_name": "gpt2-small",
        "hook_name": hook_name,
        "hook_layer": 0,
        "hook_head_index": None,
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": True,
        "context_size": 128,
        "dataset_path": "Skylion007/openwebtext",
        "normalize_activations": "none",
    }


def _standard_math(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    acts = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    return acts @ w["W_dec"] + w["b_dec"]


# --- registry releases ----------------------------------------------------------------


def test_registry_sae_lens_release_loads_from_offline_cache(hub_cache: OfflineHubCache) -> None:
    folder = hub_cache.folder("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.0.hook_resid_pre")
    _write_json(folder / "cfg.json", _sae_lens_cfg())
    weights = _standard_weights(seed=1)
    save_file(weights, str(folder / "sae_weights.safetensors"))
    sparsity = _rand(D_SAE, seed=9)
    save_file({"sparsity": sparsity}, str(folder / "sparsity.safetensors"))

    with pytest.warns(UserWarning, match="model_from_pretrained_kwargs"):
        sae, cfg, log_sparsity = SAE.from_pretrained("gpt2-small-res-jb", "blocks.0.hook_resid_pre")

    release = get_pretrained_saes_directory()["gpt2-small-res-jb"]
    assert cfg["neuronpedia_id"] == release.neuronpedia_id["blocks.0.hook_resid_pre"]
    assert (
        cfg["model_from_pretrained_kwargs"]
        == release.config_overrides["model_from_pretrained_kwargs"]
    )  # type: ignore[index]
    assert sae.cfg.neuronpedia_id == cfg["neuronpedia_id"]
    assert log_sparsity is not None and torch.equal(log_sparsity, sparsity)
    x = _rand(4, D_IN, seed=2)
    with torch.no_grad():
        assert torch.allclose(sae(x), _standard_math(weights, x), atol=ATOL)


def test_registry_config_overrides_apply_and_missing_sparsity_is_none(
    hub_cache: OfflineHubCache,
) -> None:
    folder = hub_cache.folder("JoshEngels/Mistral-7B-Residual-Stream-SAEs", "mistral_7b_layer_8")
    _write_json(folder / "cfg.json", _sae_lens_cfg("blocks.8.hook_resid_pre"))
    save_file(_standard_weights(seed=3), str(folder / "sae_weights.safetensors"))

    cfg, _, log_sparsity = load_pretrained_sae_files("mistral-7b-res-wg", "blocks.8.hook_resid_pre")
    assert cfg["normalize_activations"] == "constant_norm_rescale"  # the release's override
    assert log_sparsity is None


def test_missing_file_in_offline_cache_names_repo_and_cache(hub_cache: OfflineHubCache) -> None:
    folder = hub_cache.folder("JoshEngels/Mistral-7B-Residual-Stream-SAEs", "mistral_7b_layer_8")
    _write_json(folder / "cfg.json", _sae_lens_cfg("blocks.8.hook_resid_pre"))
    with pytest.raises(
        FileNotFoundError,
        match=r"'mistral_7b_layer_8/sae_weights.safetensors' of Hugging Face repo "
        r"'JoshEngels/Mistral-7B-Residual-Stream-SAEs' is not in the local cache .*HF_HUB_OFFLINE",
    ):
        load_pretrained_sae_files("mistral-7b-res-wg", "blocks.8.hook_resid_pre")


def _openmoss_tensors(seed: int) -> dict[str, torch.Tensor]:
    return {
        "encoder.weight": _rand(D_SAE, D_IN, seed=seed),
        "encoder.bias": _rand(D_SAE, seed=seed + 1),
        "decoder.weight": _rand(D_IN, D_SAE, seed=seed + 2),
        "decoder.bias": _rand(D_IN, seed=seed + 3),
    }


def test_registry_norm_scaling_factor_is_folded_into_the_weights(
    hub_cache: OfflineHubCache,
) -> None:
    release, sae_id = "llama_scope_r1_distill", "l0r_800m_slimpajama"
    path = get_pretrained_saes_directory()[release].saes_map[sae_id]
    folder = hub_cache.folder("fnlp/Llama-Scope-R1-Distill", path)
    _write_json(
        folder / "config.json",
        {"d_model": D_IN, "expansion_factor": 2, "hook_point_in": "blocks.0.hook_resid_post"},
    )
    w = {
        "encoder.weight": _rand(2 * D_IN, D_IN, seed=10) / 20,
        "encoder.bias": _rand(2 * D_IN, seed=11),
        "decoder.weight": _rand(D_IN, 2 * D_IN, seed=12),
        "decoder.bias": _rand(D_IN, seed=13),
        "log_jumprelu_threshold": _rand(2 * D_IN, seed=14) / 2,
    }
    save_file(w, str(folder / "sae_weights.safetensors"))

    sae, cfg, _ = SAE.from_pretrained(release, sae_id)
    assert cfg["normalize_activations"] == "none"
    factor = get_norm_scaling_factor(release, sae_id)
    assert factor is not None and factor > 1

    x = _rand(5, D_IN, seed=15)
    pre = (x * factor) @ w["encoder.weight"].T + w["encoder.bias"]  # trained on x * factor
    acts = torch.relu(pre) * (pre > w["log_jumprelu_threshold"].exp())
    assert (acts > 0).any()
    recon = (acts @ w["decoder.weight"].T + w["decoder.bias"]) / factor
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), acts, atol=1e-4)
        assert torch.allclose(sae(x), recon, atol=1e-4)


def test_registry_llama_scope_broadcasts_its_scalar_threshold(hub_cache: OfflineHubCache) -> None:
    folder = hub_cache.folder("fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L8R-8x")
    hyperparams = {
        "d_model": D_IN,
        "d_sae": D_SAE,
        "hook_point_in": "blocks.8.hook_resid_post",
        "jump_relu_threshold": 0.25,
    }
    _write_json(folder / "hyperparams.json", hyperparams)
    (folder / "checkpoints").mkdir()
    w = _openmoss_tensors(seed=20)
    save_file(w, str(folder / "checkpoints" / "final.safetensors"))

    cfg, state_dict, _ = load_pretrained_sae_files("llama_scope_lxr_8x", "l8r_8x")
    factor = get_norm_scaling_factor("llama_scope_lxr_8x", "l8r_8x")
    assert factor is not None
    assert cfg["dtype"] == "bfloat16" and state_dict["W_enc"].dtype == torch.bfloat16
    assert torch.equal(state_dict["threshold"], torch.full((D_SAE,), 0.25, dtype=torch.bfloat16))
    expected_w_enc = (w["encoder.weight"].T.to(torch.bfloat16)) * factor
    assert torch.equal(state_dict["W_enc"], expected_w_enc)


def test_registry_dictionary_learning_release(hub_cache: OfflineHubCache) -> None:
    release = "sae_bench_pythia70m_sweep_standard_ctx128_0712"
    sae_id = "blocks.3.hook_resid_post__trainer_10"
    path = get_pretrained_saes_directory()[release].saes_map[sae_id]
    folder = hub_cache.folder("canrager/lm_sae", path)
    trainer = {
        "dict_class": "AutoEncoder",
        "activation_dim": D_IN,
        "dict_size": D_SAE,
        "layer": 3,
        "lm_name": "EleutherAI/pythia-70m-deduped",
    }
    _write_json(folder / "config.json", {"trainer": trainer, "buffer": {"ctx_len": 128}})
    ae = {
        "encoder.weight": _rand(D_SAE, D_IN, seed=30),
        "encoder.bias": _rand(D_SAE, seed=31),
        "decoder.weight": _rand(D_IN, D_SAE, seed=32),
        "bias": _rand(D_IN, seed=33),
    }
    torch.save(ae, folder / "ae.pt")

    sae, cfg, _ = SAE.from_pretrained(release, sae_id)
    assert cfg["neuronpedia_id"] == get_pretrained_saes_directory()[release].neuronpedia_id[sae_id]
    x = _rand(4, D_IN, seed=34)
    acts = torch.relu((x - ae["bias"]) @ ae["encoder.weight"].T + ae["encoder.bias"])
    with torch.no_grad():
        assert torch.allclose(sae(x), acts @ ae["decoder.weight"].T + ae["bias"], atol=ATOL)


def test_registry_connor_rob_hook_z_release(hub_cache: OfflineHubCache) -> None:
    release, sae_id = "gpt2-small-hook-z-kk", "blocks.0.hook_z"
    filename = get_pretrained_saes_directory()[release].saes_map[sae_id]
    root = hub_cache.repo_folder("ckkissane/attn-saes-gpt2-small-all-layers")
    weights = _standard_weights(seed=40)
    torch.save(weights, root / filename)
    old_cfg = {"act_size": D_IN, "dict_size": D_SAE, "act_name": "blocks.0.attn.hook_z", "layer": 0}
    _write_json(root / filename.replace(".pt", "_cfg.json"), old_cfg)

    sae, cfg, _ = SAE.from_pretrained(release, sae_id)
    assert cfg["hook_name"] == "blocks.0.attn.hook_z" and cfg["model_name"] == "gpt2-small"
    z = _rand(3, 2, D_IN // 2, seed=41)  # [batch, n_heads, d_head]
    expected = _standard_math(weights, z.reshape(3, D_IN)).reshape(3, 2, D_IN // 2)
    with torch.no_grad():
        assert torch.allclose(sae(z), expected, atol=ATOL)


def test_registry_deepseek_release_takes_sizes_from_the_weights(hub_cache: OfflineHubCache) -> None:
    release = "deepseek-r1-distill-llama-8b-qresearch"
    sae_id = "blocks.19.hook_resid_post"
    filename = get_pretrained_saes_directory()[release].saes_map[sae_id]
    root = hub_cache.repo_folder("qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19")
    torch.save(_openmoss_tensors(seed=50), root / filename)

    cfg, state_dict, _ = load_pretrained_sae_files(release, sae_id)
    assert (cfg["d_in"], cfg["d_sae"], cfg["hook_layer"]) == (D_IN, D_SAE, 19)
    assert state_dict["W_enc"].shape == (D_IN, D_SAE)


def test_registry_gemma_scope_embedding_release(hub_cache: OfflineHubCache) -> None:
    release, sae_id = "gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6"
    folder = hub_cache.folder("google/gemma-scope-2b-pt-res", sae_id)
    d_in, d_sae = 2304, 4096  # what the repo and folder names say
    params = {
        "W_enc": np.full((d_in, d_sae), 0.5, dtype=np.float32),
        "W_dec": np.full((d_sae, d_in), 0.25, dtype=np.float32),
        "b_enc": np.zeros(d_sae, dtype=np.float32),
        "b_dec": np.ones(d_in, dtype=np.float32),
        "threshold": np.full(d_sae, 0.1, dtype=np.float32),
    }
    np.savez(folder / "params.npz", **params)

    cfg, state_dict, _ = load_pretrained_sae_files(release, sae_id)
    assert (cfg["architecture"], cfg["hook_name"], cfg["d_sae"]) == (
        "jumprelu",
        "hook_embed",
        d_sae,
    )
    scale = math.sqrt(d_in)
    assert torch.allclose(state_dict["W_enc"][0, :3], torch.full((3,), 0.5 / scale))
    assert torch.allclose(state_dict["W_dec"][0, :3], torch.full((3,), 0.25 * scale))


# --- unregistered repos and local paths --------------------------------------------------


def test_unregistered_repo_folder_in_any_format(hub_cache: OfflineHubCache) -> None:
    folder = hub_cache.folder("someone/sparsify-saes", "layers.1")
    cfg = {"activation": "topk", "num_latents": D_SAE, "k": 3, "d_in": D_IN}
    _write_json(folder / "cfg.json", cfg)
    w = {
        "encoder.weight": _rand(D_SAE, D_IN, seed=60),
        "encoder.bias": _rand(D_SAE, seed=61),
        "W_dec": _rand(D_SAE, D_IN, seed=62),
        "b_dec": _rand(D_IN, seed=63),
    }
    save_file(w, str(folder / "sae.safetensors"))

    sae, cfg_dict, _ = SAE.from_pretrained("someone/sparsify-saes", "layers.1")
    assert cfg_dict["hook_name"] == "blocks.1.hook_resid_post"
    x = _rand(4, D_IN, seed=64)
    with torch.no_grad():
        assert int((sae.encode(x) != 0).sum(-1).max()) <= 3


def test_unregistered_repo_missing_folder(hub_cache: OfflineHubCache) -> None:
    hub_cache.folder("someone/sparsify-saes", "layers.1")
    with pytest.raises(FileNotFoundError, match="'layers.9' not found in Hugging Face repo"):
        load_pretrained_sae_files("someone/sparsify-saes", "layers.9")


def test_local_path_in_place_of_a_release(tmp_path: Path) -> None:
    folder = tmp_path / "my_saes" / "blocks.0.hook_resid_pre"
    _write_json(folder / "cfg.json", _sae_lens_cfg())
    weights = _standard_weights(seed=70)
    save_file(weights, str(folder / "sae_weights.safetensors"))

    _, state_dict, _ = load_pretrained_sae_files(
        str(tmp_path / "my_saes"), "blocks.0.hook_resid_pre"
    )
    assert torch.equal(state_dict["W_dec"], weights["W_dec"])
    _, same, _ = load_pretrained_sae_files(str(folder), "")
    assert torch.equal(same["W_dec"], weights["W_dec"])
    with pytest.raises(
        FileNotFoundError, match=r"'blocks.9' is not a file or folder in local path"
    ):
        load_pretrained_sae_files(str(tmp_path / "my_saes"), "blocks.9")


# --- errors --------------------------------------------------------------------------------


def test_unknown_release_suggests_close_matches() -> None:
    with pytest.raises(
        ValueError, match=r"Release 'gpt2-small-res-jbb' is not in .*'gpt2-small-res-jb'"
    ):
        load_pretrained_sae_files("gpt2-small-res-jbb", "blocks.0.hook_resid_pre")


def test_unknown_sae_id_suggests_close_matches_and_canonical_release() -> None:
    with pytest.raises(
        ValueError,
        match=r"SAE id 'layer_3/width_16k/average_l0_1' not found in release "
        r"'gemma-scope-2b-pt-res'\. Did you mean .*'gemma-scope-2b-pt-res-canonical'",
    ):
        SAE.from_pretrained("gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_1")


def test_unknown_conversion_func_is_named() -> None:
    lookup = PretrainedSAELookup("r", "o/r", "m", "no_such_format", {}, {}, {}, {}, None)
    with pytest.raises(ValueError, match="Conversion func 'no_such_format' not found"):
        get_conversion_loader_name(lookup)
