"""Builders shared by the CLT tests: small CLT configs over the tiny 2-layer model
(d_model 16), perturbed CLTs (so zero-initialised biases matter), and the direct formula a
CLT's forward pass must match."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
from sae_lens.sae import SAE
from sae_lens.saes.clt import causal_mask
from sae_lens.training.training_sae import TrainingSAE
from tests.analysis.test_hooked_sae_transformer import with_sae_support
from tests.conftest import build_tiny_tl_model
from tests.sae_configs import training_sae_cfg_dict
from tests.toolkit.conftest import hub_cache as hub_cache  # the offline hub cache fixture

IN_PATTERN, OUT_PATTERN = "blocks.*.ln2.hook_normalized", "blocks.*.hook_mlp_out"
N_LAYERS, D_MODEL = 2, 16


def clt_cfg_dict(
    *,
    n_latents: int = 12,
    k: int = 3,
    scope: str = "layer",
    d_model: int = D_MODEL,
    **overrides: Any,
) -> dict[str, Any]:
    """Every TrainingSAEConfig field of a CLT over the tiny model's two layers."""
    cfg = training_sae_cfg_dict(
        "clt",
        d_in=N_LAYERS * d_model,
        d_sae=N_LAYERS * n_latents,
        hook_name=IN_PATTERN,
        hook_layer=N_LAYERS - 1,
        hook_name_out=OUT_PATTERN,
        d_out=N_LAYERS * d_model,
        apply_b_dec_to_input=False,
        activation_fn_str="topk",
        activation_fn_kwargs={"k": k, "topk_scope": scope},
    )
    cfg.update(overrides)
    return cfg


def perturbed_clt(cls: type[SAE] = TrainingSAE, seed: int = 0, **overrides: Any) -> SAE:
    """A CLT whose every parameter moved by noise (the decoder's zero blocks kept zero)."""
    torch.manual_seed(seed)  # the initialisation draws from the global generator
    clt = cls.from_dict(clt_cfg_dict(**overrides))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in clt.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
        clt.W_dec.mul_(causal_mask(_layout(clt)))
    return clt


def _layout(clt: SAE) -> Any:
    from sae_lens.saes.clt import CLTLayout

    return CLTLayout.of(clt.cfg)


def direct_forward(clt: SAE, x: torch.Tensor, scope: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [batch, L*n], output [batch, L*d]) written out layer by layer: each layer's
    encoder on its own input, TopK per layer or over all, and output j the sum over source
    layers i <= j of latents_i @ W_dec[i -> j] plus b_dec_j."""
    lay = _layout(clt)
    n, d, k = lay.n_latents, lay.d_model_out, lay.k
    pre = [
        x[:, i * d : (i + 1) * d] @ clt.W_enc[:, i * n : (i + 1) * n]
        + clt.b_enc[i * n : (i + 1) * n]
        for i in range(lay.n_layers)
    ]
    if scope == "layer":
        acts = []
        for p in pre:
            top = p.topk(k, dim=-1)
            acts.append(torch.zeros_like(p).scatter(-1, top.indices, top.values.relu()))
        latents = torch.cat(acts, dim=-1)
    else:
        allpre = torch.cat(pre, dim=-1)
        top = allpre.topk(k * lay.n_layers, dim=-1)
        latents = torch.zeros_like(allpre).scatter(-1, top.indices, top.values.relu())
    outs = []
    for j in range(lay.n_layers):
        out = clt.b_dec[j * d : (j + 1) * d]
        for i in range(j + 1):
            block = clt.W_dec[i * n : (i + 1) * n, j * d : (j + 1) * d]
            out = out + latents[:, i * n : (i + 1) * n] @ block
        outs.append(out)
    return latents, torch.cat(outs, dim=-1)


@pytest.fixture
def pair() -> tuple[HookedSAETransformer, Any]:
    """The tiny model as a HookedSAETransformer and as a plain HookedTransformer."""
    return with_sae_support(build_tiny_tl_model())


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))
