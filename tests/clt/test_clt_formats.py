"""A CLT's own folder, circuit-tracer's layouts (a CLT, per-layer transcoders) written and read
back, and the registry loaders for the Gemma Scope transcoder layout and circuit-tracer
folders, on files written locally in those layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from sae_lens.circuit_tracer import export_circuit_tracer, load_circuit_tracer
from sae_lens.sae import SAE
from sae_lens.toolkit.pretrained_sae_loaders import (
    circuit_tracer_loader,
    load_pretrained_sae_files,
)
from tests.clt.conftest import perturbed_clt
from tests.sae_configs import sae_cfg_dict
from tests.toolkit.conftest import OfflineHubCache

X = torch.randn(9, 32, generator=torch.Generator().manual_seed(4))


def _inference_clt(**overrides: object) -> SAE:
    return perturbed_clt(SAE, **overrides)  # type: ignore[arg-type]


def _assert_same_sae(a: SAE, b: SAE) -> None:
    assert a.cfg.architecture == b.cfg.architecture
    assert a.state_dict().keys() == b.state_dict().keys()
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_the_clt_folder_round_trips_bit_for_bit(tmp_path: Path, scope: str) -> None:
    clt = _inference_clt(scope=scope)
    clt.save_model(tmp_path / "clt")
    cfg = json.loads((tmp_path / "clt" / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["hook_name"], cfg["hook_layer"]) == (
        "clt",
        "blocks.*.ln2.hook_normalized",
        1,
    )
    loaded = SAE.load_from_pretrained(str(tmp_path / "clt"))
    _assert_same_sae(clt, loaded)
    assert loaded.cfg.activation_fn_kwargs == {"k": 3, "topk_scope": scope}
    assert torch.equal(loaded(X), clt(X))
    from_registry, _, _ = SAE.from_pretrained(str(tmp_path), "clt")
    assert torch.equal(from_registry(X), clt(X))


def test_the_clt_exports_in_circuit_tracer_layout_and_loads_back(tmp_path: Path) -> None:
    clt = _inference_clt(scope="global")
    export_circuit_tracer(clt, tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert {k: config[k] for k in list(config)[:7]} == {
        "model_kind": "cross_layer_transcoder",
        "model_name": "tiny",
        "feature_input_hook": "ln2.hook_normalized",
        "feature_output_hook": "hook_mlp_out",
        "activation": "topk",
        "k": 3,
        "topk_scope": "global",
    }
    enc1 = load_file(str(tmp_path / "W_enc_1.safetensors"))
    dec0, dec1 = (load_file(str(tmp_path / f"W_dec_{i}.safetensors")) for i in (0, 1))
    # the encoder is stored transposed: [n, d_model]; layer i's decoder [n, L - i, d_model]
    assert torch.equal(enc1["W_enc_1"], clt.W_enc[:, 12:].T)
    assert torch.equal(enc1["b_dec_1"], clt.b_dec[16:])
    assert dec0["W_dec_0"].shape == (12, 2, 16) and dec1["W_dec_1"].shape == (12, 1, 16)
    assert torch.equal(dec0["W_dec_0"][:, 1], clt.W_dec[:12, 16:])
    loaded = load_circuit_tracer(tmp_path)
    assert isinstance(loaded, SAE)
    _assert_same_sae(clt, loaded)
    assert loaded.cfg.activation_fn_kwargs["topk_scope"] == "global"
    assert torch.equal(loaded(X), clt(X))


def _transcoder(layer: int, architecture: str, skip: bool, seed: int) -> SAE:
    cfg = sae_cfg_dict(
        architecture,
        d_in=16,
        d_sae=24,
        k=4,
        hook_name=f"blocks.{layer}.ln2.hook_normalized",
        hook_layer=layer,
        hook_name_out=f"blocks.{layer}.hook_mlp_out",
        d_out=16,
        skip_connection=skip,
        apply_b_dec_to_input=False,
    )
    sae = SAE.from_dict(cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.add_(torch.rand(param.shape, generator=generator) * 0.3)
    return sae


@pytest.mark.parametrize(
    ("architecture", "skip", "activation"),
    [("standard", True, "relu"), ("topk", False, "topk"), ("jumprelu", True, "jump_relu")],
)
def test_per_layer_transcoders_export_and_load_back(
    tmp_path: Path, architecture: str, skip: bool, activation: str
) -> None:
    transcoders = [_transcoder(layer, architecture, skip, seed=layer) for layer in (0, 1)]
    export_circuit_tracer(transcoders, tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (config["model_kind"], config["activation"]) == ("transcoder_set", activation)
    layer1 = load_file(str(tmp_path / "layer_1.safetensors"))
    assert torch.equal(layer1["W_enc"], transcoders[1].W_enc.T)  # [d_sae, d_in]
    assert torch.equal(layer1["W_dec"], transcoders[1].W_dec)
    if skip:  # circuit-tracer computes x @ W_skip.T: stored [d_out, d_in]
        assert torch.equal(layer1["W_skip"], transcoders[1].W_skip.T)
    if architecture == "jumprelu":
        assert torch.equal(layer1["activation_function.threshold"], transcoders[1].threshold)
    loaded = load_circuit_tracer(tmp_path)
    assert isinstance(loaded, list) and len(loaded) == 2
    for original, back in zip(transcoders, loaded, strict=True):
        _assert_same_sae(original, back)
        assert back.cfg.hook_name_out == original.cfg.hook_name_out
        x = X[:, :16]
        assert torch.equal(back(x), original(x))


def test_transcoders_that_are_not_one_per_layer_are_refused(tmp_path: Path) -> None:
    transcoders = [_transcoder(1, "standard", False, 0), _transcoder(0, "standard", False, 1)]
    with pytest.raises(ValueError, match="transcoder 0 should read 'blocks.0.ln2"):
        export_circuit_tracer(transcoders, tmp_path)


def _gemma_params(folder: Path, d_in: int = 8, d_sae: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    params = {
        "W_enc": rng.normal(size=(d_in, d_sae)).astype(np.float32),
        "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32),
        "b_enc": rng.normal(size=d_sae).astype(np.float32),
        "b_dec": rng.normal(size=d_in).astype(np.float32),
        "threshold": np.abs(rng.normal(size=d_sae)).astype(np.float32),
    }
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **params)
    return params


def _check_gemma_transcoder(cfg: dict, state_dict: dict, params: dict, layer: int) -> None:
    assert (cfg["architecture"], cfg["hook_name"], cfg["hook_name_out"]) == (
        "jumprelu",
        f"blocks.{layer}.ln2.hook_normalized",
        f"blocks.{layer}.hook_mlp_out",
    )
    assert (cfg["d_in"], cfg["d_sae"], cfg["d_out"], cfg["model_name"]) == (8, 16, 8, "gemma-2-2b")
    for key, value in params.items():
        assert torch.equal(state_dict[key], torch.from_numpy(value))


def test_the_gemma_scope_transcoder_registry_release_loads_from_the_hub_cache(
    hub_cache: OfflineHubCache,
) -> None:
    sae_id = "layer_3/width_16k/average_l0_54"
    folder = hub_cache.folder("google/gemma-scope-2b-pt-transcoders", sae_id)
    params = _gemma_params(folder)
    cfg, state_dict, _ = load_pretrained_sae_files("gemma-scope-2b-pt-transcoders", sae_id)
    _check_gemma_transcoder(cfg, state_dict, params, layer=3)
    sae, _, _ = SAE.from_pretrained("gemma-scope-2b-pt-transcoders", sae_id)
    x = torch.randn(4, 8)
    pre = x @ sae.W_enc + sae.b_enc
    expected = (pre * (pre > sae.threshold)) @ sae.W_dec + sae.b_dec  # JumpReLU transcoder
    torch.testing.assert_close(sae(x), expected)


def test_a_local_gemma_scope_transcoder_folder_loads(tmp_path: Path) -> None:
    folder = tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_5" / "width_16k" / "l0_9"
    params = _gemma_params(folder)
    sae = SAE.load_from_pretrained(str(folder))
    _check_gemma_transcoder(sae.cfg.to_dict(), sae.state_dict(), params, layer=5)


def test_circuit_tracer_folders_load_from_the_hub_cache(
    hub_cache: OfflineHubCache, tmp_path: Path
) -> None:
    clt = _inference_clt()
    export_circuit_tracer(clt, hub_cache.folder("someone/clt-tiny", "clt"))
    cfg, state_dict, _ = circuit_tracer_loader("someone/clt-tiny", "clt")
    assert cfg["architecture"] == "clt" and torch.equal(state_dict["W_dec"], clt.W_dec)
    from_hub, _, _ = SAE.from_pretrained("someone/clt-tiny", "clt")
    assert torch.equal(from_hub(X), clt(X))
    transcoders = [_transcoder(layer, "topk", False, layer) for layer in (0, 1)]
    export_circuit_tracer(transcoders, hub_cache.folder("someone/plt-tiny", "."))
    cfg, state_dict, _ = circuit_tracer_loader("someone/plt-tiny", "layer_1.safetensors")
    assert (cfg["architecture"], cfg["hook_layer"]) == ("topk", 1)
    assert torch.equal(state_dict["W_enc"], transcoders[1].W_enc)


def test_a_relu_clt_from_elsewhere_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    export_circuit_tracer(_inference_clt(), tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["activation"] = "relu"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="sae_lens CLTs use TopK, this one uses relu"):
        load_circuit_tracer(tmp_path)
