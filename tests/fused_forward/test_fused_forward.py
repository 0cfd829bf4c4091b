"""The fused inference forward must give what TransformerLens's own forward gives, at every
hook it serves, for each supported architecture; everything else must be refused."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer

from sae_lens.fused_forward import FusedHookReader, unsupported_reason
from tests.conftest import build_tiny_tl_model

ARCHITECTURES: dict[str, dict[str, object]] = {
    "gpt2-like (LN, learned positions)": dict(normalization_type="LN", act_fn="gelu_new"),
    "folded LN (LNPre), relu": dict(normalization_type="LNPre", act_fn="relu"),
    "neox-like (rotary, partial rotary_dim, parallel attn+mlp)": dict(
        positional_embedding_type="rotary",
        rotary_dim=2,
        rotary_adjacent_pairs=False,
        parallel_attn_mlp=True,
        act_fn="gelu",
    ),
    "gptj-like (rotary adjacent pairs)": dict(
        positional_embedding_type="rotary", rotary_dim=4, rotary_adjacent_pairs=True
    ),
    "llama-like (RMS, gated silu MLP, grouped-query attention)": dict(
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=4,
        gated_mlp=True,
        act_fn="silu",
        n_key_value_heads=2,
    ),
    "attention only, RMSPre, no normalisation scale": dict(
        attn_only=True, normalization_type="RMSPre", d_mlp=None
    ),
    "no normalisation, attention scaled by layer": dict(
        normalization_type=None, scale_attn_by_inverse_layer_idx=True
    ),
}


def _randomised(model: HookedTransformer) -> HookedTransformer:
    """Give every bias and norm weight a random value so that none is left at 0 or 1."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            last = name.split(".")[-1]
            if last in ("b", "w") or last.lstrip("_").startswith("b_"):
                noise = torch.randn(param.shape, generator=generator) * 0.3
                param.copy_(noise + (1.0 if last == "w" else 0.0))
    return model


def _served_hooks(model: HookedTransformer) -> list[str]:
    return [name for name in model.hook_dict if unsupported_reason(model, name) is None]


@pytest.mark.parametrize("overrides", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_every_served_hook_matches_run_with_cache(overrides: dict[str, object]) -> None:
    model = _randomised(build_tiny_tl_model(**overrides))
    tokens = torch.randint(
        0, model.cfg.d_vocab, (3, 11), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens)
    served = _served_hooks(model)
    per_layer = ["hook_resid_pre", "hook_attn_out", "hook_resid_post", "attn.hook_z"]
    for layer in range(model.cfg.n_layers):
        assert {f"blocks.{layer}.{p}" for p in per_layer} <= set(served)
    if not model.cfg.attn_only:
        assert {"blocks.1.hook_mlp_out", "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_post"} <= set(
            served
        )
    for hook_name in served:
        reader = FusedHookReader.for_model(model, hook_name)
        assert reader is not None and reader.can_run()
        with torch.inference_mode():
            fused = reader(tokens)
        expected = cache[hook_name]
        assert fused.shape == expected.shape, hook_name
        torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5, msg=hook_name)


def test_matches_the_embedded_model_with_documents_joined_by_bos(
    embedded_model: HookedTransformer,
) -> None:
    bos = embedded_model.tokenizer.bos_token_id
    tokens = torch.randint(
        0, embedded_model.cfg.d_vocab, (2, 64), generator=torch.Generator().manual_seed(2)
    )
    tokens[:, 0] = bos
    tokens[:, 30] = bos  # a document boundary inside the context, as in concatenated rows
    for hook_name in ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_post", "blocks.1.attn.hook_z"]:
        reader = FusedHookReader.for_model(embedded_model, hook_name)
        assert reader is not None
        with torch.inference_mode():
            _, cache = embedded_model.run_with_cache(tokens, names_filter=hook_name)
            torch.testing.assert_close(reader(tokens), cache[hook_name], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"n_key_value_heads": 2}], ids=["mha", "gqa"])
