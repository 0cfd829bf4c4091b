"""A cross-layer transcoder's activation rows. One model forward reads every layer's input
and output hook, and the store serves each token's row [x_0 | ... | x_{L-1} | y_0 | ... |
y_{L-1}] (d_in = L * d_model_in, then d_out = L * d_model_out), so the trainer splits it into
input and target as it splits a transcoder's (`split_input_target`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformer_lens import HookedRootModule

from sae_lens.saes.clt import CLTLayout, hook_at, is_clt
from sae_lens.training.store_inputs import check_hook_name, check_output_hook
from sae_lens.training.transcoder_rows import OutputHook


@dataclass(frozen=True)
class CLTRows(OutputHook):
    """Where a CLT's rows come from: `name` is the output pattern, `layer` the last layer,
    `width` d_out (all layers)."""

    layout: CLTLayout

    @classmethod
    def of_clt(cls, cfg: Any) -> CLTRows:
        layout = CLTLayout.of(cfg)
        return cls(cfg.hook_name_out, cfg.hook_layer, cfg.d_out, layout)

    def hook_layers(self) -> dict[str, int]:
        """{hook name: layer} of every layer's input and output hook."""
        inputs = dict(zip(self.layout.input_hooks(), self.layout.layers, strict=True))
        outputs = dict(zip(self.layout.output_hooks(), self.layout.layers, strict=True))
        return inputs | outputs

    def check(
        self, model: HookedRootModule, normalize_activations: str, cached_path: str | None
    ) -> None:
        """One-line errors before any work: a hook the model lacks, normalisation, a cache."""
        for layer in self.layout.layers:
            check_hook_name(model, hook_at(self.layout.hook_in, layer), layer)
            check_output_hook(model, hook_at(self.layout.hook_out, layer), layer)
        if normalize_activations != "none" or cached_path is not None:
            raise ValueError(
                "a clt's store serves unnormalised activations from the model: "
                "normalize_activations must be 'none' and no activation cache is read"
            )

    def rows(
        self,
        raw: dict[str, torch.Tensor],
        positions: slice,
        hook_name: str,  # noqa: ARG002 (the CLT names its own hooks)
        d_in: int,  # noqa: ARG002
        head_index: int | None,  # noqa: ARG002
    ) -> torch.Tensor:
        """Rows [batch, positions, d_in + d_out]: every layer's input, then every layer's
        output, each checked against the per-layer width."""
        layout = self.layout
        parts = [
            _layer_view(raw[name][:, positions], name, layout.d_model_in, "input")
            for name in layout.input_hooks()
        ]
        parts += [
            _layer_view(raw[name][:, positions], name, layout.d_model_out, "output")
            for name in layout.output_hooks()
        ]
        return torch.cat([part.to(parts[0].dtype) for part in parts], dim=-1)


def _layer_view(acts: torch.Tensor, hook_name: str, width: int, side: str) -> torch.Tensor:
    x = acts.flatten(-2) if acts.ndim == 4 else acts
    if x.shape[-1] != width:
        n = "d_in" if side == "input" else "d_out"
        raise ValueError(
            f"the clt's per-layer {side} width ({n} / n_layers = {width}) does not match "
            f"{hook_name!r}, whose width is {x.shape[-1]}: set {n} to n_layers * {x.shape[-1]}"
        )
    return x


def row_source(cfg: Any) -> OutputHook | None:
    """The store's row source of a run config or an SAEConfig: a CLT's every layer, a
    transcoder's output hook, or None (an SAE's store serves its input only)."""
    return CLTRows.of_clt(cfg) if is_clt(cfg) else OutputHook.of(cfg)


def store_hook_name(cfg: Any) -> str:
    """The hook the store checks as `hook_name`: a CLT's last input hook (its pattern names
    no hook; the last layer is where the model may stop), else `cfg.hook_name`."""
    return hook_at(cfg.hook_name, cfg.hook_layer) if is_clt(cfg) else cfg.hook_name
