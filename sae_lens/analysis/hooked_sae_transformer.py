"""Splice SAEs into a language model's hook points.

`HookedSAETransformer` is a TransformerLens `HookedTransformer` that can put an SAE module in
place of one of its HookPoints: the model's activation at that point goes through the SAE, and
the SAE's own hook points become part of the model (`run_with_cache` then returns e.g.
`blocks.0.hook_resid_pre.hook_sae_acts_post`). With `use_error_term=True` the SAE adds back its
reconstruction error, so the model computes exactly what it did without the SAE while hooks still
see the SAE's latents, reconstruction and error (and gradients flow through the latents).

Several SAEs may be added on one hook point; each removal undoes the most recent addition there
(last in, first out), and removing the last one puts the original HookPoint object back, with any
hooks it carried.

An SAE must already be on the device and in the dtype of the activation it replaces: the first
forward pass raises a ValueError saying how to move it otherwise (nothing is moved silently), and
likewise if the SAE's `d_in` does not match the activation's width.

`splice_saes` does the same for any `HookedRootModule` (e.g. `sae_lens.load_model.HookedProxyLM`)
by a forward hook instead of replacing modules; there the SAE's inner hook points stay with the
SAE, not the model.

A cross-layer transcoder (sae_lens.saes.clt) replaces every layer's output hook at once, by
forward hooks (sae_lens.analysis.clt_splice); it is listed in `acts_to_saes` under its output
pattern (e.g. `blocks.*.hook_mlp_out`), by which `reset_saes` removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Float
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookedRootModule, HookPoint
from transformer_lens.HookedTransformer import HookedTransformer

from sae_lens.analysis.clt_splice import CLTSplice
from sae_lens.analysis.hook_checks import (
    ChecksHookNames,
    check_sae_fits,
    module_device_dtype,
    require_hook,
)
from sae_lens.analysis.transcoder_splice import TranscoderOutput
from sae_lens.sae import SAE
from sae_lens.saes.clt import is_clt
from sae_lens.saes.transcoder import LAYER_WILDCARD

# 5.6.0's type aliases for the loss a forward pass returns.
SingleLoss = Float[torch.Tensor, ""]  # one element
LossPerToken = Float[torch.Tensor, "batch pos-1"]
Loss = SingleLoss | LossPerToken


# What the model's forward returns, by return_type: logits [batch, pos, d_vocab], a loss
# ([] or per token [batch, pos - 1]), both as a tuple, or None.
ModelOutput = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None

logger = logging.getLogger(__name__)


def get_deep_attr(obj: Any, path: str) -> Any:
    """Follow a dotted path such as "blocks.0.attn.hook_z" (digits index into sequences)."""
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def set_deep_attr(obj: Any, path: str, value: Any) -> None:
    """Set the attribute at a dotted path such as "blocks.0.attn.hook_z" to `value`."""
    *parents, last = path.split(".")
    setattr(get_deep_attr(obj, ".".join(parents)) if parents else obj, last, value)


def _as_sae_list(saes: SAE | list[SAE]) -> list[SAE]:
    return list(saes) if isinstance(saes, (list, tuple)) else [saes]


def _sae_input_width(sae: SAE, acts: torch.Tensor) -> int:
    """Width of `acts` as the SAE sees it: hook_z SAEs flatten [..., n_heads, d_head]."""
    if getattr(sae, "hook_z_reshaping_mode", False) and acts.ndim >= 2:
        return acts.shape[-2] * acts.shape[-1]
    return acts.shape[-1]


def _check_sae_input(sae: SAE, acts: torch.Tensor) -> None:
    device, dtype = module_device_dtype(sae)
    check_sae_fits(
        sae.cfg.hook_name, sae.cfg.d_in, _sae_input_width(sae, acts), device, dtype, acts
    )


def _check_before_forward(sae: SAE, _module: nn.Module, args: tuple[Any, ...]) -> None:
    _check_sae_input(sae, args[0])


def splice_point(sae: SAE) -> str:
    """The hook point whose activation `sae` replaces: a transcoder's `hook_name_out`, an
    SAE's `hook_name`."""
    return sae.cfg.hook_name_out or sae.cfg.hook_name


