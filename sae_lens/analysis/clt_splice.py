"""Splicing a cross-layer transcoder (sae_lens.saes.clt) into a model: every layer's MLP
output is replaced by the CLT's prediction, the sum of the decoders of that layer's and every
earlier layer's latents. With the error term each output is exactly the model's own (the
prediction still carries the gradient), so the model's output is unchanged.

Per-layer TopK (the default) splices closed-loop: layer i's latents are chosen when the
forward pass reaches layer i's input, which already reflects the replaced outputs of the
layers before it. A global TopK needs every layer's input before it chooses any latent, so
its splice first runs the model once unpatched (a forward pre-hook) to read the inputs, and
then replaces every output from latents chosen on them (open loop).

`CLTSplice.attach(model)` adds the forward hooks (torch hooks on the model's HookPoints, which
`reset_hooks` leaves alone) and returns their handles; `splice_clt` does so inside a `with`
block for any HookedRootModule, and `HookedSAETransformer.add_sae` does so for a CLT.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from sae_lens.analysis.hook_checks import require_hook
from sae_lens.saes.clt import CLTLayout

if TYPE_CHECKING:
    from sae_lens.sae import SAE


def _module_at(model: nn.Module, path: str) -> nn.Module:
    module: Any = model
    for part in path.split("."):
        module = getattr(module, part)
    return module


class CLTSplice:
    """One CLT spliced into a model's forward passes. After a pass, `feature_acts`
    [batch, pos, L*n] holds the latents it used (layer i's at columns i*n:(i+1)*n)."""

    def __init__(self, clt: SAE, use_error_term: bool | None = None):
        self.clt = clt
        self.layout = CLTLayout.of(clt.cfg)
        self.use_error_term = clt.use_error_term if use_error_term is None else use_error_term
        self._latents: dict[int, torch.Tensor] = {}  # layer -> [batch, pos, n]
        self._clean_inputs: dict[int, torch.Tensor] | None = None  # global scope's pre-pass
        self._in_pre_pass = False
        self.feature_acts: torch.Tensor | None = None

    @property
    def _global(self) -> bool:
        return self.layout.topk_scope == "global"

    # --- per-layer pieces --------------------------------------------------------------
    def _encode_layer(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Layer `layer`'s latents [..., n] from its input x [..., d_model_in]: its own
        encoder and its own TopK (the per-layer scope)."""
        cols = self.layout.latents_of(layer)
        pre = x.to(self.clt.dtype) @ self.clt.W_enc[:, cols] + self.clt.b_enc[cols]
        top = pre.topk(self._k(), dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def _encode_all(self, inputs: dict[int, torch.Tensor]) -> None:
        """Every layer's latents at once from all inputs (global TopK)."""
        x = torch.cat([inputs[layer] for layer in self.layout.layers], dim=-1)
        acts = self.clt.encode(x)  # [..., L*n]
        for layer in self.layout.layers:
            self._latents[layer] = acts[..., self.layout.latents_of(layer)]

    def _k(self) -> int:
        return int(getattr(self.clt.activation_fn, "k", self.layout.k))

    def prediction(self, layer: int) -> torch.Tensor:
        """Layer `layer`'s predicted output [..., d_model_out] from the latents so far."""
        clt, lay = self.clt, self.layout
        out_cols = lay.outputs_of(layer)
        total = clt.b_dec[out_cols]
        for source in range(layer + 1):
            cols = lay.latents_of(source)
            acts = self._latents[source]  # [..., n]
            if clt.cfg.finetuning_scaling_factor:
                acts = acts * clt.finetuning_scaling_factor[cols]
            total = total + acts @ clt.W_dec[cols, out_cols]
        return total

    # --- hooks -------------------------------------------------------------------------
    def _on_input(self, layer: int, _module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        if self._in_pre_pass:
            assert self._clean_inputs is not None
            self._clean_inputs[layer] = output.detach()
        elif not self._global:
            if layer == 0:  # a new forward pass: forget the last one's latents
                self._latents.clear()
            self._latents[layer] = self._encode_layer(layer, output)
            if layer == self.layout.n_layers - 1:
                self._record_latents()

    def _on_output(
        self, layer: int, _module: nn.Module, _args: Any, output: torch.Tensor
    ) -> torch.Tensor | None:
        if self._in_pre_pass:
            return None
        if layer not in self._latents:
            raise ValueError(
                f"the clt's input hook {self.layout.input_hooks()[layer]!r} did not run before "
                f"its output hook {self.layout.output_hooks()[layer]!r} in this forward pass"
            )
        if output.shape[-1] != self.layout.d_model_out:
            raise ValueError(
                f"clt d_out / n_layers = {self.layout.d_model_out} does not match the "
                f"activation at {self.layout.output_hooks()[layer]!r}, whose width is "
                f"{output.shape[-1]}"
            )
        prediction = self.prediction(layer).to(output.dtype)
        if self.use_error_term:  # exactly the model's output; the gradient flows via prediction
            return output.detach() + (prediction - prediction.detach())
        return prediction

    def _pre_pass(self, model: nn.Module, _module: nn.Module, args: Any, kwargs: Any) -> None:
        """Global TopK: run the model once unpatched to read every layer's input."""
        if self._in_pre_pass:
            return
        self._in_pre_pass, self._clean_inputs = True, {}
        try:
            with torch.no_grad():
                model(*args, **kwargs)
        finally:
            self._in_pre_pass = False
        self._encode_all(self._clean_inputs)
        self._record_latents()

    def _record_latents(self) -> None:
        self.feature_acts = torch.cat([self._latents[i] for i in self.layout.layers], dim=-1)

    def attach(self, model: nn.Module) -> list[RemovableHandle]:
        """Hook the CLT into `model`; returns the handles that remove it again."""
        handles: list[RemovableHandle] = []
        for layer, (hook_in, hook_out) in enumerate(
            zip(self.layout.input_hooks(), self.layout.output_hooks(), strict=True)
        ):
            source, target = _module_at(model, hook_in), _module_at(model, hook_out)
            handles.append(source.register_forward_hook(partial(self._on_input, layer)))
            handles.append(target.register_forward_hook(partial(self._on_output, layer)))
        if self._global:
            handles.append(
                model.register_forward_pre_hook(partial(self._pre_pass, model), with_kwargs=True)
            )
        return handles


@contextmanager
def splice_clt(
    model: nn.Module, clt: SAE, use_error_term: bool | None = None
) -> Iterator[CLTSplice]:
    """Inside a `with` block, replace every layer's output hook activation of `model` (e.g.
    `blocks.*.hook_mlp_out`) by the CLT's prediction; yields the `CLTSplice`, whose
    `feature_acts` holds the latents of the last forward pass."""
    splice = CLTSplice(clt, use_error_term)
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is not None:
        for name in (*splice.layout.input_hooks(), *splice.layout.output_hooks()):
            require_hook(name, hook_dict)
    handles = splice.attach(model)
    try:
        yield splice
    finally:
        for handle in handles:
            handle.remove()
