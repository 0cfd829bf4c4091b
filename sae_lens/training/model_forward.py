"""Running the model just far enough to read the activation at one hook point, or at
several from one pass (a transcoder's input and output hooks, the SAEs of a multi-SAE run).

`FusedHookReader` / `FusedMultiHookReader` (sae_lens.fused_forward) compute the activations
for the HookedTransformers they reproduce; otherwise, or while hooks are attached to the
model, the model's own forward runs with hooks that capture the activations and stop the
pass after the deepest.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from transformer_lens import HookedRootModule

from sae_lens.analysis.hook_checks import hook_layer_of, require_hook
from sae_lens.errors import HookNameError
from sae_lens.fused_forward import FusedHookReader, FusedMultiHookReader


class _StopForward(Exception):
    """Raised from the capture hook: nothing after the hooked activation is computed."""


def fused_reader_for(
    model: HookedRootModule, hook_name: str, hook_layer: int, model_kwargs: dict[str, Any]
) -> FusedHookReader | None:
    """The fused forward for `hook_name` if it reproduces the model's; None means the
    model's own forward is used."""
    if model_kwargs:
        return None  # forward kwargs only the model's own forward understands
    reader = FusedHookReader.for_model(model, hook_name)
    if reader is None or reader.layer > hook_layer:
        return None  # the model's forward reports a wrong hook_layer clearly
    return reader


def multi_reader_for(
    model: HookedRootModule, hook_names: list[str], model_kwargs: dict[str, Any]
) -> FusedMultiHookReader | None:
    """The fused forward reading every hook of `hook_names` if it reproduces the model's;
    None means the model's own forward is used."""
    return None if model_kwargs else FusedMultiHookReader.for_model(model, hook_names)


def run_model_to_hook(
    model: HookedRootModule,
    tokens: torch.Tensor,
    hook_name: str,
    hook_layer: int,
    fused_reader: FusedHookReader | None,
    model_kwargs: dict[str, Any],
    autocast_lm: bool,
) -> torch.Tensor:
    """The activation at `hook_name` for `tokens` [batch, context]: [batch, context, ...]
    in the model's dtype and on its device, an inference-mode tensor."""
    with torch.inference_mode(), _lm_autocast(tokens, autocast_lm):
        if fused_reader is not None and fused_reader.can_run():
            return fused_reader(tokens)
        return _run_hooked_forward(model, tokens, hook_name, hook_layer, model_kwargs)


def _lm_autocast(tokens: torch.Tensor, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on `tokens`' device for the model's forward (`autocast_lm`), or
    nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=tokens.device.type, dtype=torch.bfloat16)


def _run_hooked_forward(
    model: HookedRootModule,
    tokens: torch.Tensor,
    hook_name: str,
    hook_layer: int,
    model_kwargs: dict[str, Any],
) -> torch.Tensor:
    """The model's own forward with a hook that captures the activation and stops."""
    require_hook(hook_name, model.hook_dict, field="hook_name")
    captured: list[torch.Tensor] = []

    def capture(activation: torch.Tensor, hook: Any) -> None:  # noqa: ARG001
        captured.append(activation)
        raise _StopForward

    try:
        model.run_with_hooks(
            tokens,
            fwd_hooks=[(hook_name, capture)],
            stop_at_layer=hook_layer + 1,
            prepend_bos=False,
            **model_kwargs,
        )
    except _StopForward:
        pass
    if not captured:
        layer = hook_layer_of(model, hook_name)
        where = "" if layer is None else f" (it is in layer {layer})"
        raise HookNameError(
            f"hook {hook_name!r}{where} did not run before layer {hook_layer + 1}: "
            f"check that hook_layer ({hook_layer}) is the layer of hook_name"
        )
    return captured[0]


def run_model_to_hooks(
    model: HookedRootModule,
    tokens: torch.Tensor,
    layers: dict[str, int],
    multi_reader: FusedMultiHookReader | None,
    model_kwargs: dict[str, Any],
    autocast_lm: bool,
) -> dict[str, torch.Tensor]:
    """{hook name: activation [batch, context, ...]} for every hook of `layers` (hook name ->
    its layer) from one forward of `tokens` [batch, context] that stops after the deepest
    layer: inference-mode tensors in the model's dtype and on its device."""
    with torch.inference_mode(), _lm_autocast(tokens, autocast_lm):
        if multi_reader is not None and multi_reader.can_run():
            return multi_reader(tokens)
        return _run_hooked_forward_to_hooks(model, tokens, layers, model_kwargs)


def _run_hooked_forward_to_hooks(
    model: HookedRootModule,
    tokens: torch.Tensor,
    layers: dict[str, int],
    model_kwargs: dict[str, Any],
) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}

    def capture_into(name: str) -> Any:
        def capture(activation: torch.Tensor, hook: Any) -> None:  # noqa: ARG001
            captured[name] = activation
            if len(captured) == len(layers):
                raise _StopForward

        return capture

    with contextlib.suppress(_StopForward):
        model.run_with_hooks(
            tokens,
            fwd_hooks=[(name, capture_into(name)) for name in layers],
            stop_at_layer=max(layers.values()) + 1,
            prepend_bos=False,
            **model_kwargs,
        )
    missing = sorted(set(layers) - set(captured))
    if missing:
        raise HookNameError(
            f"hooks {missing} did not run before layer {max(layers.values()) + 1}: check the "
            "hook_layer (hook_layer_out) of the SAEs reading them"
        )
    return captured


def hook_width(
    model: HookedRootModule, hook_name: str, hook_layer: int, model_kwargs: dict[str, Any]
) -> int:
    """The width an SAE reads at `hook_name` (heads flattened), from one forward of a
    single token."""
    tokens = torch.zeros((1, 1), dtype=torch.long, device=model_device(model))
    acts = run_model_to_hook(model, tokens, hook_name, hook_layer, None, model_kwargs, False)
    return int(acts.shape[-2] * acts.shape[-1]) if acts.ndim == 4 else int(acts.shape[-1])


def model_device(model: HookedRootModule) -> torch.device:
    """The device of the model's embedding (or first parameter): where tokens go."""
    if hasattr(model, "W_E"):
        return model.W_E.device  # type: ignore[return-value]
    return next(model.parameters()).device
