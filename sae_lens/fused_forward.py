"""A fused, inference-only forward pass that reads one hook's activations from a
TransformerLens `HookedTransformer`.

TransformerLens materialises every attention pattern and calls a HookPoint for each
intermediate; an SAE needs the tensor at one hook only. For the common decoder
architectures (GPT-2, GPT-J/GPT-NeoX, LLaMA/Mistral/Qwen2 and models built from a plain
config) `FusedHookReader` computes that tensor with fused kernels (scaled-dot-product
attention, `layer_norm`/`rms_norm`, `addmm`) and stops right after the hook. It reads the
model's own weights at every call, so edits to the weights are seen.

`FusedHookReader.for_model` returns None for anything it does not reproduce (another
architecture or option, a hook it does not serve); `can_run` is False while any hook would
run (TransformerLens, raw PyTorch or global module hooks, an SAE spliced in) or a module was
swapped or had its forward replaced. Callers then use the model's own forward, so the two paths always give the same activations (up to float
rounding: tests compare them hook by hook).
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer
from transformer_lens.components import (
    Attention,
    Embed,
    GatedMLP,
    GroupedQueryAttention,
    LayerNorm,
    LayerNormPre,
    PosEmbed,
    RMSNorm,
    RMSNormPre,
    TransformerBlock,
)
from transformer_lens.components.mlps.mlp import MLP

from sae_lens.module_hooks import global_hooks_active, own_hooks_active

_GELU_TANH_SCALE = 2.0 * math.sqrt(2.0 / math.pi)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3).
    For float32/64 on CPU it is computed as x * sigmoid(2u), the same function, in five
    in-place passes: about 1.5x faster there than aten's tanh-GELU kernel (the largest
    non-matmul cost of a GPT-2 forward); elsewhere that kernel."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return F.gelu(x, approximate="tanh")
    out = x * x
    out.mul_(_GELU_TANH_SCALE * 0.044715).add_(_GELU_TANH_SCALE).mul_(x).sigmoid_()
    return out.mul_(x)


_ARCHITECTURES = {
    None,
    "GPT2LMHeadModel",
    "GPTJForCausalLM",
    "GPTNeoXForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
}
# Config options that change the forward pass; each must have its plain value here.
_PLAIN_OPTIONS: dict[str, Any] = {
    "use_attn_result": False,
    "use_split_qkv_input": False,
    "use_attn_in": False,
    "use_hook_mlp_in": False,
    "use_local_attn": False,
    "attn_types": None,
    "post_embedding_ln": False,
    "use_normalization_before_and_after": False,
    "use_qk_norm": False,
    "clip_qkv": None,
    "use_logn_attn": False,
    "use_attention_sinks": False,
    "load_in_4bit": False,
    "num_experts": None,
    "attention_dir": "causal",
    "n_devices": 1,
}
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    # gelu_new, gelu_fast and gelu_pytorch_tanh are all the tanh approximation of GELU
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu2": lambda x: F.relu(x).square(),
}
_ATTENTION_ONLY_POINTS = {
    "hook_embed",
    "hook_pos_embed",
    "hook_resid_pre",
    "ln1.hook_normalized",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_post",
}
_NORMS = (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre)
_BLOCK_HOOK = re.compile(
    r"blocks\.(\d+)\.(hook_resid_pre|hook_attn_out|hook_resid_mid|hook_mlp_out|hook_resid_post"
    r"|attn\.hook_z|mlp\.hook_pre|mlp\.hook_post|ln1\.hook_normalized|ln2\.hook_normalized)"
)


@dataclass(frozen=True)
class _Target:
    layer: int  # -1 for the embedding hooks
    point: str  # e.g. "hook_resid_post", "attn.hook_z", "hook_embed"


class FusedHookReader:
    """Computes the activations at one hook of a HookedTransformer with a fused
    inference-only forward pass (see the module docstring)."""

    def __init__(self, model: HookedTransformer, hook_name: str, target: _Target):
        self.model = model
        self.hook_name = hook_name
        self._target = target
        self._hook_points = dict(model.hook_dict)
        self._module_ids = [(name, id(m)) for name, m in model.named_modules()]
        self._activation = _ACTIVATIONS.get(model.cfg.act_fn or "")
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self._fused_pass
        # 1 / attn_scale per block as a Python float (TransformerLens keeps a NumPy scalar,
        # which torch.compile cannot take under inference mode); the config fixes it.
        self._attn_scales = {block: 1.0 / float(block.attn.attn_scale) for block in model.blocks}

    @classmethod
    def for_model(cls, model: Any, hook_name: str) -> FusedHookReader | None:
        """A reader for `hook_name`, or None when the fused pass would not reproduce the
        model's own forward for it (`unsupported_reason` says why)."""
        if unsupported_reason(model, hook_name) is not None:
            return None
        target = _parse_hook(hook_name)
        assert target is not None
        return cls(model, hook_name, target)

    @property
    def layer(self) -> int:
        """The block whose hook is read (-1 for the embedding hooks)."""
        return self._target.layer

    def can_run(self) -> bool:
        """Whether the fused pass computes what the model's own forward would now. False
        while any hook would run (TransformerLens hooks, an SAE spliced into a hook point,
        raw PyTorch hooks on any submodule, global module hooks), while a module differs
        from the one the reader was built for (swapped, or its `forward` replaced on the
        instance), or while the config no longer qualifies; callers then use the model's
        own forward, which honours all of these."""
        model = self.model
        if global_hooks_active() or model.hook_dict != self._hook_points:
            return False
        modules = list(model.named_modules())
        if [(name, id(m)) for name, m in modules] != self._module_ids:
            return False
        if any(own_hooks_active(m) or "forward" in vars(m) for _, m in modules):
            return False
        return unsupported_reason(model, self.hook_name) is None

    def compile(self, mode: str | None = None) -> None:
        """Run the fused pass through `torch.compile` (with `mode`) from now on; it compiles
        on its first call. The model's own forward, used while `can_run` is False, stays
        eager."""
        self._forward = torch.compile(self._fused_pass, mode=mode)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Activations at the hook for tokens [batch, pos], shaped as the hook sees them.
        Run it under `torch.inference_mode()`; the result may be a view."""
        return self._forward(tokens)

    def _fused_pass(self, tokens: torch.Tensor) -> torch.Tensor:
        model, target = self.model, self._target
        tokens = tokens.to(model.embed.W_E.device)
        n_pos = tokens.shape[1]
        embed = model.embed.W_E[tokens]
        if target.point == "hook_embed":
            return embed
        if model.cfg.positional_embedding_type == "standard":
            pos_embed = model.pos_embed.W_pos[:n_pos]
            if target.point == "hook_pos_embed":
                return pos_embed.expand(tokens.shape[0], -1, -1)
            resid = embed + pos_embed
        else:
            resid = embed
        for layer in range(target.layer + 1):
            point = target.point if layer == target.layer else None
            resid, hooked = self._block(model.blocks[layer], resid, point)
            if hooked is not None:
                return hooked
        raise AssertionError(f"hook {self.hook_name!r} was not reached")  # pragma: no cover

    def _block(
        self, block: TransformerBlock, resid_pre: torch.Tensor, point: str | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block's resid_post, or the tensor at `point` when the block has that hook."""
        if point is None:
            return self._block_points(block, resid_pre, frozenset(), whole=True)[0], None
        whole = point == "hook_resid_post"
        resid_post, found = self._block_points(block, resid_pre, frozenset({point}), whole)
        return (resid_pre if resid_post is None else resid_post), found[point]

    def _block_points(
        self, block: TransformerBlock, resid_pre: torch.Tensor, points: frozenset[str], whole: bool
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """(the block's resid_post when `whole`, else None; {point: tensor} for each of
        `points` of the block), computing the block only as far as they need, once."""
        cfg = self.model.cfg
        found: dict[str, torch.Tensor] = {}

        def keep(point: str, value: torch.Tensor) -> bool:
            """Record `value` if `point` is wanted; True when nothing more is needed."""
            if point in points:
                found[point] = value
            return not whole and len(found) == len(points)

        if keep("hook_resid_pre", resid_pre):
            return None, found
        normalized, attn_in = _norm_parts(block.ln1, resid_pre)
        if keep("ln1.hook_normalized", normalized):
            return None, found
        z = _attention(block.attn, attn_in, self._attn_scales[block])
        if keep("attn.hook_z", z):
            return None, found
        attn_out = _linear(z.flatten(-2), block.attn.W_O.flatten(0, 1), block.attn.b_O)
        if keep("hook_attn_out", attn_out):
            return None, found
        if cfg.attn_only:
            resid_post = resid_pre + attn_out
        else:
            mlp_in = resid_pre if cfg.parallel_attn_mlp else resid_pre + attn_out
            if keep("hook_resid_mid", mlp_in):
                return None, found
            normalized, x = _norm_parts(block.ln2, mlp_in)
            if keep("ln2.hook_normalized", normalized):
                return None, found
            pre = _mlp_pre(block.mlp, x)
            if keep("mlp.hook_pre", pre):
                return None, found
            post = self._mlp_post(block.mlp, x, pre)
            if keep("mlp.hook_post", post):
                return None, found
            mlp_out = _linear(post, block.mlp.W_out, block.mlp.b_out)
            if keep("hook_mlp_out", mlp_out):
                return None, found
            if cfg.parallel_attn_mlp:
                resid_post = resid_pre + attn_out + mlp_out
            else:
                resid_post = mlp_in + mlp_out
        keep("hook_resid_post", resid_post)
        return resid_post, found

    def _mlp_post(self, mlp: MLP | GatedMLP, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """mlp.hook_post from the MLP's input `x` and its pre-activation."""
        assert self._activation is not None
        if isinstance(mlp, GatedMLP):
            return self._activation(pre) * _linear(x, mlp.W_in) + mlp.b_in
        return self._activation(pre)


class FusedMultiHookReader:
    """The activations at several hooks from one fused pass that stops after the deepest:
    each tensor is exactly what a `FusedHookReader` of that hook computes. Each block is
    computed once, as far as its points (and the deeper layers) need."""

    def __init__(self, readers: list[FusedHookReader]):
        self.readers = readers
        self.model = readers[0].model

    @classmethod
    def for_model(cls, model: Any, hook_names: list[str]) -> FusedMultiHookReader | None:
        """A reader of every hook of `hook_names`, or None if the fused pass serves not all."""
        readers = [FusedHookReader.for_model(model, name) for name in hook_names]
        if any(reader is None for reader in readers):
            return None
        return cls([reader for reader in readers if reader is not None])

    def can_run(self) -> bool:
        """See `FusedHookReader.can_run`."""
        return all(reader.can_run() for reader in self.readers)

    def __call__(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """{hook name: activation} for tokens [batch, pos]; run it under inference mode."""
        model, first = self.model, self.readers[0]
        tokens = tokens.to(model.embed.W_E.device)
        wanted: dict[int, dict[str, str]] = {}  # layer -> {point: hook name}
        for reader in self.readers:
            wanted.setdefault(reader._target.layer, {})[reader._target.point] = reader.hook_name
        found: dict[str, torch.Tensor] = {}
        resid = model.embed.W_E[tokens]
        embed_points = wanted.get(-1, {})
        if "hook_embed" in embed_points:
            found[embed_points["hook_embed"]] = resid
        if model.cfg.positional_embedding_type == "standard":
            pos_embed = model.pos_embed.W_pos[: tokens.shape[1]]
            if "hook_pos_embed" in embed_points:
                found[embed_points["hook_pos_embed"]] = pos_embed.expand(tokens.shape[0], -1, -1)
            resid = resid + pos_embed
        deepest = max(wanted)
        for layer in range(deepest + 1):
            block, points = model.blocks[layer], wanted.get(layer, {})
            whole = layer < deepest or "hook_resid_post" in points
            resid_post, tensors = first._block_points(block, resid, frozenset(points), whole)
            for point, hook_name in points.items():
                found[hook_name] = tensors[point]
            if resid_post is not None:
                resid = resid_post
        return found


def unsupported_reason(model: Any, hook_name: str) -> str | None:
    """Why `FusedHookReader` cannot serve `hook_name` of `model`, or None if it can."""
    if not isinstance(model, HookedTransformer):
        return f"the model is a {type(model).__name__}, not a HookedTransformer"
    cfg = model.cfg
    if cfg.original_architecture not in _ARCHITECTURES:
        return f"architecture {cfg.original_architecture} is not covered"
    for option, plain in _PLAIN_OPTIONS.items():
        value = getattr(cfg, option, plain)
        if value != plain:
            return f"config option {option}={value!r}"
    if cfg.positional_embedding_type not in ("standard", "rotary"):
        return f"positional_embedding_type {cfg.positional_embedding_type!r}"
    soft_cap = getattr(cfg, "attn_scores_soft_cap", None)
    if soft_cap is not None and soft_cap > 0:
        return "attention score soft-capping"
    if not cfg.attn_only and (cfg.act_fn or "") not in _ACTIVATIONS:
        return f"activation function {cfg.act_fn!r}"
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "padding_side", "right") == "left":
        return "a left-padding tokenizer (the model's forward builds an attention mask)"
    if hook_name not in model.hook_dict:
        return f"the model has no hook {hook_name!r}"
    target = _parse_hook(hook_name)
    if target is None:
        return f"hook {hook_name!r} is not one the fused pass computes"
    if cfg.attn_only and target.point not in _ATTENTION_ONLY_POINTS:
        return f"hook {hook_name!r} never runs in an attention-only model"
    return _structure_problem(model)


def _structure_problem(model: HookedTransformer) -> str | None:
    """A reason if any module is not the plain TransformerLens component the fused pass
    reimplements (a subclass may override its forward)."""
    modules: list[tuple[str, Any, tuple[type, ...]]] = [("embed", model.embed, (Embed,))]
    if model.cfg.positional_embedding_type == "standard":
        modules.append(("pos_embed", model.pos_embed, (PosEmbed,)))
    for i, block in enumerate(model.blocks):
        modules += [
            (f"blocks.{i}", block, (TransformerBlock,)),
            (f"blocks.{i}.ln1", block.ln1, (*_NORMS, torch.nn.Identity)),
            (f"blocks.{i}.attn", block.attn, (Attention, GroupedQueryAttention)),
        ]
        if not model.cfg.attn_only:
            modules += [
                (f"blocks.{i}.ln2", block.ln2, (*_NORMS, torch.nn.Identity)),
                (f"blocks.{i}.mlp", block.mlp, (MLP, GatedMLP)),
            ]
    for name, module, allowed in modules:
        if type(module) not in allowed:
            return f"{name} is a {type(module).__name__}"
    return None


def _parse_hook(hook_name: str) -> _Target | None:
    if hook_name in ("hook_embed", "hook_pos_embed"):
        return _Target(-1, hook_name)
    match = _BLOCK_HOOK.fullmatch(hook_name)
    if match is None:
        return None
    return _Target(int(match.group(1)), match.group(2))


def _linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x [..., d_in] @ weight [d_in, d_out] (+ bias) as one matmul over all positions."""
    flat = x.reshape(-1, x.shape[-1])
    out = flat @ weight if bias is None else torch.addmm(bias, flat, weight)
    return out.view(*x.shape[:-1], weight.shape[-1])


def _mlp_pre(mlp: MLP | GatedMLP, x: torch.Tensor) -> torch.Tensor:
    """mlp.hook_pre: the gate projection of a gated MLP, else the input projection."""
    if isinstance(mlp, GatedMLP):
        return _linear(x, mlp.W_gate)
    return _linear(x, mlp.W_in, mlp.b_in)


def _norm_parts(norm: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the norm's hook_normalized tensor, its output) for the block's LayerNorm/RMSNorm
    (with or without weights), each in one kernel: normalised in float32 for half-precision
    models as TransformerLens does, whose hook_normalized sees that float32 tensor."""
    if isinstance(norm, torch.nn.Identity):
        return x, x
    dtype = x.dtype
    shape = (x.shape[-1],)
    x32 = x if dtype in (torch.float32, torch.float64) else x.float()
    if isinstance(norm, (LayerNorm, LayerNormPre)):
        normalized32 = F.layer_norm(x32, shape, eps=norm.eps)
    else:
        normalized32 = F.rms_norm(x32, shape, eps=norm.eps)
    normalized = normalized32.to(dtype)
    if isinstance(norm, LayerNorm):
        return normalized32, normalized * norm.w + norm.b
    if isinstance(norm, RMSNorm):
        return normalized32, normalized * norm.w
    return normalized32, normalized


def _attention(
    attn: Attention | GroupedQueryAttention, x: torch.Tensor, scale: float
) -> torch.Tensor:
    """hook_z [batch, pos, head, d_head] of causal multi-head attention over x."""
    n_heads, d_head = attn.b_Q.shape
    weights, bias = _qkv_weights(attn)
    qkv = _linear(x, weights, bias).unflatten(-1, (3, n_heads, d_head))
    q, k, v = qkv.unbind(dim=2)  # each [batch, pos, head, d_head]
    if attn.cfg.positional_embedding_type == "rotary":
        q = attn.apply_rotary(q)
        k = attn.apply_rotary(k)
    z = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        is_causal=True,
        scale=scale,
    )
    return z.transpose(1, 2)


# attention module -> (its parameters' identity and version, the fused Q/K/V weight and bias)
_QKV_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, tuple[Any, torch.Tensor, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _qkv_weights(attn: Attention | GroupedQueryAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """The Q, K and V projections as one weight [d_model, 3 * n_heads * d_head] and bias,
    built once and rebuilt whenever a parameter of `attn` is replaced or edited in place
    (its storage or version counter changes), so edits to the weights are still seen.
    Under torch.compile they are built in the graph instead."""
    if torch.compiler.is_compiling():
        return _fuse_qkv(attn)
    key = tuple((p.data_ptr(), p._version) for p in attn.parameters(recurse=False))
    cached = _QKV_CACHE.get(attn)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    with torch.no_grad():  # the fused pass is inference only
        weights, bias = _fuse_qkv(attn)
    _QKV_CACHE[attn] = (key, weights, bias)
    return weights, bias


def _fuse_qkv(attn: Attention | GroupedQueryAttention) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.cat(
        [w.permute(1, 0, 2).flatten(1) for w in (attn.W_Q, attn.W_K, attn.W_V)], dim=1
    )
    bias = torch.cat([attn.b_Q.flatten(), attn.b_K.flatten(), attn.b_V.flatten()])
    return weights, bias
