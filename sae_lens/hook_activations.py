"""How an SAE reads its input from a hook activation and writes its output back: one head
when the SAE has a head index, all heads flattened for [batch, pos, n_heads, d_head] hooks,
otherwise the activation as it is. The activation store, evals and splicing share these."""

from __future__ import annotations

import torch


def sae_view(
    acts: torch.Tensor, hook_name: str, d_in: int, head_index: int | None = None
) -> torch.Tensor:
    """[batch, pos, d_in] view of a hook activation [batch, pos, ...] as an SAE with `d_in`
    and `head_index` reads it; a ValueError naming the hook when the shapes disagree."""
    if head_index is not None:
        if acts.ndim != 4:
            raise ValueError(
                f"hook_head_index={head_index} is set but hook {hook_name!r} has no head "
                f"dimension (activation shape {tuple(acts.shape)})"
            )
        x = acts[:, :, head_index]
    elif acts.ndim == 4:
        x = acts.flatten(-2, -1)
    else:
        x = acts
    if x.shape[-1] != d_in:
        raise sae_width_error(hook_name, d_in, x.shape[-1], acts)
    return x


def sae_width_error(hook_name: str, d_in: int, width: int, acts: torch.Tensor) -> ValueError:
    """The error for an SAE of `d_in` given an activation whose width it sees as `width`."""
    return ValueError(
        f"SAE d_in={d_in} does not match the activation at {hook_name!r}, whose width is "
        f"{width} (shape {tuple(acts.shape)}); use an SAE trained on this hook point"
    )


def replace_sae_view(
    acts: torch.Tensor, new: torch.Tensor, head_index: int | None = None
) -> torch.Tensor:
    """`acts` [batch, pos, ...] with the part `sae_view` reads replaced by `new`
    [batch, pos, d_in] (cast to the activation's device and dtype); `acts` is not changed."""
    new = new.to(device=acts.device, dtype=acts.dtype)
    if head_index is None:
        return new.reshape(acts.shape)
    replaced = acts.clone()
    replaced[:, :, head_index] = new
    return replaced
