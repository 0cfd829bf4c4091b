"""Checks shared by SAE splicing, evals and the activation store: does the model have the
hook point, is hook_layer the hook's layer, and does the SAE fit the activation found there.
Each failure is a one-line ValueError saying what to do."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformer_lens import HookedRootModule

from sae_lens.errors import HookNameError, did_you_mean
from sae_lens.hook_activations import sae_width_error

HookSpec = tuple[str | Callable[[str], bool], Callable[..., Any]]


def require_hook(hook_name: str, available: Iterable[str], field: str | None = None) -> None:
    """Raise a HookNameError (a ValueError and KeyError) naming `hook_name` (as the config
    `field`, when given) and the closest existing names if the model lacks it."""
    if not isinstance(available, Collection):
        available = list(available)
    if hook_name in available:
        return
    names = list(available)
    what = (
        f"{field} {hook_name!r} is not a hook point of the model"
        if field
        else f"The model has no hook point {hook_name!r}"
    )
    hint = did_you_mean(hook_name, names)
    if not hint and names and not any("hook_" in name for name in names):
        hint = (
            "; a Hugging Face model's hook names are its module paths, such as "
            f"{_block_modules(hook_name, names)}"
        )
    raise HookNameError(f"{what}{hint} (model.hook_dict lists all {len(names)} hook points)")


def _block_modules(hook_name: str, names: list[str]) -> list[str]:
    """The modules of one transformer block among module paths `names`: of the block whose
    number `hook_name` holds (e.g. 1 for "blocks.1.hook_mlp_out"), else of the first."""
    number = re.search(r"\.(\d+)\.", f".{hook_name}.")
    block_lists = [name[:-2] for name in names if name.endswith(".0")]
    if not block_lists:
        return names[:6]
    block = f"{block_lists[0]}.{number.group(1) if number else 0}"
    if block not in names:
        block = f"{block_lists[0]}.0"
    return [name for name in names if name.rpartition(".")[0] == block][:6]


def require_hooks(model: HookedRootModule, *hook_lists: Iterable[HookSpec]) -> None:
    """`require_hook` for every hook given by name in (name or filter, function) lists."""
    for hooks in hook_lists:
        for name, _ in hooks:
            if isinstance(name, str):
                require_hook(name, model.hook_dict)


class ChecksHookNames(HookedRootModule):
    """A HookedRootModule whose `add_hook`, `hooks` and so `run_with_hooks` refuse a hook
    name the model lacks with a HookNameError suggesting the closest names (TransformerLens
    raises a bare KeyError)."""

    def add_hook(self, name: Any, hook: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if isinstance(name, str):
            require_hook(name, self.hook_dict)
        super().add_hook(name, hook, *args, **kwargs)

    @contextmanager
    def hooks(  # type: ignore[override]
        self,
        fwd_hooks: list[HookSpec] = [],
        bwd_hooks: list[HookSpec] = [],
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[Any]:
        require_hooks(self, fwd_hooks, bwd_hooks)
        with super().hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts) as model:
            yield model


def hook_layer_of(model: HookedRootModule, hook_name: str) -> int | None:
    """The index of the transformer block `hook_name` lies in ("blocks.3.hook_mlp_out" -> 3;
    for a Hugging Face model its blocks' module path, e.g. "transformer.h.3.mlp" -> 3), or
    None for a hook outside the blocks."""
    blocks_path = getattr(model, "blocks_path", "blocks")
    if not blocks_path:
        return None
    found = re.match(rf"{re.escape(blocks_path)}\.(\d+)(\.|$)", hook_name)
    return int(found.group(1)) if found else None


def check_hook_layer(model: HookedRootModule, hook_name: str, hook_layer: int) -> None:
    """Raise a HookNameError when the model would stop (after block `hook_layer`) before
    `hook_name` runs, or when hook_layer is past the model's last block; warn when it is past
    the hook's block (the blocks in between run for nothing)."""
    layer = hook_layer_of(model, hook_name)
    if layer is None:
        return
    if hook_layer < layer:
        raise HookNameError(
            f"hook_layer={hook_layer} but hook {hook_name!r} is in layer {layer}: the model "
            f"stops after layer {hook_layer}, before the hook runs; set hook_layer={layer}"
        )
    # TransformerLens runs a stop_at_layer past its last block; a HookedProxyLM refuses it.
    n_blocks = len(model.blocks) if hasattr(model, "blocks_path") else 0
    if hook_layer >= n_blocks > 0:
        raise HookNameError(
            f"hook_layer={hook_layer} but the model has {n_blocks} layers (0 to "
            f"{n_blocks - 1}) and hook {hook_name!r} is in layer {layer}; set hook_layer={layer}"
        )
    if hook_layer > layer:
        wasted = (
            f"layer {hook_layer} runs"
            if hook_layer == layer + 1
            else (f"layers {layer + 1} to {hook_layer} run")
        )
        warnings.warn(
            f"hook_layer={hook_layer} but hook {hook_name!r} is in layer {layer}: {wasted} "
            f"for nothing; set hook_layer={layer}",
            UserWarning,
            stacklevel=3,
        )


def check_sae_fits(
    hook_name: str,
    d_in: int,
    width: int,
    sae_device: torch.device,
    sae_dtype: torch.dtype,
    acts: torch.Tensor,
) -> None:
    """Raise a ValueError if an SAE with `d_in` (on `sae_device`, in `sae_dtype`) cannot take
    `acts`, whose feature width as the SAE sees it is `width`."""
    if width != d_in:
        raise sae_width_error(hook_name, d_in, width, acts)
    if not same_device(acts.device, sae_device) or acts.dtype != sae_dtype:
        raise ValueError(
            f"SAE at {hook_name!r} is on {sae_device} in {sae_dtype} but the activation there is "
            f"on {acts.device} in {acts.dtype}; move it first with "
            f"sae.to(device={str(acts.device)!r}, dtype={acts.dtype})"
        )


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same, treating "cuda" as the current CUDA device."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return a.index == b.index or a.index is None or b.index is None
    current = torch.cuda.current_device()
    index_a = current if a.index is None else a.index
    index_b = current if b.index is None else b.index
    return index_a == index_b


def module_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of a module's first parameter (an SAE holds all its weights in one)."""
    param = next(module.parameters(), None)
    if param is None:
        raise ValueError(f"{type(module).__name__} has no parameters; expected an SAE with weights")
    return param.device, param.dtype
