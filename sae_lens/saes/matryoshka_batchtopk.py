"""The Matryoshka BatchTopK SAE (Bussmann et al., 2025; Nabeshima, 2024): a BatchTopK SAE
whose loss adds, for every nested prefix of the latents given by `matryoshka_widths`, the
reconstruction error of that prefix alone (its kept latents, decoded with b_dec). The
first latents must then reconstruct well on their own, so they learn the general
features and later latents refine them, instead of absorbing them. Saved as a JumpReLU
SAE, as BatchTopK.

`matryoshka_widths` lists the prefix sizes, smallest first, ending at d_sae (the last
prefix is the whole SAE, whose error is the ordinary MSE loss). Left unset it is
`default_matryoshka_widths(d_sae)`: widths growing 4x per level, d_sae/64, d_sae/16,
d_sae/4, d_sae, without levels under 16 latents. Geometric levels give every level the
same relative growth, so the latents sort into coarse-to-fine tiers; four levels keep the
loss terms few (and cost little time: the sparse step decodes each band of latents once
and adds the bands up); a level under 16 latents reconstructs too little to be worth its
loss term.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from sae_lens.saes.base import TrainingLossInputs, TrainingSAEModule
from sae_lens.saes.batchtopk import BatchTopKArchitecture
from sae_lens.saes.sparse_kernels import RowSelection, sparse_decode_rows

__all__ = [
    "MatryoshkaBatchTopKArchitecture",
    "default_matryoshka_widths",
    "matryoshka_widths",
]

# The default levels: d_sae divided by these, and the smallest level kept.
_DEFAULT_DIVISORS = (64, 16, 4, 1)
_MIN_DEFAULT_WIDTH = 16


def default_matryoshka_widths(d_sae: int) -> list[int]:
    """d_sae/64, d_sae/16, d_sae/4, d_sae (integer division), dropping levels under 16
    latents (d_sae itself always stays)."""
    widths = [d_sae // divisor for divisor in _DEFAULT_DIVISORS[:-1]]
    return [w for w in widths if w >= _MIN_DEFAULT_WIDTH] + [d_sae]


def matryoshka_widths(cfg: Any) -> list[int]:
    """The prefix widths of a run or training-SAE config: `matryoshka_widths`, or the
    default for its d_sae when that is None."""
    widths = cfg.matryoshka_widths
    return default_matryoshka_widths(cfg.d_sae) if widths is None else list(widths)


def check_matryoshka_widths(widths: Any, d_sae: int) -> None:
    """Refuse anything but a non-empty, strictly increasing list of positive ints that ends
    at d_sae."""
    example = default_matryoshka_widths(d_sae)
    hint = f"list the nested prefix sizes smallest first, ending at d_sae={d_sae}, e.g. {example}"
    if not isinstance(widths, (list, tuple)) or not widths:
        raise ValueError(
            f"matryoshka_widths must be a non-empty list of ints, got {widths!r}: {hint}"
        )
    if not all(isinstance(w, int) and not isinstance(w, bool) for w in widths):
        raise ValueError(f"matryoshka_widths must hold ints, got {widths!r}: {hint}")
    if widths[0] <= 0:
        raise ValueError(f"matryoshka_widths must be positive, got {widths!r}: {hint}")
    if any(a >= b for a, b in zip(widths, widths[1:], strict=False)):
        raise ValueError(f"matryoshka_widths must be strictly increasing, got {widths!r}: {hint}")
    if widths[-1] != d_sae:
        raise ValueError(
            f"matryoshka_widths must end at d_sae={d_sae} (the whole SAE), got {widths!r}: {hint}"
        )


def _latent_sum_key(width: int) -> str:
    return f"matryoshka_latent_sum_{width}"


def _inner_reconstructions(
    sae: TrainingSAEModule, inputs: TrainingLossInputs, widths: list[int]
) -> Iterator[tuple[int, torch.Tensor]]:
    """(width, reconstruction [batch, d_in] from the first `width` latents alone) for every
    width but the last. Decoded like the SAE's output, without its hook points."""
    sums = [inputs.intermediates.get(_latent_sum_key(width)) for width in widths[:-1]]
    if all(latent_sum is not None for latent_sum in sums):  # the sparse forward's
        yield from zip(widths[:-1], [_finish(sae, s) for s in sums], strict=True)
        return
    acts = sae.apply_finetuning_scaling_factor(inputs.feature_acts)  # [batch, d_sae]
    for width in widths[:-1]:
        yield width, _finish(sae, acts[..., :width] @ sae.W_dec[:width])


def _finish(sae: TrainingSAEModule, latent_sum: torch.Tensor) -> torch.Tensor:
    """`sae.finish_decode` without the hook_sae_recons hook point."""
    out = sae.run_time_activation_norm_fn_out(latent_sum + sae.b_dec)
    return sae.reshape_fn_out(out, sae.d_head)  # type: ignore[no-any-return]


class MatryoshkaBatchTopKArchitecture(BatchTopKArchitecture):
    """BatchTopK plus one MSE term per inner prefix (`inner_mse_loss_<width>`)."""

    name = "matryoshka_batchtopk"

    def check_cfg(self, cfg: Any) -> None:
        super().check_cfg(cfg)
        check_matryoshka_widths(matryoshka_widths(cfg), cfg.d_sae)

    def decode_kept(
        self, sae: TrainingSAEModule, decoded: torch.Tensor, selection: RowSelection
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Decodes each level's band of latents (between the previous width and its own)
        once and adds the bands up, so the inner prefixes' sums cost no more than the
        whole decode."""
        widths = matryoshka_widths(sae.cfg)
        n_tokens, d_sae = selection.offsets.shape[0], sae.cfg.d_sae
        boundaries = torch.tensor(widths[:-1], device=selection.latents.device)
        band = torch.bucketize(selection.latents, boundaries, right=True)  # [nnz]: its level
        latent_sum = decoded.new_zeros(n_tokens, sae.cfg.d_in)
        sums: dict[str, torch.Tensor] = {}
        for level, width in enumerate(widths):
            entries = (band == level).nonzero().squeeze(1)
            part = RowSelection.from_flat(selection.flat[entries], n_tokens, d_sae)
            latent_sum = latent_sum + sparse_decode_rows(decoded[entries], part, sae.W_dec)
            sums[_latent_sum_key(width)] = latent_sum
        return latent_sum, sums

    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        losses = super().training_losses(sae, inputs)
        widths = matryoshka_widths(sae.cfg)
        for width, reconstruction in _inner_reconstructions(sae, inputs, widths):
            per_item = sae.mse_loss_fn(reconstruction, inputs.sae_in)  # [batch, d_in]
            losses[f"inner_mse_loss_{width}"] = per_item.sum(dim=-1).mean()
        return losses