@dataclass(eq=False)
class _Splice:
    """One SAE put at a hook point, and what it replaced there."""

    sae: SAE
    replaced: nn.Module  # the original HookPoint, or the SAE added before this one
    # the input fit check (an SAE), or the forward hook reading a transcoder's input
    handle: RemovableHandle
    use_error_term_before: bool | None  # set when add_sae changed the SAE's use_error_term


class HookedSAETransformer(ChecksHookNames, HookedTransformer):
    """A HookedTransformer into whose hook points SAEs can be spliced. A hook name it lacks
    (in `add_sae`, `run_with_hooks`, ...) is a HookNameError suggesting the closest names."""

    def __init__(self, *model_args: Any, **model_kwargs: Any):
        """Same arguments as HookedTransformer; use `from_pretrained` to load weights."""
        super().__init__(*model_args, **model_kwargs)
        self.acts_to_saes: dict[str, SAE] = {}
        self._splices: dict[str, list[_Splice]] = {}
        self._clt_splices: dict[str, tuple[SAE, list[RemovableHandle]]] = {}

    @classmethod
    def from_pretrained(cls, model_name: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Load a pretrained model: the embedded default model by its short name, otherwise
        anything `HookedTransformer.from_pretrained` loads (TransformerLens names, local cache)."""
        from sae_lens.embedded import is_embedded_model, load_embedded_hooked_transformer

        if not is_embedded_model(model_name):
            return super().from_pretrained(model_name, *args, **kwargs)
        if args:
            raise TypeError(
                f"pass options for the embedded model {model_name!r} by keyword, not position"
            )
        return load_embedded_hooked_transformer(model_class=cls, **kwargs)

    def add_sae(self, sae: SAE, use_error_term: bool | None = None) -> None:
        """Put `sae` at the hook point `sae.cfg.hook_name` until it is removed by `reset_saes`
        (a transcoder: read its input at `hook_name` and put its prediction in place of the
        activation at `hook_name_out`).

        An SAE already there stays underneath and comes back when this one is removed.
        `use_error_term`, if given, sets `sae.use_error_term` while it is attached.
        """
        if is_clt(sae.cfg):
            self._add_clt(sae, use_error_term)
            return
        act_name = splice_point(sae)
        for name in {sae.cfg.hook_name, act_name}:
            if name not in self._splices:
                require_hook(name, self.hook_dict)
        module: nn.Module = sae
        if sae.cfg.hook_name_out is None:
            handle = sae.register_forward_pre_hook(partial(_check_before_forward, sae))
        else:
            module = TranscoderOutput(sae, _check_sae_input)
            source = get_deep_attr(self, sae.cfg.hook_name)
            handle = source.register_forward_hook(module.capture_input)
        splice = _Splice(
            sae=sae,
            replaced=get_deep_attr(self, act_name),
            handle=handle,
            use_error_term_before=None if use_error_term is None else sae.use_error_term,
        )
        if use_error_term is not None:
            sae.use_error_term = use_error_term
        self._splices.setdefault(act_name, []).append(splice)
        set_deep_attr(self, act_name, module)
        self.acts_to_saes[act_name] = sae
        self.setup()

    def _add_clt(self, clt: SAE, use_error_term: bool | None) -> None:
        """Hook a CLT into every layer it spans (one CLT per output pattern)."""
        splice = CLTSplice(clt, use_error_term)
        for name in (*splice.layout.input_hooks(), *splice.layout.output_hooks()):
            require_hook(name, self.hook_dict)
        act_name = splice_point(clt)
        if act_name in self._clt_splices:
            raise ValueError(f"a clt is already spliced at {act_name!r}: reset_saes first")
        self._clt_splices[act_name] = (clt, splice.attach(self))
        self.acts_to_saes[act_name] = clt

    def _remove_clt(self, act_name: str) -> None:
        for handle in self._clt_splices.pop(act_name)[1]:
            handle.remove()
        del self.acts_to_saes[act_name]

    def _remove_splice(self, act_name: str, splice: _Splice) -> None:
        """Take one SAE out of the stack at `act_name`, relinking what was above or below it."""
        stack = self._splices[act_name]
        position = stack.index(splice)
        if position == len(stack) - 1:
            set_deep_attr(self, act_name, splice.replaced)
        else:
            stack[position + 1].replaced = splice.replaced
        del stack[position]
        splice.handle.remove()
        if splice.use_error_term_before is not None:
            splice.sae.use_error_term = splice.use_error_term_before
        if stack:
            self.acts_to_saes[act_name] = stack[-1].sae
        else:
            del self._splices[act_name]
            del self.acts_to_saes[act_name]
        if isinstance(splice.sae, HookedRootModule):
            splice.sae.setup()  # give its hook points back their own names

    def _undo_latest(self, act_name: str, prev_sae: SAE | None) -> None:
        """Remove the latest SAE at `act_name`; put `prev_sae` there unless that uncovered it."""
        if prev_sae is not None and splice_point(prev_sae) != act_name:
            raise ValueError(
                f"prev_sae for {act_name!r} replaces {splice_point(prev_sae)!r}; "
                "expected an SAE for the same hook point"
            )
        self._remove_splice(act_name, self._splices[act_name][-1])
        if prev_sae is None or self.acts_to_saes.get(act_name) is prev_sae:
            return
        self.setup()  # the removed SAE's hook points must leave hook_dict first
        self.add_sae(prev_sae)

    def _reset_sae(self, act_name: str, prev_sae: SAE | None = None) -> None:
        """Remove the SAE at `act_name` (5.6.0's helper of `reset_saes`), putting `prev_sae`
        there instead when given."""
        self.reset_saes([act_name], None if prev_sae is None else [prev_sae])

    def reset_saes(
        self,
        act_names: str | list[str] | None = None,
        prev_saes: list[SAE | None] | None = None,
    ) -> None:
        """Remove attached SAEs.

        With no arguments every SAE is removed and the original hook points are restored.
        Otherwise, for each name in `act_names`, the latest SAE added there is removed, and
        the matching entry of `prev_saes` (if given and not None) is attached in its place.
        """
        if isinstance(act_names, str):
            act_names = [act_names]
        for act_name in list(self._clt_splices):
            if act_names is None or act_name in act_names:
                self._remove_clt(act_name)
        if act_names is None and not prev_saes:
            for act_name in list(self._splices):
                for splice in reversed(list(self._splices[act_name])):
                    self._remove_splice(act_name, splice)
            self.setup()
            return
        names = list(self._splices) if act_names is None else act_names
        if prev_saes and len(prev_saes) != len(names):
            raise ValueError(
                f"act_names and prev_saes must have the same length (got {len(names)} "
                f"and {len(prev_saes)})"
            )
        replacements = prev_saes or [None] * len(names)
        for act_name, prev_sae in zip(names, replacements, strict=True):
            if act_name not in self._splices and LAYER_WILDCARD in act_name:
                continue  # a clt's, removed above
            if act_name not in self._splices:
                logger.warning(f"No SAE is attached to {act_name}; nothing to reset there.")
                continue
            self._undo_latest(act_name, prev_sae)
        self.setup()

    @contextmanager
    def saes(
        self,
        saes: SAE | list[SAE] = [],
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
    ) -> Iterator[HookedSAETransformer]:
        """Attach `saes` inside a `with` block; on exit (also after an exception) remove them
        again if `reset_saes_end`, leaving SAEs attached before the block in place."""
        added: list[tuple[str, _Splice]] = []
        added_clts: list[str] = []
        try:
            for sae in _as_sae_list(saes):
                self.add_sae(sae, use_error_term=use_error_term)
                act_name = splice_point(sae)
                if is_clt(sae.cfg):
                    added_clts.append(act_name)
                    continue
                added.append((act_name, self._splices[act_name][-1]))
            yield self
        finally:
            if reset_saes_end:
                for act_name in added_clts:
                    if act_name in self._clt_splices:
                        self._remove_clt(act_name)
                for act_name, splice in reversed(added):
                    if splice in self._splices.get(act_name, []):
                        self._remove_splice(act_name, splice)
                self.setup()

    def run_with_saes(
        self,
        *model_args: Any,
        saes: SAE | list[SAE] = [],
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        **model_kwargs: Any,
    ) -> ModelOutput:
        """Run the forward pass with `saes` attached, then remove them (if `reset_saes_end`)."""
        with self.saes(saes=saes, reset_saes_end=reset_saes_end, use_error_term=use_error_term):
            return self(*model_args, **model_kwargs)

    def run_with_cache_with_saes(
        self,
        *model_args: Any,
        saes: SAE | list[SAE] = [],
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        return_cache_object: bool = True,
        remove_batch_dim: bool = False,
        **kwargs: Any,
    ) -> tuple[ModelOutput, ActivationCache | dict[str, torch.Tensor]]:
        """`run_with_cache` with `saes` attached; the cache includes the SAEs' hook points."""
        with self.saes(saes=saes, reset_saes_end=reset_saes_end, use_error_term=use_error_term):
            return self.run_with_cache(  # type: ignore[return-value]
                *model_args,
                return_cache_object=return_cache_object,  # type: ignore[arg-type]
                remove_batch_dim=remove_batch_dim,
                **kwargs,
            )

    def run_with_hooks_with_saes(
        self,
        *model_args: Any,
        saes: SAE | list[SAE] = [],
        reset_saes_end: bool = True,
        fwd_hooks: list[tuple[str | Callable, Callable]] = [],
        bwd_hooks: list[tuple[str | Callable, Callable]] = [],
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **model_kwargs: Any,
    ) -> Any:
        """`run_with_hooks` with `saes` attached; hooks may target the SAEs' hook points."""
        with self.saes(saes=saes, reset_saes_end=reset_saes_end):
            return self.run_with_hooks(
                *model_args,
                fwd_hooks=fwd_hooks,
                bwd_hooks=bwd_hooks,
                reset_hooks_end=reset_hooks_end,
                clear_contexts=clear_contexts,
                **model_kwargs,
            )


def _run_sae_hook(sae: SAE, acts: torch.Tensor, hook: HookPoint) -> torch.Tensor:  # noqa: ARG001
    _check_sae_input(sae, acts)
    return sae(acts)


def _capture_hook(output: TranscoderOutput, acts: torch.Tensor, hook: HookPoint) -> None:
    output.capture_input(hook, (), acts)


def _run_transcoder_hook(
    output: TranscoderOutput,
    acts: torch.Tensor,
    hook: HookPoint,  # noqa: ARG001
) -> torch.Tensor:
    return output(acts)


@contextmanager
def splice_saes(
    model: HookedRootModule,
    saes: SAE | list[SAE],
    use_error_term: bool | None = None,
) -> Iterator[HookedRootModule]:
    """Inside a `with` block, pass the activation at each SAE's hook point through the SAE, in
    any HookedRootModule (e.g. a HookedProxyLM wrapping a Hugging Face model).

    The SAE's output replaces the activation (a transcoder's prediction from the activation
    at `hook_name` replaces the one at `hook_name_out`); `use_error_term`, if given, sets each
    SAE's `use_error_term` for the block. The SAEs' own hook points are not added to the
    model's hook_dict: cache them with hooks on the SAE itself.
    """
    sae_list = _as_sae_list(saes)
    clt_splices = [CLTSplice(sae, use_error_term) for sae in sae_list if is_clt(sae.cfg)]
    sae_list = [sae for sae in sae_list if not is_clt(sae.cfg)]
    for splice in clt_splices:
        for name in (*splice.layout.input_hooks(), *splice.layout.output_hooks()):
            require_hook(name, model.hook_dict)
    for sae in sae_list:
        for name in {sae.cfg.hook_name, splice_point(sae)}:
            require_hook(name, model.hook_dict)
    before = [sae.use_error_term for sae in sae_list]
    handles = [handle for splice in clt_splices for handle in splice.attach(model)]
    try:
        if use_error_term is not None:
            for sae in sae_list:
                sae.use_error_term = use_error_term
        fwd_hooks: list[tuple[str | Callable, Callable]] = []
        for sae in sae_list:
            if sae.cfg.hook_name_out is None:
                fwd_hooks.append((sae.cfg.hook_name, partial(_run_sae_hook, sae)))
                continue
            output = TranscoderOutput(sae, _check_sae_input)
            fwd_hooks.append((sae.cfg.hook_name, partial(_capture_hook, output)))
            fwd_hooks.append((sae.cfg.hook_name_out, partial(_run_transcoder_hook, output)))
        with model.hooks(fwd_hooks=fwd_hooks):
            yield model
    finally:
        for handle in handles:
            handle.remove()
        for sae, value in zip(sae_list, before, strict=True):
            sae.use_error_term = value