def test_edits_to_the_attention_weights_are_seen_after_a_first_call(
    overrides: dict[str, object],
) -> None:
    # the fused Q/K/V weight is built once per attention module and must follow edits
    model = _randomised(build_tiny_tl_model(**overrides))
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(3))
    hook_name = "blocks.0.attn.hook_z"
    reader = FusedHookReader.for_model(model, hook_name)
    assert reader is not None
    attn = model.blocks[0].attn
    # grouped-query attention keeps its K/V parameters as _W_K, _b_V (W_K, b_V are copies)
    k_weight = attn.W_K if not overrides else attn._W_K
    v_bias = attn.b_V if not overrides else attn._b_V
    edits = {
        "W_Q in place": lambda: attn.W_Q.mul_(1.5),
        "K in place": lambda: k_weight.add_(0.25),
        "b_V in place": lambda: v_bias.sub_(0.5),
        "W_Q replaced": lambda: setattr(attn, "W_Q", torch.nn.Parameter(attn.W_Q * -1.0)),
    }
    for what, edit in edits.items():
        with torch.inference_mode():
            before = reader(tokens).clone()
        with torch.no_grad():
            edit()
        with torch.inference_mode():
            after = reader(tokens)
            _, cache = model.run_with_cache(tokens, names_filter=hook_name)
        assert not torch.allclose(before, after), what
        torch.testing.assert_close(after, cache[hook_name], atol=1e-5, rtol=1e-5, msg=what)


def test_bfloat16_autocast_stays_close_to_the_model_under_autocast() -> None:
    model = _randomised(build_tiny_tl_model())
    tokens = torch.randint(
        0, model.cfg.d_vocab, (2, 16), generator=torch.Generator().manual_seed(0)
    )
    reader = FusedHookReader.for_model(model, "blocks.1.hook_resid_post")
    assert reader is not None
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
        fused = reader(tokens)
    expected = cache["blocks.1.hook_resid_post"].float()
    assert (fused.float() - expected).abs().max() < 0.05 * expected.abs().max()


def test_an_attached_hook_stops_the_fused_pass_until_it_is_removed() -> None:
    model = build_tiny_tl_model()
    reader = FusedHookReader.for_model(model, "blocks.1.hook_resid_post")
    assert reader is not None and reader.can_run()
    model.add_hook("blocks.0.hook_mlp_out", lambda act, hook: act * 0)
    assert not reader.can_run()
    model.reset_hooks()
    assert reader.can_run()


def test_a_spliced_sae_stops_the_fused_pass_until_it_is_removed() -> None:
    from sae_lens import HookedSAETransformer
    from tests.analysis.test_hooked_sae_transformer import make_sae

    model = HookedSAETransformer(build_tiny_tl_model().cfg)
    reader = FusedHookReader.for_model(model, "blocks.1.hook_resid_post")
    assert reader is not None and reader.can_run()
    model.add_sae(make_sae("blocks.0.hook_mlp_out"))
    assert not reader.can_run()
    model.reset_saes()
    assert reader.can_run()


@pytest.mark.parametrize(
    ("overrides", "hook_name", "reason"),
    [
        (
            dict(positional_embedding_type="shortformer"),
            "blocks.0.hook_resid_post",
            "positional_embedding_type 'shortformer'",
        ),
        (dict(act_fn="solu_ln"), "blocks.0.hook_resid_post", "activation function 'solu_ln'"),
        (
            dict(use_attn_result=True),
            "blocks.0.hook_resid_post",
            "config option use_attn_result=True",
        ),
        (
            dict(attn_scores_soft_cap=30.0),
            "blocks.0.hook_resid_post",
            "attention score soft-capping",
        ),
        (
            {},
            "blocks.0.attn.hook_pattern",
            "hook 'blocks.0.attn.hook_pattern' is not one the fused pass computes",
        ),
        ({}, "blocks.0.ln1.hook_scale", "is not one the fused pass computes"),
        ({}, "blocks.7.hook_resid_post", "the model has no hook 'blocks.7.hook_resid_post'"),
    ],
)
def test_what_it_cannot_reproduce_is_refused_with_a_reason(
    overrides: dict[str, object], hook_name: str, reason: str
) -> None:
    model = build_tiny_tl_model(**overrides)
    found = unsupported_reason(model, hook_name)
    assert found is not None and reason in found
    assert FusedHookReader.for_model(model, hook_name) is None


