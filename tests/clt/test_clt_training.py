"""Training a CLT over both layers of the embedded model from one model pass (CLI flags and
a YAML config), the store's rows, the replacement evals, and the one-line errors for
settings that cannot work."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformer_lens import HookedTransformer

from sae_lens.clt_evals import evaluate_replacement
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.eval_metrics import EvalConfig, run_evals
from sae_lens.sae import SAE
from sae_lens.sae_training_runner import main
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.clt_rows import CLTRows
from sae_lens.training.sae_trainer import InterruptedException
from tests.clt.conftest import IN_PATTERN, OUT_PATTERN
from tests.sae_training_runner.runner_helpers import (
    final_state,
    signal_at_batch,
    tiny_cfg,
    tiny_runner,
)

RUN = [
    "--architecture", "clt",
    "--hook_name", IN_PATTERN,
    "--hook_name_out", OUT_PATTERN,
    "--hook_layer", "1",
    "--d_in", "256",
    "--d_sae", "512",
    "--activation_fn_kwargs", '{"k": 8}',
    "--context_size", "32",
    "--train_batch_size_tokens", "128",
    "--training_tokens", str(128 * 30),
    "--store_batch_size_prompts", "4",
    "--n_batches_in_buffer", "4",
    "--lr", "0.004",
    "--log_to_wandb", "false",
    "--verbose", "false",
]  # fmt: skip


def _tokens(model: HookedTransformer, seed: int = 5) -> torch.Tensor:
    return torch.randint(
        0, model.cfg.d_vocab, (4, 32), generator=torch.Generator().manual_seed(seed)
    )


def _corpus_tokens(model: HookedTransformer, clt: SAE) -> torch.Tensor:
    """8 sequences of 32 tokens of the embedded corpus (what the CLT was trained on)."""
    store = ActivationsStore.from_sae(
        model, clt, context_size=32, streaming=False, store_batch_size_prompts=8
    )
    return store.get_batch_tokens()


def test_the_cli_trains_a_clt_whose_folder_predicts_both_layers(
    tmp_path: Path, embedded_model: HookedTransformer
) -> None:
    assert main([*RUN, "--checkpoint_path", str(tmp_path), "--wandb_id", "clt"]) == 0
    (final,) = glob.glob(str(tmp_path / "clt" / "final_*"))
    clt = SAE.load_from_pretrained(final)
    assert (clt.cfg.architecture, clt.cfg.d_in, clt.cfg.d_sae) == ("clt", 256, 512)
    result = evaluate_replacement(embedded_model, clt, [_corpus_tokens(embedded_model, clt)])
    fvu = result["fvu_per_layer"]
    assert len(fvu) == 2 and all(0 < value < 0.9 for value in fvu)  # learned both layers
    # k = 8 per layer (fewer where a kept pre-activation is not positive)
    assert all(6 <= l0 <= 8 for l0 in result["l0_per_layer"])
    assert result["ce_loss_with_ablation"] > result["ce_loss_with_replacement"]
    assert 0 < result["ce_loss_score"] <= 1.05 and result["kl_div_with_replacement"] > 0


def test_a_yaml_config_trains_a_global_topk_clt(
    tmp_path: Path, embedded_model: HookedTransformer
) -> None:
    fields = {RUN[i].lstrip("-"): RUN[i + 1] for i in range(0, len(RUN), 2)}
    fields.update(activation_fn_kwargs={"k": 8, "topk_scope": "global"}, training_tokens=128 * 8)
    fields.update(d_in=256, d_sae=512, hook_layer=1, lr=0.004, log_to_wandb=False)
    fields.update(checkpoint_path=str(tmp_path), wandb_id="g", verbose=False)
    for key in ("context_size", "train_batch_size_tokens", "store_batch_size_prompts"):
        fields[key] = int(fields[key])
    fields["n_batches_in_buffer"] = 4
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(fields))
    assert main(["--config", str(path)]) == 0
    (final,) = glob.glob(str(tmp_path / "g" / "final_*"))
    clt = SAE.load_from_pretrained(final)
    assert clt.cfg.activation_fn_kwargs == {"k": 8, "topk_scope": "global"}
    metrics, _ = run_evals(
        clt,
        _store(embedded_model, fields),
        embedded_model,
        EvalConfig(n_eval_reconstruction_batches=1),
    )
    assert set(metrics["reconstruction_quality"]) == {
        "explained_variance",
        "fvu_layer_0",
        "fvu_layer_1",
    }
    assert metrics["sparsity"]["l0"] <= 16


def _store(model: HookedTransformer, fields: dict[str, Any]) -> ActivationsStore:
    cfg = LanguageModelSAERunnerConfig(
        **{k: v for k, v in fields.items() if k not in ("checkpoint_path", "wandb_id")}
    )
    return ActivationsStore.from_config(model, cfg)


def test_the_store_serves_every_layers_input_then_every_layers_output(
    embedded_model: HookedTransformer,
) -> None:
    fields = {RUN[i].lstrip("-"): RUN[i + 1] for i in range(0, len(RUN), 2)}
    fields.update(d_in=256, d_sae=512, hook_layer=1, context_size=32, n_batches_in_buffer=4)
    fields.update(store_batch_size_prompts=4, train_batch_size_tokens=128, log_to_wandb=False)
    fields.update(activation_fn_kwargs={"k": 8}, training_tokens=1280, lr=0.004, verbose=False)
    store = _store(embedded_model, fields)
    assert isinstance(store.output_hook, CLTRows)
    tokens = _tokens(embedded_model)
    rows = store.get_activations(tokens)[:, :, 0]  # [batch, pos, 256 + 256]
    _, cache = embedded_model.run_with_cache(tokens)
    names = [IN_PATTERN.replace("*", "0"), IN_PATTERN.replace("*", "1")]
    names += [OUT_PATTERN.replace("*", "0"), OUT_PATTERN.replace("*", "1")]
    torch.testing.assert_close(rows, torch.cat([cache[name] for name in names], dim=-1))


def _cfg(**overrides: Any) -> LanguageModelSAERunnerConfig:
    fields: dict[str, Any] = dict(
        architecture="clt",
        hook_name=IN_PATTERN,
        hook_name_out=OUT_PATTERN,
        hook_layer=1,
        d_in=256,
        d_sae=512,
        activation_fn_kwargs={"k": 8},
        log_to_wandb=False,
        verbose=False,
    )
    fields.update(overrides)
    return LanguageModelSAERunnerConfig(**fields)


def test_a_run_config_fills_in_the_output_side() -> None:
    cfg = _cfg()
    assert (cfg.d_out, cfg.hook_layer_out, cfg.apply_b_dec_to_input) == (256, 1, False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hook_name": "blocks.0.ln2.hook_normalized"}, "one '\\*' for the layer"),
        ({"hook_name_out": "blocks.*.*.hook_mlp_out"}, "hook_name_out to be a hook pattern"),
        ({"hook_layer": 0}, "hook_layer=0 gives one layer"),
        ({"hook_layer_out": 0}, "hook_layer_out=0 must equal hook_layer=1"),
        ({"d_in": 255}, "d_in to be a multiple of 2"),
        ({"d_sae": 511}, "d_sae to be a multiple of 2"),
        ({"activation_fn_kwargs": {"k": 300}}, "exceeds the 256 latents each layer has"),
        ({"activation_fn_kwargs": {"k": 8, "topk_scope": "all"}}, "must be one of"),
        ({"skip_connection": True}, "skip_connection is not supported for clt"),
        ({"activation_fn": "relu"}, "activation_fn must be topk"),
        ({"normalize_activations": "expected_average_only_in"}, "not supported for transcoders"),
    ],
)
def test_bad_settings_are_one_line_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        _cfg(**overrides)
    assert "\n" not in str(info.value)


def test_a_d_in_that_does_not_match_the_model_is_named_before_training(
    embedded_model: HookedTransformer,
) -> None:
    cfg = _cfg(
        d_in=128,
        d_sae=512,
        context_size=32,
        store_batch_size_prompts=4,
        n_batches_in_buffer=4,
        train_batch_size_tokens=128,
    )
    store = ActivationsStore.from_config(embedded_model, cfg)
    with pytest.raises(ValueError, match="set d_in to n_layers \\* 128"):
        store.get_activations(_tokens(embedded_model))


def test_hooks_the_model_lacks_are_named_before_training(embedded_model: HookedTransformer) -> None:
    cfg = _cfg(hook_name_out="blocks.*.hook_mlp_output", context_size=32)
    with pytest.raises(ValueError, match="hook_mlp_output"):
        ActivationsStore.from_config(embedded_model, cfg)


def test_an_interrupted_and_resumed_clt_run_equals_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = dict(
        architecture="clt",
        hook_name=IN_PATTERN,
        hook_name_out=OUT_PATTERN,
        d_in=32,  # the tiny model: 2 layers of d_model 16
        d_sae=48,
        activation_fn_kwargs={"k": 4},
        n_checkpoints=2,
    )
    reference = tiny_cfg(tmp_path / "a", **fields)
    tiny_runner(reference).run()

    cfg = tiny_cfg(tmp_path / "b", **fields)
    with signal_at_batch(monkeypatch, 23), pytest.raises(InterruptedException):
        tiny_runner(cfg).run()
    tiny_runner(tiny_cfg(tmp_path / "b", resume=True, **fields)).run()

    expected, actual = final_state(reference.checkpoint_path), final_state(cfg.checkpoint_path)
    assert expected["W_enc"].shape == (16, 48)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
