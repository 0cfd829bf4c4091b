"""Transcoders: an SAE of any architecture that reads one hook (`hook_name`) and predicts the
activation at another (`hook_name_out`, width `d_out`) through its sparse latents; a skip
transcoder (`skip_connection`) adds a linear path `x @ W_skip`, W_skip [d_in, d_out]
initialised at zero. Its decoder (`W_dec` [d_sae, d_out], `b_dec` [d_out]) writes in the
output space, so `b_dec` is never subtracted from the input.

This module holds what is particular to transcoders and independent of any SAE class: the
config checks, the layer of an output hook, and the on-disk form, which SAELens 6 reads:
`cfg.json` names the architecture `transcoder`, `skip_transcoder`, `jumprelu_transcoder` or
`jumprelu_skip_transcoder` (other architectures: `<name>_transcoder`,
`<name>_skip_transcoder`) and holds `hook_name_out`, `hook_layer_out` and `d_out`;
`sae_weights.safetensors` stores `W_skip` transposed, [d_out, d_in], as SAELens 6 does.
"""

from __future__ import annotations

import re
from typing import Any

import torch

TRANSCODER_SUFFIX = "transcoder"
SKIP_PREFIX = "skip_"
_LAYER_OF_HOOK = re.compile(r"blocks\.(\d+)\.")
_EMBEDDING_HOOKS = ("hook_embed", "hook_pos_embed")
# In a cross-layer transcoder's hook patterns (sae_lens.saes.clt), the layer.
LAYER_WILDCARD = "*"


def is_transcoder(cfg: Any) -> bool:
    """Whether a config (an SAEConfig or a run config) describes a transcoder."""
    return getattr(cfg, "hook_name_out", None) is not None


def output_width(cfg: Any) -> int:
    """The width of what the SAE outputs: d_out for a transcoder, d_in for an SAE."""
    return cfg.d_out if is_transcoder(cfg) else cfg.d_in


def layer_of_hook(hook_name: str) -> int | None:
    """The block a TransformerLens hook name is in (`blocks.3.hook_mlp_out` -> 3, the
    embedding hooks -> 0), or None when the name does not say."""
    if hook_name in _EMBEDDING_HOOKS:
        return 0
    match = _LAYER_OF_HOOK.match(hook_name)
    return None if match is None else int(match.group(1))


def derive_hook_layer_out(
    hook_name_out: str, hook_layer_out: int | None, hook_layer: int | None = None
) -> int:
    """`hook_layer_out`, or the layer `hook_name_out` names when it is None (a CLT's pattern,
    `*` for the layer, ends where its input pattern does: `hook_layer`)."""
    if hook_layer_out is not None:
        if hook_layer_out < 0:
            raise ValueError(f"hook_layer_out must be >= 0, got {hook_layer_out}")
        return hook_layer_out
    if LAYER_WILDCARD in hook_name_out and hook_layer is not None:
        return hook_layer
    layer = layer_of_hook(hook_name_out)
    if layer is None:
        raise ValueError(
            f"cannot tell the layer of hook_name_out {hook_name_out!r} from its name: set "
            "hook_layer_out"
        )
    return layer


def check_transcoder_fields(cfg: Any) -> None:
    """One-line errors for transcoder settings that cannot work (`cfg`: an SAEConfig or a
    run config with the transcoder fields set)."""
    if cfg.hook_name_out == cfg.hook_name:
        raise ValueError(
            f"hook_name_out equals hook_name ({cfg.hook_name!r}): a transcoder predicts another "
            "hook's activation; leave hook_name_out unset to train an SAE"
        )
    if cfg.d_out is not None and (not isinstance(cfg.d_out, int) or cfg.d_out < 1):
        raise ValueError(f"d_out must be a positive integer, got {cfg.d_out!r}")
    if cfg.apply_b_dec_to_input:
        raise ValueError(
            "apply_b_dec_to_input=True is not supported for transcoders: b_dec is the output "
            "bias (width d_out); set apply_b_dec_to_input=False"
        )
    if cfg.normalize_activations not in ("none", None):
        raise ValueError(
            f"normalize_activations={cfg.normalize_activations!r} is not supported for "
            "transcoders (the input and the output would need scales of their own); use 'none'"
        )


