"""Config dicts for SAEs and TrainingSAEs built directly in tests (not from a run config)."""

from __future__ import annotations

from typing import Any

import torch

from sae_lens.cli_support import layer_of_hook
from sae_lens.sae import SAE, SAEConfig
from sae_lens.saes.registry import architecture_names
from sae_lens.training.training_sae import TrainingSAE

# The architectures that reconstruct their input (a clt reads and writes hook patterns over
# several layers: tests/clt builds its own configs).
SAE_ARCHITECTURES = [name for name in architecture_names() if name != "clt"]


def sae_cfg_dict(
    architecture: str = "standard", *, d_in: int, d_sae: int, k: int = 2, **overrides: Any
) -> dict[str, Any]:
    """Every SAEConfig field of a small SAE on a layer-0 residual hook; `k` is used by topk
    only."""
    cfg: dict[str, Any] = dict(
        architecture=architecture,
        d_in=d_in,
        d_sae=d_sae,
        activation_fn_str="topk" if architecture == "topk" else "relu",
        activation_fn_kwargs={"k": k} if architecture == "topk" else {},
        apply_b_dec_to_input=True,
        finetuning_scaling_factor=False,
        context_size=8,
        model_name="tiny",
        hook_name="blocks.0.hook_resid_pre",
        hook_layer=0,
        hook_head_index=None,
        prepend_bos=True,
        dataset_path="data",
        dataset_trust_remote_code=False,
        normalize_activations="none",
        dtype="float32",
        device="cpu",
        sae_lens_training_version=None,
    )
    cfg.update(overrides)
    return cfg


def training_sae_cfg_dict(
    architecture: str = "standard", *, d_in: int, d_sae: int, k: int = 2, **overrides: Any
) -> dict[str, Any]:
    """Every TrainingSAEConfig field, with options off; `k` is used by topk only."""
    training = dict(
        l1_coefficient=1.0,
        lp_norm=1.0,
        use_ghost_grads=False,
        normalize_sae_decoder=False,
        noise_scale=0.0,
        decoder_orthogonal_init=False,
        mse_loss_normalization=None,
        jumprelu_init_threshold=0.001,
        jumprelu_bandwidth=0.001,
        decoder_heuristic_init=False,
        init_encoder_as_decoder_transpose=False,
        scale_sparsity_penalty_by_decoder_norm=False,
    )
    return sae_cfg_dict(architecture, d_in=d_in, d_sae=d_sae, k=k, **{**training, **overrides})


def perturbed_training_sae(cfg: dict[str, Any], scale: float = 0.3) -> TrainingSAE:
    """A TrainingSAE from `cfg` (seed 0) with every parameter moved by N(0, scale^2) noise,
    so zero-initialised biases and thresholds matter in the test."""
    torch.manual_seed(0)
    sae = TrainingSAE.from_dict(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * scale)
    return sae


def random_relu_sae(hook_name: str, *, d_in: int, d_sae: int, seed: int, **overrides: Any) -> SAE:
    """A standard ReLU SAE on `hook_name` whose parameters are all drawn from N(0, 0.3^2)
    (so its latents fire on a good share of tokens); `overrides` are SAEConfig fields."""
    cfg = sae_cfg_dict(
        d_in=d_in, d_sae=d_sae, hook_name=hook_name, hook_layer=layer_of_hook(hook_name)
    )
    cfg.update(overrides)
    sae = SAE(SAEConfig.from_dict(cfg))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return sae
