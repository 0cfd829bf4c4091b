"""Each published SAE format, written by the test in that format's exact layout, read back
with `read_local_sae_folder` (format told by its files) and checked against that format's
own math computed from the raw tensors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sae_lens.sae import SAE
from sae_lens.toolkit.pretrained_sae_loaders import detect_sae_format, read_local_sae_folder

D_IN, D_SAE = 6, 10
ATOL = 1e-5


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _load_sae(path: Path, **kwargs: Any) -> SAE:
    cfg, state_dict, _ = read_local_sae_folder(path, **kwargs)
    sae = SAE.from_dict(cfg)
    sae.load_state_dict(state_dict)
    return sae.eval()


def _check(sae: SAE, x: torch.Tensor, acts: torch.Tensor, recon: torch.Tensor) -> None:
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), acts, atol=ATOL)
        assert torch.allclose(sae.decode(acts), recon, atol=ATOL)
        assert torch.allclose(sae(x), recon, atol=ATOL)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# --- sae_lens ----------------------------------------------------------------------------


def test_sae_lens_folder_round_trips_tensors_config_and_sparsity(tmp_path: Path) -> None:
    weights = {
        "W_enc": _rand(D_IN, D_SAE, seed=1),
        "W_dec": _rand(D_SAE, D_IN, seed=2),
        "b_enc": _rand(D_SAE, seed=3),
        "b_dec": _rand(D_IN, seed=4),
    }
    cfg = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "model_name": "m",
        "hook_name": "blocks.0.hook_resid_pre",
        "hook_layer": 0,
        "hook_head_index": None,
        "context_size": 8,
        "dataset_path": "d",
        "activation_fn_str": "relu",
    }
    _write_json(tmp_path / "cfg.json", cfg)
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    sparsity = _rand(D_SAE, seed=5)
    save_file({"sparsity": sparsity}, str(tmp_path / "sparsity.safetensors"))

    assert detect_sae_format(tmp_path) == "sae_lens"
    loaded_cfg, state_dict, log_sparsity = read_local_sae_folder(tmp_path)
    assert all(torch.equal(state_dict[k], v) for k, v in weights.items())
    assert log_sparsity is not None and torch.equal(log_sparsity, sparsity)
    assert loaded_cfg["hook_name"] == "blocks.0.hook_resid_pre"
    assert loaded_cfg["apply_b_dec_to_input"] is True  # defaulted for old configs

    _, half, _ = read_local_sae_folder(tmp_path, dtype="float16")
    assert half["W_enc"].dtype == torch.float16
    assert torch.equal(half["W_enc"], weights["W_enc"].half())


# --- Gemma Scope -------------------------------------------------------------------------

GEMMA_D_IN = 2304  # gemma-2-2b's d_model: the config takes it from the model name


def _gemma_params(seed: int, d_in: int = GEMMA_D_IN, d_sae: int = 8) -> dict[str, np.ndarray]:
    return {
        "W_enc": _rand(d_in, d_sae, seed=seed).numpy() / 10,
        "W_dec": _rand(d_sae, d_in, seed=seed + 1).numpy(),
        "b_enc": _rand(d_sae, seed=seed + 2).numpy(),
        "b_dec": _rand(d_in, seed=seed + 3).numpy(),
        "threshold": np.abs(_rand(d_sae, seed=seed + 4).numpy()),
    }


def test_gemma_scope_params_npz_is_jumprelu_with_gemma_math(tmp_path: Path) -> None:
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_3" / "width_16k" / "average_l0_50"
    folder.mkdir(parents=True)
    params = _gemma_params(seed=10)
    np.savez(folder / "params.npz", **params)

    assert detect_sae_format(folder) == "gemma_2"
    sae = _load_sae(folder)
    assert sae.cfg.architecture == "jumprelu"
    assert sae.cfg.hook_name == "blocks.3.hook_resid_post"
    assert sae.cfg.model_name == "gemma-2-2b"
    assert sae.cfg.apply_b_dec_to_input is False

    p = {k: torch.from_numpy(v) for k, v in params.items()}
    x = _rand(5, GEMMA_D_IN, seed=11)
    pre = x @ p["W_enc"] + p["b_enc"]
    acts = torch.relu(pre) * (pre > p["threshold"])
    assert (acts > 0).any() and (acts == 0).any()
    _check(sae, x, acts, acts @ p["W_dec"] + p["b_dec"])


def test_gemma_scope_embedding_sae_moves_sqrt_d_model_into_the_weights(tmp_path: Path) -> None:
    folder = tmp_path / "gemma-scope-2b-pt-res" / "embedding" / "width_4k" / "average_l0_6"
    folder.mkdir(parents=True)
    params = _gemma_params(seed=20)
    np.savez(folder / "params.npz", **params)

    cfg, state_dict, _ = read_local_sae_folder(folder / "params.npz")
    scale = math.sqrt(GEMMA_D_IN)
    assert cfg["hook_name"] == "hook_embed" and cfg["hook_layer"] == 0
    assert torch.allclose(state_dict["W_enc"], torch.from_numpy(params["W_enc"]) / scale)
    assert torch.allclose(state_dict["W_dec"], torch.from_numpy(params["W_dec"]) * scale)
    assert torch.equal(state_dict["b_dec"], torch.from_numpy(params["b_dec"]))


def test_gemma_scope_path_without_release_name_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "params.npz", **_gemma_params(seed=30))
    with pytest.raises(ValueError, match="cannot tell the Gemma 2 model and hook site"):
        read_local_sae_folder(tmp_path)


# --- dictionary_learning -------------------------------------------------------------


def _dictionary_learning_folder(
    path: Path, dict_class: str, ae: dict[str, torch.Tensor], k: int | None = None
) -> Path:
    trainer: dict[str, Any] = {
        "dict_class": dict_class,
        "activation_dim": D_IN,
        "dict_size": D_SAE,
        "layer": 3,
        "lm_name": "EleutherAI/pythia-70m-deduped",
    }
    if k is not None:
        trainer["k"] = k
    _write_json(path / "config.json", {"trainer": trainer, "buffer": {"ctx_len": 64}})
    torch.save(ae, path / "ae.pt")
    return path


def _linear_weights(seed: int) -> dict[str, torch.Tensor]:
    return {
        "encoder.weight": _rand(D_SAE, D_IN, seed=seed),  # nn.Linear(d_in, d_sae)
        "encoder.bias": _rand(D_SAE, seed=seed + 1),
        "decoder.weight": _rand(D_IN, D_SAE, seed=seed + 2),  # nn.Linear(d_sae, d_in)
    }


def test_dictionary_learning_autoencoder(tmp_path: Path) -> None:
    ae = {**_linear_weights(40), "bias": _rand(D_IN, seed=43)}
    folder = _dictionary_learning_folder(tmp_path, "AutoEncoder", ae)
    assert detect_sae_format(folder) == "dictionary_learning_1"
    sae = _load_sae(folder)
    assert sae.cfg.model_name == "pythia-70m-deduped"
    assert sae.cfg.hook_name == "blocks.3.hook_resid_post"
    assert sae.cfg.context_size == 64

    x = _rand(7, D_IN, seed=44)
    acts = torch.relu((x - ae["bias"]) @ ae["encoder.weight"].T + ae["encoder.bias"])
    _check(sae, x, acts, acts @ ae["decoder.weight"].T + ae["bias"])


def test_dictionary_learning_gated_autoencoder(tmp_path: Path) -> None:
    ae = {
        "encoder.weight": _rand(D_SAE, D_IN, seed=50),
        "decoder.weight": _rand(D_IN, D_SAE, seed=51),
        "decoder_bias": _rand(D_IN, seed=52),
        "r_mag": _rand(D_SAE, seed=53) / 4,
        "gate_bias": _rand(D_SAE, seed=54),
        "mag_bias": _rand(D_SAE, seed=55),
    }
    sae = _load_sae(_dictionary_learning_folder(tmp_path, "GatedAutoEncoder", ae))
    assert sae.cfg.architecture == "gated"

    x = _rand(7, D_IN, seed=56)
    x_enc = (x - ae["decoder_bias"]) @ ae["encoder.weight"].T
    gate = (x_enc + ae["gate_bias"] > 0).float()
    mag = torch.relu(ae["r_mag"].exp() * x_enc + ae["mag_bias"])
    acts = gate * mag
    _check(sae, x, acts, acts @ ae["decoder.weight"].T + ae["decoder_bias"])


def test_dictionary_learning_topk_autoencoder_keeps_k_latents(tmp_path: Path) -> None:
    k = 3
    ae = {
        **_linear_weights(60),
        "b_dec": _rand(D_IN, seed=63),
        "k": torch.tensor(k, dtype=torch.int),
        "threshold": torch.tensor(-1.0),
    }
    sae = _load_sae(_dictionary_learning_folder(tmp_path, "AutoEncoderTopK", ae, k=k))
    assert sae.cfg.activation_fn_str == "topk" and sae.cfg.activation_fn_kwargs == {"k": k}

    x = _rand(7, D_IN, seed=64)
    post_relu = torch.relu((x - ae["b_dec"]) @ ae["encoder.weight"].T + ae["encoder.bias"])
    top = post_relu.topk(k, dim=-1)
    acts = torch.zeros_like(post_relu).scatter(-1, top.indices, top.values)
    _check(sae, x, acts, acts @ ae["decoder.weight"].T + ae["b_dec"])


def test_dictionary_learning_batch_topk_uses_its_learnt_threshold(tmp_path: Path) -> None:
    ae = {
        **_linear_weights(70),
        "b_dec": _rand(D_IN, seed=73),
        "k": torch.tensor(3, dtype=torch.int),
        "threshold": torch.tensor(0.5),
    }
    sae = _load_sae(_dictionary_learning_folder(tmp_path, "BatchTopKSAE", ae, k=3))
    assert sae.cfg.architecture == "jumprelu"

    x = _rand(7, D_IN, seed=74)
    post_relu = torch.relu((x - ae["b_dec"]) @ ae["encoder.weight"].T + ae["encoder.bias"])
    acts = post_relu * (post_relu > ae["threshold"])
    _check(sae, x, acts, acts @ ae["decoder.weight"].T + ae["b_dec"])


def test_dictionary_learning_jumprelu_autoencoder(tmp_path: Path) -> None:
    ae = {
        "W_enc": _rand(D_IN, D_SAE, seed=80),
        "b_enc": _rand(D_SAE, seed=81),
        "W_dec": _rand(D_SAE, D_IN, seed=82),
        "b_dec": _rand(D_IN, seed=83),
        "threshold": _rand(D_SAE, seed=84).abs(),
    }
    sae = _load_sae(_dictionary_learning_folder(tmp_path, "JumpReluAutoEncoder", ae))
    x = _rand(7, D_IN, seed=85)
    pre = x @ ae["W_enc"] + ae["b_enc"]  # no b_dec subtraction in this class
    acts = torch.relu(pre * (pre > ae["threshold"]))
    _check(sae, x, acts, acts @ ae["W_dec"] + ae["b_dec"])


def test_dictionary_learning_unknown_dict_class_lists_supported(tmp_path: Path) -> None:
    folder = _dictionary_learning_folder(tmp_path, "IdentityDict", _linear_weights(90))
    with pytest.raises(
        ValueError, match="unsupported dictionary_learning dict_class 'IdentityDict'"
    ):
        read_local_sae_folder(folder)


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    ae = {**_linear_weights(95), "bias": _rand(D_IN, seed=96), "extra": Path("x")}
    folder = _dictionary_learning_folder(tmp_path, "AutoEncoder", ae)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights_only=True"):
        read_local_sae_folder(folder)


# --- sparsify ----------------------------------------------------------------------------


def _sparsify_folder(path: Path, k: int, **cfg_extra: Any) -> dict[str, torch.Tensor]:
    weights = {
        "encoder.weight": _rand(D_SAE, D_IN, seed=100),
        "encoder.bias": _rand(D_SAE, seed=101),
        "W_dec": _rand(D_SAE, D_IN, seed=102),
        "b_dec": _rand(D_IN, seed=103),
    }
    cfg = {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": D_SAE,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": D_IN,
        **cfg_extra,
    }
    _write_json(path / "cfg.json", cfg)
    save_file(weights, str(path / "sae.safetensors"))
    return weights


def test_sparsify_sae_is_topk_with_b_dec_subtracted(tmp_path: Path) -> None:
    k = 4
    folder = tmp_path / "run" / "layers.2.mlp"
    folder.mkdir(parents=True)
    w = _sparsify_folder(folder, k)
    run_config = {"sae": {"k": k}, "model": "EleutherAI/pythia-70m", "dataset": "d", "ctx_len": 256}
    _write_json(tmp_path / "run" / "config.json", run_config)

    assert detect_sae_format(folder) == "sparsify"
    sae = _load_sae(folder)
    assert sae.cfg.architecture == "topk" and sae.cfg.activation_fn_kwargs == {"k": k}
    assert sae.cfg.hook_name == "blocks.2.hook_mlp_out" and sae.cfg.hook_layer == 2
    assert (sae.cfg.model_name, sae.cfg.context_size) == ("EleutherAI/pythia-70m", 256)

    x = _rand(9, D_IN, seed=104)
    pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    top = pre.topk(k, dim=-1)  # sparsify: ReLU, then TopK
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    _check(sae, x, acts, acts @ w["W_dec"] + w["b_dec"])


def test_sparsify_transcoder_is_refused(tmp_path: Path) -> None:
    _sparsify_folder(tmp_path, k=2, transcode=True)
    with pytest.raises(ValueError, match="transcoders"):
        read_local_sae_folder(tmp_path)


def test_sparsify_run_folder_points_at_its_hookpoints(tmp_path: Path) -> None:
    for hookpoint in ("layers.0", "layers.1"):
        (tmp_path / hookpoint).mkdir()
        _sparsify_folder(tmp_path / hookpoint, k=2)
    with pytest.raises(FileNotFoundError, match=r"subfolders \['layers.0', 'layers.1'\]"):
        read_local_sae_folder(tmp_path)


# --- Llama Scope ---------------------------------------------------------------------------


def _llama_scope_tensors(seed: int) -> dict[str, torch.Tensor]:
    return {
        "encoder.weight": _rand(D_SAE, D_IN, seed=seed),
        "encoder.bias": _rand(D_SAE, seed=seed + 1),
        "decoder.weight": _rand(D_IN, D_SAE, seed=seed + 2),
        "decoder.bias": _rand(D_IN, seed=seed + 3),
    }


def _llama_scope_math(w: dict[str, torch.Tensor], threshold: torch.Tensor, x: torch.Tensor):
    pre = x @ w["encoder.weight"].T + w["encoder.bias"]
    acts = pre * (pre > threshold)
    return acts, acts @ w["decoder.weight"].T + w["decoder.bias"]


def test_llama_scope_folds_its_dataset_norm_into_the_weights(tmp_path: Path) -> None:
    average_norm = 1.7
    hyperparams = {
        "d_model": D_IN,
        "d_sae": D_SAE,
        "hook_point_in": "blocks.5.hook_resid_post",
        "hook_point_out": "blocks.5.hook_resid_post",
        "jump_relu_threshold": 0.3,
        "dataset_average_activation_norm": {"in": average_norm, "out": average_norm},
    }
    _write_json(tmp_path / "hyperparams.json", hyperparams)
    w = _llama_scope_tensors(110)
    (tmp_path / "checkpoints").mkdir()
    save_file(w, str(tmp_path / "checkpoints" / "final.safetensors"))

    assert detect_sae_format(tmp_path) == "llama_scope"
    sae = _load_sae(tmp_path, dtype="float32")
    assert sae.cfg.normalize_activations == "none"  # folded
    assert sae.cfg.hook_layer == 5

    factor = math.sqrt(D_IN) / average_norm  # the SAE was trained on x * factor
    x = _rand(5, D_IN, seed=114)
    acts, recon = _llama_scope_math(w, torch.tensor(0.3), x * factor)
    _check(sae, x, acts, recon / factor)


def test_llama_scope_r1_distill_threshold_is_exp_of_log_threshold(tmp_path: Path) -> None:
    config = {"d_model": D_IN, "expansion_factor": 2, "hook_point_in": "blocks.7.hook_resid_post"}
    _write_json(tmp_path / "config.json", config)
    w = _llama_scope_tensors(120)
    w["encoder.weight"] = _rand(2 * D_IN, D_IN, seed=125)
    w["encoder.bias"] = _rand(2 * D_IN, seed=126)
    w["decoder.weight"] = _rand(D_IN, 2 * D_IN, seed=127)
    log_threshold = _rand(2 * D_IN, seed=128) / 2
    save_file(
        {**w, "log_jumprelu_threshold": log_threshold}, str(tmp_path / "sae_weights.safetensors")
    )

    assert detect_sae_format(tmp_path) == "llama_scope_r1_distill"
    sae = _load_sae(tmp_path)
    x = _rand(5, D_IN, seed=129)
    pre = x @ w["encoder.weight"].T + w["encoder.bias"]
    acts = torch.relu(pre) * (pre > log_threshold.exp())
    _check(sae, x, acts, acts @ w["decoder.weight"].T + w["decoder.bias"])


# --- single-file formats -------------------------------------------------------------------


def test_connor_rob_hook_z_sae_reshapes_heads(tmp_path: Path) -> None:
    n_heads, d_head = 2, 3
    weights = {
        "W_enc": _rand(n_heads * d_head, D_SAE, seed=130),
        "W_dec": _rand(D_SAE, n_heads * d_head, seed=131),
        "b_enc": _rand(D_SAE, seed=132),
        "b_dec": _rand(n_heads * d_head, seed=133),
    }
    torch.save(weights, tmp_path / "gpt2-small_L4_Hcat_z_lr1e-3.pt")
    old_cfg = {
        "act_size": n_heads * d_head,
        "dict_size": D_SAE,
        "act_name": "blocks.4.attn.hook_z",
        "layer": 4,
    }
    _write_json(tmp_path / "gpt2-small_L4_Hcat_z_lr1e-3_cfg.json", old_cfg)

    path = tmp_path / "gpt2-small_L4_Hcat_z_lr1e-3.pt"
    assert detect_sae_format(path) == "connor_rob_hook_z"
    sae = _load_sae(path)
    z = _rand(4, n_heads, d_head, seed=134)  # [batch, n_heads, d_head]
    flat = z.reshape(4, -1)
    acts = torch.relu((flat - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"])
    recon = (acts @ weights["W_dec"] + weights["b_dec"]).reshape(4, n_heads, d_head)
    with torch.no_grad():
        assert torch.allclose(sae(z), recon, atol=ATOL)


def test_deepseek_r1_pt_file_takes_layer_from_its_name(tmp_path: Path) -> None:
    w = _llama_scope_tensors(140)
    path = tmp_path / "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"
    torch.save(w, path)
    assert detect_sae_format(path) == "deepseek_r1"
    sae = _load_sae(path, dtype="float32")
    assert sae.cfg.hook_name == "blocks.19.hook_resid_post"
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (D_IN, D_SAE)

    x = _rand(5, D_IN, seed=144)
    acts = torch.relu(x @ w["encoder.weight"].T + w["encoder.bias"])
    _check(sae, x, acts, acts @ w["decoder.weight"].T + w["decoder.bias"])


# --- errors ---------------------------------------------------------------------------------


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="SAE folder not found"):
        read_local_sae_folder(tmp_path / "nope")


def test_folder_without_sae_files_lists_the_layouts(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(
        FileNotFoundError,
        match=r"has no cfg.json: not an sae_lens SAE folder, nor .*'sparsify'.*notes.txt",
    ):
        read_local_sae_folder(tmp_path)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    ae = _linear_weights(150)  # AutoEncoder without its 'bias'
    folder = _dictionary_learning_folder(tmp_path, "AutoEncoder", ae)
    with pytest.raises(ValueError, match=r"lacks tensors \['bias'\]"):
        read_local_sae_folder(folder)


def test_shape_that_disagrees_with_config_is_named(tmp_path: Path) -> None:
    ae = {**_linear_weights(160), "bias": _rand(D_IN + 1, seed=161)}
    folder = _dictionary_learning_folder(tmp_path, "AutoEncoder", ae)
    with pytest.raises(ValueError, match=r"tensor 'b_dec' has shape \[7\], expected \[6\]"):
        read_local_sae_folder(folder)
