"""The embedded default model "tiny-pydoc-gpt2": a small GPT-2 trained on pydoc-corpus.

Its Hugging Face folder (config.json, model.safetensors, tokenizer files, metrics.json)
ships inside the package, so it loads offline as a transformers model or as a
TransformerLens ``HookedTransformer`` (weights converted here from the same file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from sae_lens.embedded.names import EMBEDDED_MODEL_NAME

_MODEL_DIR = Path(__file__).with_name("default_model")

T = TypeVar("T", bound=HookedTransformer)

# from_pretrained kwargs that HF-style callers pass and that change nothing here.
_IGNORED_KWARGS = frozenset(
    {
        "trust_remote_code",
        "cache_dir",
        "local_files_only",
        "revision",
        "token",
        "low_cpu_mem_usage",
        "n_devices",
    }
)
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}


def embedded_model_dir() -> Path:
    """The Hugging Face folder of the embedded model inside the installed package."""
    if not (_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(f"embedded model files missing: no config.json in {_MODEL_DIR}")
    return _MODEL_DIR


def _hf_config() -> dict[str, Any]:
    return json.loads((embedded_model_dir() / "config.json").read_text())


def load_embedded_tokenizer() -> PreTrainedTokenizerFast:
    """The embedded byte-level BPE tokenizer; ``<|endoftext|>`` is BOS, EOS and PAD.

    Like GPT-2's, it does not add BOS by itself; TransformerLens prepends it.
    """
    return PreTrainedTokenizerFast.from_pretrained(str(embedded_model_dir()))


def embedded_tl_config(**overrides: Any) -> HookedTransformerConfig:
    """TransformerLens config of the embedded model (unprocessed "LN" layout); keyword
    arguments override fields, e.g. ``device="cpu"``, ``n_layers=1``."""
    hf = _hf_config()
    fields: dict[str, Any] = dict(
        d_model=hf["n_embd"],
        d_head=hf["n_embd"] // hf["n_head"],
        n_heads=hf["n_head"],
        d_mlp=hf.get("n_inner") or 4 * hf["n_embd"],
        n_layers=hf["n_layer"],
        n_ctx=hf["n_positions"],
        eps=hf["layer_norm_epsilon"],
        d_vocab=hf["vocab_size"],
        act_fn=hf["activation_function"],
        normalization_type="LN",
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        model_name=EMBEDDED_MODEL_NAME,
        tokenizer_name=str(embedded_model_dir()),
        default_prepend_bos=True,
    )
    fields.update(overrides)
    return HookedTransformerConfig(**fields)


def _tl_state_dict(cfg: HookedTransformerConfig) -> dict[str, torch.Tensor]:
    """Read model.safetensors (HF GPT-2 layout) into TransformerLens names and shapes."""
    hf = load_file(str(embedded_model_dir() / "model.safetensors"))
    n_heads, d_model, d_head = cfg.n_heads, cfg.d_model, cfg.d_head
    wte = hf["transformer.wte.weight"].float()
    sd: dict[str, torch.Tensor] = {
        "embed.W_E": wte,
        "pos_embed.W_pos": hf["transformer.wpe.weight"][: cfg.n_ctx].float(),
        "ln_final.w": hf["transformer.ln_f.weight"],
        "ln_final.b": hf["transformer.ln_f.bias"],
        "unembed.W_U": hf.get("lm_head.weight", wte).float().T.contiguous(),
        "unembed.b_U": torch.zeros(cfg.d_vocab),
    }
    for layer in range(cfg.n_layers):
        p, b = f"transformer.h.{layer}.", f"blocks.{layer}."
        w_qkv = hf[p + "attn.c_attn.weight"]  # [d_model, 3 * d_model], Conv1D (in, out)
        b_qkv = hf[p + "attn.c_attn.bias"].view(3, n_heads, d_head)
        for i, name in enumerate("QKV"):
            w = w_qkv[:, i * d_model : (i + 1) * d_model]
            sd[b + f"attn.W_{name}"] = w.reshape(d_model, n_heads, d_head).permute(1, 0, 2)
            sd[b + f"attn.b_{name}"] = b_qkv[i]
        sd[b + "attn.W_O"] = hf[p + "attn.c_proj.weight"].reshape(n_heads, d_head, d_model)
        sd[b + "attn.b_O"] = hf[p + "attn.c_proj.bias"]
        sd[b + "ln1.w"], sd[b + "ln1.b"] = hf[p + "ln_1.weight"], hf[p + "ln_1.bias"]
        sd[b + "ln2.w"], sd[b + "ln2.b"] = hf[p + "ln_2.weight"], hf[p + "ln_2.bias"]
        sd[b + "mlp.W_in"], sd[b + "mlp.b_in"] = hf[p + "mlp.c_fc.weight"], hf[p + "mlp.c_fc.bias"]
        sd[b + "mlp.W_out"] = hf[p + "mlp.c_proj.weight"]
        sd[b + "mlp.b_out"] = hf[p + "mlp.c_proj.bias"]
    return {k: v.float().contiguous() for k, v in sd.items()}


def load_embedded_hooked_transformer(
    model_class: type[T] = HookedTransformer,  # type: ignore[assignment]
    device: str | torch.device | None = None,
    **from_pretrained_kwargs: Any,
) -> T:
    """Build ``model_class`` (HookedTransformer or a subclass such as HookedSAETransformer)
    with the embedded weights and tokenizer, like ``HookedTransformer.from_pretrained``.

    Honoured kwargs (defaults as in from_pretrained): fold_ln, center_writing_weights,
    center_unembed, fold_value_biases (True), refactor_factored_attn_matrices (False),
    dtype / torch_dtype ("float32"), n_ctx (at most the trained context), first_n_layers,
    default_prepend_bos (True), default_padding_side, move_to_device (True), tokenizer.
    """
    kw = dict(from_pretrained_kwargs)
    process = {
        "fold_ln": kw.pop("fold_ln", True),
        "center_writing_weights": kw.pop("center_writing_weights", True),
        "center_unembed": kw.pop("center_unembed", True),
        "fold_value_biases": kw.pop("fold_value_biases", True),
        "refactor_factored_attn_matrices": kw.pop("refactor_factored_attn_matrices", False),
    }
    dtype = kw.pop("torch_dtype", None) or kw.pop("dtype", None) or torch.float32
    kw.pop("dtype", None)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    trained_ctx = _hf_config()["n_positions"]
    n_ctx = kw.pop("n_ctx", None) or trained_ctx
    if n_ctx > trained_ctx:
        raise ValueError(
            f"n_ctx {n_ctx} exceeds {EMBEDDED_MODEL_NAME}'s trained context {trained_ctx}"
        )
    overrides: dict[str, Any] = {"n_ctx": n_ctx, "dtype": dtype, "init_weights": False}
    if device is not None:
        overrides["device"] = str(device)
    if kw.get("first_n_layers") is not None:
        overrides["n_layers"] = kw.pop("first_n_layers")
    kw.pop("first_n_layers", None)
    prepend_bos = kw.pop("default_prepend_bos", None)
    overrides["default_prepend_bos"] = True if prepend_bos is None else prepend_bos
    padding_side = kw.pop("default_padding_side", None)
    move_to_device = kw.pop("move_to_device", True)
    tokenizer = kw.pop("tokenizer", None) or load_embedded_tokenizer()
    unknown = sorted(set(kw) - _IGNORED_KWARGS)
    if unknown:
        raise TypeError(f"unsupported kwargs for {EMBEDDED_MODEL_NAME}: {', '.join(unknown)}")

    cfg = embedded_tl_config(**overrides)
    model = model_class(cfg, tokenizer, move_to_device=False, default_padding_side=padding_side)
    model.load_and_process_state_dict(_tl_state_dict(cfg), **process)
    if move_to_device:
        model.move_model_modules_to_device()
    model.eval()
    return model


def load_embedded_hf_model(device: str | torch.device | None = None) -> PreTrainedModel:
    """The embedded model as a transformers ``GPT2LMHeadModel`` (eval mode)."""
    model = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir()))
    if device is not None:
        model = model.to(device)
    model.eval()
    return model