def check_run_config(cfg: Any, apply_b_dec_to_input_set: bool) -> None:
    """A run config's transcoder fields (in place): hook_layer_out from hook_name_out's
    name when unset; apply_b_dec_to_input turned off unless the user set it (then it is
    refused: b_dec is the output bias). A run config without hook_name_out must leave the
    other output fields unset."""
    if not is_transcoder(cfg):
        check_no_transcoder_fields(cfg)
        if cfg.d_out is not None:
            raise ValueError("d_out is set but hook_name_out is not")
        return
    if cfg.apply_b_dec_to_input and not apply_b_dec_to_input_set:
        cfg.apply_b_dec_to_input = False
    check_transcoder_fields(cfg)
    cfg.hook_layer_out = derive_hook_layer_out(
        cfg.hook_name_out, cfg.hook_layer_out, cfg.hook_layer
    )
    if cfg.use_cached_activations:
        raise ValueError(
            "use_cached_activations is not supported for transcoders yet: they read "
            "hook_name and hook_name_out from the model"
        )


def check_no_transcoder_fields(cfg: Any) -> None:
    """Refuse the output-side fields on a config without `hook_name_out`."""
    if cfg.skip_connection:
        raise ValueError("skip_connection=True needs hook_name_out (it is a transcoder option)")
    if cfg.hook_layer_out is not None:
        raise ValueError("hook_layer_out is set but hook_name_out is not")


# --- on-disk form ---------------------------------------------------------------------------
def saved_architecture(architecture: str, skip_connection: bool) -> str:
    """The architecture name a transcoder's cfg.json holds (SAELens 6's names for standard
    and jumprelu transcoders)."""
    prefix = "" if architecture == "standard" else f"{architecture}_"
    return f"{prefix}{SKIP_PREFIX if skip_connection else ''}{TRANSCODER_SUFFIX}"


def parse_saved_architecture(name: str) -> tuple[str, bool] | None:
    """(architecture, skip_connection) of a saved transcoder architecture name, or None when
    `name` is not one."""
    if not name.endswith(TRANSCODER_SUFFIX):
        return None
    rest = name[: -len(TRANSCODER_SUFFIX)]
    skip = rest.endswith(SKIP_PREFIX)
    if skip:
        rest = rest[: -len(SKIP_PREFIX)]
    return (rest.rstrip("_") or "standard"), skip


def cfg_dict_for_saving(cfg_dict: dict[str, Any]) -> None:
    """Give a transcoder's cfg.json its saved architecture name (in place; a plain SAE's
    dict is left as it is, and so is a CLT's: its hook patterns say what it is)."""
    if cfg_dict.get("hook_name_out") is None or LAYER_WILDCARD in str(cfg_dict.get("hook_name")):
        return
    cfg_dict["architecture"] = saved_architecture(
        cfg_dict["architecture"], bool(cfg_dict.get("skip_connection"))
    )


def cfg_dict_from_saved(cfg_dict: dict[str, Any]) -> None:
    """Undo `cfg_dict_for_saving` on a dict read from cfg.json (in place)."""
    parsed = parse_saved_architecture(str(cfg_dict.get("architecture", "")))
    if parsed is None:
        return
    cfg_dict["architecture"], cfg_dict["skip_connection"] = parsed
    if cfg_dict.get("hook_name_out") is None:
        raise ValueError(
            f"a {cfg_dict['architecture']} transcoder config needs hook_name_out (the hook it "
            "predicts); the cfg.json lacks it"
        )


def state_dict_for_saving(state_dict: dict[str, torch.Tensor]) -> None:
    """W_skip [d_in, d_out] -> the saved [d_out, d_in] (in place)."""
    if "W_skip" in state_dict:
        state_dict["W_skip"] = state_dict["W_skip"].t().contiguous()


def state_dict_from_saved(state_dict: dict[str, torch.Tensor]) -> None:
    """The saved W_skip [d_out, d_in] -> [d_in, d_out] (in place)."""
    state_dict_for_saving(state_dict)  # a transpose is its own inverse
