"""Encode only the latents a dashboard shows, when that gives the same activations.

An SAE of the same config with `d_sae` = the chosen latents holds, of every parameter, the
slices along the dimensions that shrank (found by comparing the two SAEs' shapes, so no
architecture is named here). Where each latent's activation depends only on its own
parameters (ReLU, gated, JumpReLU SAEs) that smaller SAE's activations are exactly the
chosen columns of the full SAE's; where latents compete (TopK, BatchTopK) they are not.
So the smaller SAE is used only after it reproduces the full SAE's activations on a probe
batch of real inputs in which the chosen latents fire; otherwise the full SAE encodes and
the chosen columns are taken."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from sae_lens.sae import SAE

Encoder = Callable[[torch.Tensor], torch.Tensor]
_MAX_SHARE = 0.5  # beyond this share of all latents, slicing saves little
_PROBE_ROWS = 512  # inputs the full SAE encodes for the check, when the chosen latents fire


def full_encoder(sae: SAE, features: torch.Tensor) -> Encoder:
    def encode(x: torch.Tensor) -> torch.Tensor:
        return sae.encode(x).index_select(-1, features)

    return encode


def sliced_sae(sae: SAE, features: torch.Tensor) -> SAE:
    """An SAE holding only latents `features` of `sae` (same config otherwise)."""
    cfg = {**sae.cfg.to_dict(), "d_sae": int(features.numel())}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This SAE was trained on a model loaded")
        small = SAE.from_dict(cfg).to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
    targets = small.state_dict()
    state = {}
    for name, value in sae.state_dict().items():
        target = targets[name]
        for dim, (old, new) in enumerate(zip(value.shape, target.shape, strict=True)):
            if old != new:
                value = value.index_select(dim, features.to(value.device))
        state[name] = value
    small.load_state_dict(state)
    small.eval()
    return small


@torch.inference_mode()
def latent_encoder(sae: SAE, features: torch.Tensor, probe: torch.Tensor) -> Encoder:
    """x [..., d_in] -> activations [..., len(features)] of the chosen latents: through a
    sliced SAE when it reproduces the full one on `probe` [..., d_in], else the full SAE."""
    full = full_encoder(sae, features)
    if features.numel() > _MAX_SHARE * sae.cfg.d_sae:
        return full
    try:
        small = sliced_sae(sae, features)
    except (RuntimeError, ValueError, TypeError, KeyError):  # a shape the slicing cannot map
        return full
    checked = _firing_rows(full, probe.reshape(-1, probe.shape[-1]))
    if checked is None:
        return full  # the chosen latents do not fire on the probe: it cannot tell
    probe, expected = checked
    got = small.encode(probe)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        return full
    return small.encode


def _firing_rows(full: Encoder, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(inputs, their chosen latents' activations by the full SAE): the first `_PROBE_ROWS`
    of `rows` [n, d_in] if the chosen latents fire on them, else all rows if they fire
    there, else None. Encoding every latent is the costly part of the check, so it reads
    a few rows when they are enough."""
    candidates = [rows[:_PROBE_ROWS], rows] if rows.shape[0] > _PROBE_ROWS else [rows]
    for candidate in candidates:
        expected = full(candidate)
        if bool((expected > 0).any()):
            return candidate, expected
    return None
