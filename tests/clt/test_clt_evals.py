"""`evaluate_replacement` against the direct computation on the tiny model: per-layer FVU
from the unpatched model's inputs, and the CE loss of the model, of the model with every
MLP output zeroed and with every MLP output replaced."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from sae_lens.analysis.clt_splice import splice_clt
from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
from sae_lens.clt_evals import evaluate_replacement
from sae_lens.sae import SAE
from tests.clt.conftest import IN_PATTERN, OUT_PATTERN, perturbed_clt


def _ce(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()
    ).item()


def test_fvu_and_ce_of_a_clt_match_the_direct_computation(
    pair: tuple[HookedSAETransformer, HookedTransformer], tokens: torch.Tensor
) -> None:
    model, _ = pair
    clt: SAE = perturbed_clt(SAE)  # type: ignore[assignment]
    result = evaluate_replacement(model, clt, [tokens])

    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        x = torch.cat([cache[IN_PATTERN.replace("*", str(i))] for i in (0, 1)], -1).flatten(0, 1)
        prediction = clt(x)
        with splice_clt(model, clt):
            replaced = model(tokens)
        zero = [(OUT_PATTERN.replace("*", str(i)), lambda a, hook: a * 0) for i in (0, 1)]
        ablated = model.run_with_hooks(tokens, fwd_hooks=zero)
    for layer in (0, 1):
        y = cache[OUT_PATTERN.replace("*", str(layer))].flatten(0, 1)
        residual = y - prediction[:, layer * 16 : (layer + 1) * 16]
        fvu = (residual.pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()
        assert abs(result["fvu_per_layer"][layer] - fvu) < 1e-5
    clean, rep, abl = _ce(logits, tokens), _ce(replaced, tokens), _ce(ablated, tokens)
    assert abs(result["ce_loss_without_replacement"] - clean) < 1e-5
    assert abs(result["ce_loss_with_replacement"] - rep) < 1e-5
    assert abs(result["ce_loss_with_ablation"] - abl) < 1e-5
    assert abs(result["ce_loss_score"] - (abl - rep) / (abl - clean)) < 1e-3  # a ratio


def test_per_layer_transcoders_are_evaluated_as_one_replacement(
    pair: tuple[HookedSAETransformer, HookedTransformer], tokens: torch.Tensor
) -> None:
    model, _ = pair
    clt: SAE = perturbed_clt(SAE)  # type: ignore[assignment]
    # two transcoders equal to the CLT without its cross-layer decoder block
    transcoders = []
    for layer in (0, 1):
        cfg = {**clt.cfg.to_dict(), "architecture": "topk", "d_in": 16, "d_out": 16, "d_sae": 12}
        cfg.update(
            hook_name=IN_PATTERN.replace("*", str(layer)),
            hook_name_out=OUT_PATTERN.replace("*", str(layer)),
            hook_layer=layer,
            hook_layer_out=layer,
            activation_fn_kwargs={"k": 3},
        )
        transcoder = SAE.from_dict(cfg)
        cols, outs = slice(layer * 12, (layer + 1) * 12), slice(layer * 16, (layer + 1) * 16)
        transcoder.load_state_dict(
            {
                "W_enc": clt.W_enc[:, cols],
                "b_enc": clt.b_enc[cols],
                "W_dec": clt.W_dec[cols, outs],
                "b_dec": clt.b_dec[outs],
            }
        )
        transcoders.append(transcoder)
    with torch.no_grad():
        clt.W_dec[:12, 16:] = 0  # no cross-layer decoder: the CLT is the two transcoders
    as_clt = evaluate_replacement(model, clt, [tokens])
    as_transcoders = evaluate_replacement(model, transcoders, [tokens])
    for key, value in as_clt.items():
        if isinstance(value, list):
            assert all(abs(a - b) < 1e-5 for a, b in zip(value, as_transcoders[key], strict=True))
        else:
            assert abs(value - as_transcoders[key]) < 1e-5, key
