"""The format of an activations store's checkpoint state: one flat dict whose tensor values
can go to safetensors and whose other values are JSON-serialisable.

Keys: `version`, `compat` (the settings a resumed store must share with the saved one),
the store's own parts (input shuffles, cache row, scaling factor, generator state, shuffle
buffer) and the token stream's state under `sequences_` keys.
"""

from __future__ import annotations

from typing import Any

CHECKPOINT_STATE_VERSION = 1
_SEQUENCES_PREFIX = "sequences_"


def pack_checkpoint(
    compat: dict[str, Any], parts: dict[str, Any], sequences: dict[str, Any]
) -> dict[str, Any]:
    """The flat checkpoint dict of a store with settings `compat`, its `parts` and its
    token stream's state `sequences`."""
    state: dict[str, Any] = {"version": CHECKPOINT_STATE_VERSION, "compat": compat, **parts}
    for key, value in sequences.items():
        state[f"{_SEQUENCES_PREFIX}{key}"] = value
    return state


def unpack_checkpoint(state: dict[str, Any], compat: dict[str, Any]) -> dict[str, Any]:
    """The token stream's state in `state`, after checking that `state` has this format's
    version and was saved by a store with settings `compat`."""
    if state.get("version") != CHECKPOINT_STATE_VERSION:
        raise ValueError(
            f"activation store checkpoint has version {state.get('version')!r}, expected {CHECKPOINT_STATE_VERSION}"
        )
    found = dict(state["compat"])
    differing = sorted(k for k in compat if found.get(k) != compat[k])
    if differing:
        details = ", ".join(f"{k}: saved {found.get(k)!r} vs now {compat[k]!r}" for k in differing)
        raise ValueError(
            f"activation store checkpoint was made with a different configuration ({details})"
        )
    return {
        key.removeprefix(_SEQUENCES_PREFIX): value
        for key, value in state.items()
        if key.startswith(_SEQUENCES_PREFIX)
    }


def compat_signature(store: Any) -> dict[str, Any]:
    """The settings of an `ActivationsStore` that a store resuming from its checkpoint must
    share with it."""
    signature = {
        "hook_name": store.hook_name,
        "hook_head_index": store.hook_head_index,
        "context_size": store.context_size,
        "d_in": store.d_in,
        "seqpos_slice": list(store.seqpos_slice),
        "store_batch_size_prompts": store.store_batch_size_prompts,
        "n_batches_in_buffer": store.n_batches_in_buffer,
        "train_batch_size_tokens": store.train_batch_size_tokens,
        "tokens_column": store.tokens_column,
        "dtype": str(store.dtype),
        "cached": store.cached_activations_path is not None,
    }
    if store.output_hook is not None:  # a plain store's signature is as before
        signature.update(hook_name_out=store.output_hook.name, d_out=store.output_hook.width)
    return signature
