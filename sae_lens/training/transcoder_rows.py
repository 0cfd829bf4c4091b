"""A transcoder's activation rows. Its store reads the input hook and the output hook from
one model forward and serves each token's input [d_in] and target [d_out] side by side, as
one row [d_in + d_out] of the shuffle buffer, so shuffling cannot separate them;
`split_input_target` splits served rows again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformer_lens import HookedRootModule

from sae_lens.hook_activations import sae_view
from sae_lens.training.model_forward import hook_width
from sae_lens.training.store_inputs import check_output_hook


@dataclass(frozen=True)
class OutputHook:
    """Where a transcoder's targets come from: `hook_name_out`, its layer and width."""

    name: str
    layer: int
    width: int  # d_out

    @classmethod
    def of(cls, cfg: Any) -> OutputHook | None:
        """The output hook a run config or an SAEConfig names (None: an SAE's store)."""
        if getattr(cfg, "hook_name_out", None) is None:
            return None
        return cls(cfg.hook_name_out, cfg.hook_layer_out, cfg.d_out)

    def check(
        self, model: HookedRootModule, normalize_activations: str, cached_path: str | None
    ) -> None:
        """One-line errors before any work: a hook the model lacks (or a layer that stops
        the model before it), normalisation, a cache."""
        check_output_hook(model, self.name, self.layer)
        if self.width is None or self.layer is None:
            raise ValueError("a transcoder's store needs d_out and hook_layer_out")
        if normalize_activations != "none" or cached_path is not None:
            raise ValueError(
                "a transcoder's store serves unnormalised activations from the model: "
                "normalize_activations must be 'none' and no activation cache is read"
            )

    def hook_layers(self) -> dict[str, int]:
        """{hook name: layer} of the hooks read besides the store's `hook_name`."""
        return {self.name: self.layer}

    def rows(
        self,
        raw: dict[str, torch.Tensor],
        positions: slice,
        hook_name: str,
        d_in: int,
        head_index: int | None,
    ) -> torch.Tensor:
        """Rows [batch, positions, d_in + d_out] from one forward's hook activations `raw`:
        the input's view at `hook_name` and the target beside it."""
        inputs = sae_view(raw[hook_name][:, positions], hook_name, d_in, head_index)
        return self.with_target(inputs, raw[self.name][:, positions])

    def with_target(self, inputs: torch.Tensor, raw_out: torch.Tensor) -> torch.Tensor:
        """Rows [..., d_in + d_out]: `inputs` [..., d_in] and the output hook's activation
        `raw_out` [..., d_out] (heads flattened) beside them."""
        target = raw_out.flatten(-2) if raw_out.ndim == 4 else raw_out
        if target.shape[-1] != self.width:
            raise ValueError(
                f"d_out={self.width} does not match the activation at hook_name_out "
                f"{self.name!r}, whose width is {target.shape[-1]}"
            )
        return torch.cat([inputs, target.to(inputs.dtype)], dim=-1)


def resolve_d_out(model: HookedRootModule, cfg: Any) -> None:
    """A transcoder run config without d_out gets its output hook's width (one forward of
    a single token), after the hook is checked."""
    if cfg.hook_name_out is not None and cfg.d_out is None:
        check_output_hook(model, cfg.hook_name_out, cfg.hook_layer_out)
        cfg.d_out = hook_width(model, cfg.hook_name_out, cfg.hook_layer_out, cfg.model_kwargs)


def split_input_target(
    rows: torch.Tensor, d_in: int, has_target: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(inputs [..., d_in], targets [..., d_out] or None) of served rows: a transcoder's
    store serves its input and its target side by side, an SAE's only the input."""
    if not has_target:
        return rows, None
    return rows[..., :d_in], rows[..., d_in:]