def test_a_subclassed_component_is_refused() -> None:
    model = build_tiny_tl_model()

    class DoubledMLP(type(model.blocks[0].mlp)):  # type: ignore[misc]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    model.blocks[0].mlp.__class__ = DoubledMLP
    assert unsupported_reason(model, "blocks.1.hook_resid_post") == "blocks.0.mlp is a DoubledMLP"


def test_a_model_that_is_not_a_hooked_transformer_is_refused() -> None:
    assert "not a HookedTransformer" in (unsupported_reason(torch.nn.Linear(2, 2), "x") or "")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_agree_to_their_rounding(dtype: torch.dtype) -> None:
    model = build_tiny_tl_model(dtype=dtype, **ARCHITECTURES[next(iter(ARCHITECTURES))])
    tokens = torch.randint(
        0, model.cfg.d_vocab, (2, 16), generator=torch.Generator().manual_seed(0)
    )
    relative_tolerance = 0.005 if dtype == torch.float16 else 0.03  # a few ulps of the dtype
    for hook_name in ["blocks.1.hook_resid_post", "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out"]:
        reader = FusedHookReader.for_model(model, hook_name)
        assert reader is not None
        with torch.inference_mode():
            _, cache = model.run_with_cache(tokens, names_filter=hook_name)
            fused = reader(tokens)
        expected = cache[hook_name]
        assert fused.dtype == expected.dtype == dtype
        error = (fused.float() - expected.float()).abs().max()
        assert error <= relative_tolerance * expected.float().abs().max(), hook_name


def _zero_output(module: torch.nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(output)


class _DoublingMLP(torch.nn.Module):
    def __init__(self, mlp: torch.nn.Module):
        super().__init__()
        self.inner = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.inner(x)


def _raw_forward_hook(model: HookedTransformer) -> object:
    return model.blocks[0].mlp.register_forward_hook(_zero_output)


def _raw_pre_hook_on_the_model(model: HookedTransformer) -> object:
    return model.blocks[0].register_forward_pre_hook(lambda module, args: (args[0] * 0,))


def _global_hook(model: HookedTransformer) -> object:
    from torch.nn.modules.module import register_module_forward_hook

    return register_module_forward_hook(
        lambda module, args, output: output * 0 if module is model.blocks[0].mlp else None
    )


def _swapped_module(model: HookedTransformer) -> object:
    original = model.blocks[0].mlp
    model.blocks[0].mlp = _DoublingMLP(original)
    return lambda: setattr(model.blocks[0], "mlp", original)


def _forward_replaced_on_the_instance(model: HookedTransformer) -> object:
    ln = model.blocks[0].ln2
    ln.forward = lambda x: torch.zeros_like(x)
    return lambda: delattr(ln, "forward")


def _config_changed(model: HookedTransformer) -> object:
    model.cfg.attn_scores_soft_cap = 1.0
    return lambda: setattr(model.cfg, "attn_scores_soft_cap", -1.0)


def _undo(handle: object) -> None:
    if callable(handle):
        handle()
    else:
        handle.remove()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "patch",
    [
        _raw_forward_hook,
        _raw_pre_hook_on_the_model,
        _global_hook,
        _swapped_module,
        _forward_replaced_on_the_instance,
        _config_changed,
    ],
)
def test_every_patch_of_the_model_stops_the_fused_pass_until_undone(patch) -> None:  # noqa: ANN001
    model = _randomised(build_tiny_tl_model())
    reader = FusedHookReader.for_model(model, "blocks.1.hook_resid_post")
    assert reader is not None and reader.can_run()
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        clean = reader(tokens)
        handle = patch(model)
        try:
            assert not reader.can_run()
            _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
            # the patch changes what the model computes, so the fused pass must not stand in
            assert (cache["blocks.1.hook_resid_post"] - clean).abs().max() > 1e-3
        finally:
            _undo(handle)
    assert reader.can_run()
