"""Splicing a transcoder into a model: its input is read at `hook_name` (left unchanged there)
and its prediction replaces the activation at `hook_name_out`. With the error term the
activation at `hook_name_out` is exactly the model's own, while hooks see the transcoder's
latents, prediction and error.

`TranscoderOutput` is the module that stands in place of the HookPoint at `hook_name_out`
while the transcoder is spliced (see `HookedSAETransformer.add_sae`). It holds the
transcoder's hook points (so they join the model's, e.g.
`blocks.0.hook_mlp_out.hook_sae_acts_post`) but not the transcoder itself, whose parameters
stay its own. `capture_input` is the forward hook that reads the input at `hook_name`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sae_lens.hook_activations import replace_sae_view, sae_view

if TYPE_CHECKING:
    from sae_lens.sae import SAE


class TranscoderOutput(nn.Module):
    """Stands at a transcoder's `hook_name_out`: returns its prediction from the input the
    model produced at `hook_name` earlier in the same forward pass."""

    def __init__(self, sae: SAE, check_input: Callable[[SAE, torch.Tensor], None]):
        super().__init__()
        self.__dict__["sae"] = sae  # not a submodule: its hook points are ours, below
        self._check_input = check_input  # the splicer's check that an input fits the SAE
        for name, hook_point in sae.hook_dict.items():
            setattr(self, name, hook_point)
        self._captured: torch.Tensor | None = None

    def capture_input(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        """Forward hook on the module at `hook_name`: keep its output for this pass."""
        self._captured = output

    def forward(self, acts_out: torch.Tensor) -> torch.Tensor:
        sae: SAE = self.__dict__["sae"]
        x, self._captured = self._captured, None
        if x is None:
            raise ValueError(
                f"the transcoder's input hook {sae.cfg.hook_name!r} did not run before its "
                f"output hook {sae.cfg.hook_name_out!r} in this forward pass (an SAE spliced "
                "at its input hook after the transcoder hides it: splice that SAE first)"
            )
        self._check_input(sae, x)
        width = (
            acts_out.shape[-2] * acts_out.shape[-1] if acts_out.ndim == 4 else acts_out.shape[-1]
        )
        if width != sae.cfg.d_out:
            raise ValueError(
                f"transcoder d_out={sae.cfg.d_out} does not match the activation at "
                f"{sae.cfg.hook_name_out!r}, whose width is {width} (shape "
                f"{tuple(acts_out.shape)}); use a transcoder trained on this hook point"
            )
        target = sae_view(acts_out, sae.cfg.hook_name_out, width)  # type: ignore[arg-type]
        prediction = sae(x, target=target if sae.use_error_term else None)
        return replace_sae_view(acts_out, prediction)
