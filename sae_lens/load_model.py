"""Load the language model an SAE reads: a TransformerLens `HookedTransformer` (by name,
local folder, or the embedded default), or any Hugging Face causal LM wrapped in
`HookedProxyLM` so that its modules can be hooked like TransformerLens hook points."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import torch
from transformer_lens import HookedRootModule, HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedTransformer import Loss, Output
from transformer_lens.utilities import USE_DEFAULT_VALUE, lm_cross_entropy_loss
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from sae_lens import logger
from sae_lens.analysis.hook_checks import ChecksHookNames
from sae_lens.config import HOOKED_MAMBA_UNSUPPORTED
from sae_lens.embedded import (
    embedded_model_dir,
    is_embedded_model,
    load_embedded_hooked_transformer,
)
from sae_lens.errors import check_device

SUPPORTED_MODEL_CLASSES = ("HookedTransformer", "AutoModelForCausalLM", "HookedMamba")

# `from_pretrained_no_processing` defaults: weights exactly as trained.
_NO_PROCESSING = {
    "fold_ln": False,
    "center_writing_weights": False,
    "center_unembed": False,
    "fold_value_biases": False,
    "refactor_factored_attn_matrices": False,
}


def load_model(
    model_class_name: str,
    model_name: str,
    device: str | torch.device | None = None,
    model_from_pretrained_kwargs: dict[str, Any] | None = None,
) -> HookedRootModule:
    """Load `model_name` as `model_class_name` ("HookedTransformer" or
    "AutoModelForCausalLM"). `model_name` may be a hub / TransformerLens name, a local
    Hugging Face folder, or the embedded default model "tiny-pydoc-gpt2"."""
    if device is not None:
        check_device(device)
    kwargs = dict(model_from_pretrained_kwargs or {})
    if kwargs.get("n_devices", 1) > 1:
        logger.info(f"Loading the model over {kwargs['n_devices']} CUDA devices")
        device = "cuda"

    if model_class_name == "HookedTransformer":
        return _load_hooked_transformer(model_name, device, kwargs)
    if model_class_name == "AutoModelForCausalLM":
        source = str(embedded_model_dir()) if is_embedded_model(model_name) else model_name
        hf_model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if device is not None:
            hf_model = hf_model.to(device)
        hf_model.eval()
        return HookedProxyLM(hf_model, AutoTokenizer.from_pretrained(source))
    if model_class_name == "HookedMamba":
        raise ValueError(HOOKED_MAMBA_UNSUPPORTED)
    raise ValueError(
        f"unknown model_class_name {model_class_name!r}; supported: {list(SUPPORTED_MODEL_CLASSES[:2])}"
    )


def _load_hooked_transformer(
    model_name: str, device: str | torch.device | None, kwargs: dict[str, Any]
) -> HookedTransformer:
    if is_embedded_model(model_name):
        return load_embedded_hooked_transformer(device=device, **{**_NO_PROCESSING, **kwargs})
    if os.path.isdir(model_name):
        return _hooked_transformer_from_folder(model_name, device, kwargs)
    return HookedTransformer.from_pretrained_no_processing(
        model_name=model_name, device=device, **kwargs
    )


def _hooked_transformer_from_folder(
    folder: str, device: str | torch.device | None, kwargs: dict[str, Any]
) -> HookedTransformer:
    """A HookedTransformer from a local Hugging Face folder (config.json + weights +
    tokenizer) of an architecture TransformerLens knows, weights unprocessed."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(
            f"model folder {folder!r} has no config.json (expected a Hugging Face folder)"
        )
    process = {key: kwargs.pop(key, value) for key, value in _NO_PROCESSING.items()}
    dtype = kwargs.pop("dtype", torch.float32)
    cfg = tl_loading.get_pretrained_model_config(
        folder, fold_ln=process["fold_ln"], device=device, dtype=dtype
    )
    hf_model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    state_dict = tl_loading.get_pretrained_state_dict(folder, cfg, hf_model)
    model = HookedTransformer(cfg, AutoTokenizer.from_pretrained(folder), move_to_device=False)
    model.load_and_process_state_dict(state_dict, **process)
    model.move_model_modules_to_device()
    model.eval()
    return model


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early; carries the activation to return."""

    def __init__(self, value: torch.Tensor | None = None):
        super().__init__()
        self.value = value


class HookedProxyLM(ChecksHookNames):
    """A Hugging Face causal LM with a TransformerLens `HookPoint` on the output of every
    module, named by its module path (e.g. "transformer.h.1" for GPT-2's second block).

    For tuple outputs the hook sees (and may replace) the first element. `forward` takes
    `stop_at_layer=k` to run only the first k transformer blocks. A hook name the model
    lacks is a HookNameError suggesting the closest module paths.
    """

    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module
    blocks_path: str  # module path of the transformer blocks' list, e.g. "transformer.h"

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.setup()

    def setup(self) -> None:
        """Create one HookPoint per module of the wrapped model and find its blocks."""
        self.mod_dict = {}
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.model.named_modules():
            if name == "":
                continue
            hook_point = HookPoint()
            hook_point.name = name  # type: ignore[assignment]
            module.register_forward_hook(get_hook_fn(hook_point))
            self.hook_dict[name] = hook_point
            self.mod_dict[name] = hook_point
        self.blocks = _find_blocks(self.model)
        self.blocks_path = next(
            (name for name, module in self.model.named_modules() if module is self.blocks), ""
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(
        self,
        tokens: torch.Tensor | str | list[str],
        return_type: Literal["both", "logits", "loss"] | None = "logits",
        loss_per_token: bool = False,
        stop_at_layer: int | None = None,
        **kwargs: Any,
    ) -> Output | Loss | torch.Tensor | None:
        """Run the model. With `stop_at_layer=k` only blocks 0..k-1 run and the output of
        block k-1 (the residual stream, [batch, pos, d_model]) is returned."""
        if return_type not in ("both", "logits", "loss", None):
            raise ValueError(
                f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}"
            )
        kwargs.pop("prepend_bos", None)  # tokens are already tokenized
        if isinstance(tokens, (str, list)):
            tokens = self.to_tokens(tokens)
        if stop_at_layer is not None:
            return self._forward_until(tokens, stop_at_layer, **kwargs)
        logits = _extract_logits(self.model(tokens, **kwargs))
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = lm_cross_entropy_loss(logits, tokens.to(logits.device), per_token=loss_per_token)
        return loss if return_type == "loss" else Output(logits, loss)

    def _forward_until(
        self, tokens: torch.Tensor, stop_at_layer: int, **kwargs: Any
    ) -> torch.Tensor:
        n_blocks = len(self.blocks)
        k = stop_at_layer + n_blocks if stop_at_layer < 0 else stop_at_layer
        if not 1 <= k <= n_blocks:
            raise ValueError(
                f"stop_at_layer {stop_at_layer} is out of range for a model with {n_blocks} blocks"
            )

        def stop(module: Any, inputs: Any, output: Any) -> None:  # noqa: ARG001
            raise _StopForward(output[0] if isinstance(output, tuple) else output)

        handle = self.blocks[k - 1].register_forward_hook(stop)
        try:
            self.model(tokens, **kwargs)
        except _StopForward as stopped:
            assert stopped.value is not None
            return stopped.value
        finally:
            handle.remove()
        raise RuntimeError(f"block {k - 1} did not run during the forward pass")

    def to_tokens(
        self,
        input: str | list[str],
        prepend_bos: bool | None = USE_DEFAULT_VALUE,
        padding_side: Literal["left", "right"] | None = USE_DEFAULT_VALUE,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> torch.Tensor:
        """Tokenize like `HookedTransformer.to_tokens`: [batch, pos] long tensor, BOS
        prepended unless `prepend_bos=False`, padded on `padding_side` (default: the
        tokenizer's), truncated to the model's context when `truncate`."""
        texts = [input] if isinstance(input, str) else list(input)
        rows = tokenize_without_bos(self.tokenizer, texts)
        bos = self.tokenizer.bos_token_id
        if (True if prepend_bos is None else prepend_bos) and bos is not None:
            rows = [[bos, *row] for row in rows]
        max_len = _max_positions(self.model)
        if truncate and max_len is not None:
            rows = [row[:max_len] for row in rows]
        side = padding_side or self.tokenizer.padding_side
        tokens = _pad(rows, _pad_token_id(self.tokenizer), left=side == "left")
        return tokens.to(self.device) if move_to_device else tokens


def get_hook_fn(hook_point: HookPoint) -> Callable[[Any, Any, Any], Any]:
    """A module forward hook that passes the module output (or the first element of a
    tuple output) through `hook_point`, so hooks added to it can read or replace it."""

    def hook_fn(module: Any, inputs: Any, output: Any) -> Any:  # noqa: ARG001
        if isinstance(output, torch.Tensor):
            return hook_point(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (hook_point(output[0]), *output[1:])
        return output

    return hook_fn


def tokenizer_prepends_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether `tokenizer(text)` puts the BOS token first by itself."""
    ids = tokenizer("a", verbose=False)["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def tokenize_without_bos(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without the BOS the tokenizer may prepend itself
    (TransformerLens' `to_tokens(..., prepend_bos=False)`, without padding)."""
    rows = tokenizer(texts, verbose=False)["input_ids"]
    if tokenizer_prepends_bos(tokenizer):
        bos = tokenizer.bos_token_id
        rows = [row[1:] if row and row[0] == bos else row for row in rows]
    return rows


def _find_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks: the ModuleList with `num_hidden_layers` entries
    (or the longest ModuleList when the config does not say)."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    matching = [m for m in lists if len(m) == n_layers]
    if matching:
        return matching[0]
    if lists:
        return max(lists, key=len)
    return torch.nn.ModuleList()


def _max_positions(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value
    return 0


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> torch.Tensor:
    width = max((len(row) for row in rows), default=0)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            values = torch.tensor(row, dtype=torch.long)
            if left:
                tokens[i, width - len(row) :] = values
            else:
                tokens[i, : len(row)] = values
    return tokens


def _extract_logits(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise ValueError(f"cannot find logits in a model output of type {type(output).__name__}")


def _extract_logits_from_output(output: Any) -> torch.Tensor:
    """The logits of a model's output: a tensor, a tuple starting with them, or a mapping
    with "logits" (5.6.0's helper)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    raise ValueError(f"Unknown output type: {type(output)}")
