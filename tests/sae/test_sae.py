"""Inference SAE: each architecture's encode/decode/forward against the formula written out
from its weights, error term, hooks, runtime normalisation, hook_z reshaping, folding."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.testing import assert_close

from sae_lens.sae import SAE, SAEConfig

ARCHITECTURES = ["standard", "gated", "jumprelu", "topk"]
D_IN, D_SAE, K = 6, 10, 3  # as in conftest


def reference_acts(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """Feature activations computed directly from the weights."""
    xc = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
    arch = sae.cfg.architecture
    if arch == "gated":
        gate = (xc @ sae.W_enc + sae.b_gate) > 0
        magnitude = torch.relu(xc @ (sae.W_enc * torch.exp(sae.r_mag)) + sae.b_mag)
        return gate * magnitude
    pre = xc @ sae.W_enc + sae.b_enc
    if arch == "jumprelu":
        return torch.relu(pre) * (pre > sae.threshold)
    if arch == "topk":
        kth_largest = pre.sort(dim=-1, descending=True).values[..., K - 1 : K]
        return torch.relu(pre) * (pre >= kth_largest)
    return torch.relu(pre)


def reference_out(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    return reference_acts(sae, x) @ sae.W_dec + sae.b_dec


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encode_decode_forward_match_the_formula(
    architecture: str, random_sae: Callable[..., SAE]
) -> None:
    sae = random_sae(architecture)
    x = torch.randn(7, D_IN)
    with torch.no_grad():
        acts = sae.encode(x)
        assert_close(acts, reference_acts(sae, x))
        assert_close(sae.decode(acts), acts @ sae.W_dec + sae.b_dec)
        assert_close(sae(x), reference_out(sae, x))
        assert (acts > 0).any() and (acts == 0).any()


def test_encode_accepts_any_leading_dims(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("jumprelu")
    x = torch.randn(2, 3, D_IN)
    with torch.no_grad():
        assert_close(sae(x), reference_out(sae, x))


def test_topk_keeps_exactly_the_k_largest_pre_activations(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("topk")
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # all pre-activations positive: exactly k non-zeros survive ReLU
        x = torch.randn(20, D_IN)
        acts = sae.encode(x)
        pre = sae.encode_with_hidden_pre(x)[1]
    assert ((acts != 0).sum(dim=-1) == K).all()
    top = pre.topk(K, dim=-1).indices
    assert (acts.gather(-1, top) > 0).all()


def test_tanh_relu_activation(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("standard", activation_fn_str="tanh-relu")
    x = torch.randn(4, D_IN)
    with torch.no_grad():
        assert_close(sae.encode(x), torch.tanh(torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)))


def test_no_b_dec_subtraction_when_apply_b_dec_to_input_is_false(
    random_sae: Callable[..., SAE],
) -> None:
    sae = random_sae("standard", apply_b_dec_to_input=False)
    x = torch.randn(4, D_IN)
    with torch.no_grad():
        assert_close(sae.encode(x), torch.relu(x @ sae.W_enc + sae.b_enc))


def test_finetuning_scaling_factor_scales_latents_before_decoding(
    random_sae: Callable[..., SAE],
) -> None:
    sae = random_sae("standard", finetuning_scaling_factor=True)
    acts = torch.rand(3, D_SAE)
    with torch.no_grad():
        assert_close(
            sae.decode(acts), (acts * sae.finetuning_scaling_factor) @ sae.W_dec + sae.b_dec
        )


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_error_term_returns_the_input_exactly(
    architecture: str, random_sae: Callable[..., SAE]
) -> None:
    sae = random_sae(architecture, use_error_term=False)
    sae.use_error_term = True
    x = torch.randn(5, 4, D_IN)
    assert torch.equal(sae(x), x)


def test_hooks_see_the_reconstruction_and_the_error(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("standard")
    sae.use_error_term = True
    x = torch.randn(5, D_IN)
    out, cache = sae.run_with_cache(x)
    recons = reference_out(sae, x).detach()
    assert_close(cache["hook_sae_recons"], recons)
    assert_close(cache["hook_sae_error"], x - recons)
    assert_close(cache["hook_sae_acts_post"], reference_acts(sae, x).detach())
    assert torch.equal(cache["hook_sae_input"], x)
    assert torch.equal(out, x)


def test_editing_latents_with_the_error_term_changes_the_output_by_the_edit(
    random_sae: Callable[..., SAE],
) -> None:
    sae = random_sae("standard")
    sae.use_error_term = True
    x = torch.randn(5, D_IN)
    acts = reference_acts(sae, x).detach()

    def ablate_latent_0(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        tensor = tensor.clone()
        tensor[..., 0] = 0
        return tensor

    out = sae.run_with_hooks(x, fwd_hooks=[("hook_sae_acts_post", ablate_latent_0)])
    assert_close(out, x - acts[:, :1] * sae.W_dec[0].detach())


def test_error_term_is_detached_like_5_6_0(random_sae: Callable[..., SAE]) -> None:
    """d(output)/d(input) with the error term equals d(reconstruction)/d(input)."""
    sae = random_sae("standard")
    x = torch.randn(3, D_IN, requires_grad=True)
    sae(x).sum().backward()
    expected = x.grad.clone()
    x.grad = None
    sae.use_error_term = True
    sae(x).sum().backward()
    assert_close(x.grad, expected)


def test_constant_norm_rescale_scales_in_and_out(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("standard", normalize_activations="constant_norm_rescale")
    x = torch.randn(4, D_IN) * 7
    coeff = D_IN**0.5 / x.norm(dim=-1, keepdim=True)
    xn = x * coeff
    with torch.no_grad():
        expected_acts = torch.relu((xn - sae.b_dec) @ sae.W_enc + sae.b_enc)
        assert_close(sae.encode(x), expected_acts)
        assert_close(sae(x), (expected_acts @ sae.W_dec + sae.b_dec) / coeff)


def test_layer_norm_normalises_in_and_restores_out(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("standard", normalize_activations="layer_norm")
    x = torch.randn(4, D_IN) * 3 + 1
    mu = x.mean(-1, keepdim=True)
    std = (x - mu).std(-1, keepdim=True)
    xn = (x - mu) / (std + 1e-5)
    with torch.no_grad():
        expected_acts = torch.relu((xn - sae.b_dec) @ sae.W_enc + sae.b_enc)
        assert_close(sae(x), (expected_acts @ sae.W_dec + sae.b_dec) * std + mu)


def test_expected_average_only_in_has_no_runtime_effect(random_sae: Callable[..., SAE]) -> None:
    plain = random_sae("standard")
    scaled = random_sae("standard", normalize_activations="expected_average_only_in")
    x = torch.randn(4, D_IN)
    with torch.no_grad():
        assert torch.equal(plain(x), scaled(x))


def test_unknown_normalize_activations_is_refused(cfg_dict: Callable[..., dict]) -> None:
    with pytest.raises(ValueError, match="normalize_activations must be one of .* got 'batch'"):
        SAE.from_dict(cfg_dict(normalize_activations="batch"))


def test_hook_z_sae_takes_and_returns_per_head_activations(random_sae: Callable[..., SAE]) -> None:
    n_heads, d_head = 2, 3
    sae = random_sae("standard", hook_name="blocks.0.attn.hook_z")
    z = torch.randn(4, 5, n_heads, d_head)
    with torch.no_grad():
        out = sae(z)
        assert out.shape == z.shape
        assert_close(out, reference_out(sae, z.reshape(4, 5, D_IN)).reshape(z.shape))
        assert sae.encode(z).shape == (4, 5, D_SAE)
        sae.turn_off_forward_pass_hook_z_reshaping()
        flat = z.reshape(4, 5, D_IN)
        assert_close(sae(flat), reference_out(sae, flat))


def test_hook_z_reshaping_only_for_hook_z_saes(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("standard")
    assert not sae.hook_z_reshaping_mode
    with pytest.raises(ValueError, match="only for SAEs on a hook_z"):
        sae.turn_on_forward_pass_hook_z_reshaping()


def test_wrong_input_width_is_a_clear_error(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("standard")
    with pytest.raises(ValueError, match=f"last dimension 5, expected d_in={D_IN}"):
        sae(torch.randn(2, 5))


def test_to_updates_dtype_device_and_config(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("gated")
    returned = sae.to(torch.float64)
    assert returned is sae
    # 5.6.0 writes str(dtype) into the config
    assert sae.dtype == torch.float64 and sae.cfg.dtype == "torch.float64"
    assert all(p.dtype == torch.float64 for p in sae.parameters())
    sae.to(device="cpu", dtype=torch.float16)
    assert sae.device == torch.device("cpu") and sae.cfg.device == "cpu"
    assert sae.cfg.dtype == "torch.float16" and sae.W_enc.dtype == torch.float16
    x = torch.randn(3, D_IN)
    assert sae(x).dtype == torch.float16


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_fold_W_dec_norm_keeps_outputs(architecture: str, random_sae: Callable[..., SAE]) -> None:
    sae = random_sae(architecture)
    if architecture == "topk":
        # TopK ranks latents, so folding is exact only with one common decoder norm.
        with torch.no_grad():
            sae.W_dec.data = 3 * sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
    x = torch.randn(8, D_IN)
    with torch.no_grad():
        before = sae(x)
        sae.fold_W_dec_norm()
        assert_close(sae.W_dec.norm(dim=-1), torch.ones(D_SAE))
        assert_close(sae(x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_fold_activation_norm_scaling_factor(
    architecture: str, random_sae: Callable[..., SAE]
) -> None:
    sae = random_sae(architecture, normalize_activations="expected_average_only_in")
    factor = 2.5
    x = torch.randn(8, D_IN)
    with torch.no_grad():
        expected = sae(x * factor) / factor  # what the SAE did on scaled inputs, unscaled
        sae.fold_activation_norm_scaling_factor(factor)
        assert_close(sae(x), expected, rtol=1e-5, atol=1e-5)
    assert sae.cfg.normalize_activations == "none"


def test_unknown_architecture_lists_the_known_ones(cfg_dict: Callable[..., dict]) -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown SAE architecture 'crosscoder': expected one of \['standard', 'gated', 'jumprelu', 'topk'",
    ):
        SAE.from_dict(cfg_dict("crosscoder"))


def test_unknown_dtype_and_activation_are_refused(cfg_dict: Callable[..., dict]) -> None:
    with pytest.raises(ValueError, match="unknown SAE dtype 'float8'"):
        SAE.from_dict(cfg_dict(dtype="float8"))
    with pytest.raises(ValueError, match="unknown activation_fn 'gelu'"):
        SAE.from_dict(cfg_dict(activation_fn_str="gelu"))
    with pytest.raises(ValueError, match=r"needs activation_fn_kwargs\['k'\]"):
        SAE.from_dict(cfg_dict(activation_fn_str="topk"))


def test_config_from_dict_ignores_unknown_keys_and_renames_legacy_ones(
    cfg_dict: Callable[..., dict],
) -> None:
    d = cfg_dict()
    d["hook_point"] = d.pop("hook_name")
    d["activation_fn"] = d.pop("activation_fn_str")
    d["seqpos_slice"] = [0, None]
    d["some_future_field"] = 1
    cfg = SAEConfig.from_dict(d)
    assert cfg.hook_name == "blocks.0.hook_resid_pre" and cfg.activation_fn_str == "relu"
    assert cfg.seqpos_slice == (0, None)
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg


def test_config_from_dict_names_missing_fields(cfg_dict: Callable[..., dict]) -> None:
    d = cfg_dict()
    del d["d_sae"]
    with pytest.raises(ValueError, match=r"SAEConfig is missing required field\(s\) \['d_sae'\]"):
        SAEConfig.from_dict(d)


def test_hook_points_and_name(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("standard")
    assert set(sae.hook_dict) == {
        "hook_sae_input",
        "hook_sae_acts_pre",
        "hook_sae_acts_post",
        "hook_sae_output",
        "hook_sae_recons",
        "hook_sae_error",
    }
    assert sae.get_name() == f"sae_tiny_blocks.0.hook_resid_pre_{D_SAE}"


def test_model_from_pretrained_kwargs_warns(cfg_dict: Callable[..., dict]) -> None:
    with pytest.warns(UserWarning, match="model_from_pretrained_kwargs"):
        SAE.from_dict(cfg_dict(model_from_pretrained_kwargs={"center_writing_weights": False}))


def test_5_6_0_named_encodes_and_initialisers(random_sae: Callable[..., SAE]) -> None:
    sae = random_sae("jumprelu")
    x = torch.randn(3, D_IN)
    with torch.no_grad():
        assert torch.equal(sae.encode_jumprelu(x), sae.encode(x))
        assert_close(sae.encode_standard(x), torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc))
    sae.initialize_weights_gated()
    assert sae.b_gate.shape == (D_SAE,) and sae.r_mag.shape == (D_SAE,)
