"""LanguageModelSAERunnerConfig and friends: defaults, derived fields, validation errors
(one line naming the field) and the JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sae_lens.config import (
    CacheActivationsRunnerConfig,
    LanguageModelSAERunnerConfig,
    PretokenizeRunnerConfig,
    json_dict,
)
from sae_lens.embedded import EMBEDDED_DATASET_NAME, EMBEDDED_MODEL_NAME


def make_cfg(**kwargs: object) -> LanguageModelSAERunnerConfig:
    return LanguageModelSAERunnerConfig(verbose=False, **kwargs)  # type: ignore[arg-type]


def test_no_argument_config_points_at_the_embedded_default() -> None:
    cfg = make_cfg()
    assert cfg.model_name == EMBEDDED_MODEL_NAME
    assert cfg.dataset_path == EMBEDDED_DATASET_NAME
    assert cfg.dataset_trust_remote_code is False
    assert cfg.d_in == 128 and cfg.d_sae == 4 * 128 and cfg.expansion_factor == 4


def test_derived_fields() -> None:
    cfg = make_cfg(
        d_in=64,
        expansion_factor=8,
        lr=1e-3,
        training_tokens=10_000,
        finetuning_tokens=2_000,
        train_batch_size_tokens=1000,
    )
    assert cfg.d_sae == 512
    assert cfg.lr_end == pytest.approx(1e-4)
    assert cfg.total_training_tokens == 12_000
    assert cfg.total_training_steps == 12
    assert cfg.act_store_device == "cpu"
    assert cfg.activation_fn == "relu" and cfg.activation_fn_kwargs == {}
    assert cfg.model_from_pretrained_kwargs == {"center_writing_weights": False}


def test_topk_gets_default_k_and_fresh_runs_get_their_own_checkpoint_folder() -> None:
    a = make_cfg(architecture="topk", checkpoint_path="ckpts")
    b = make_cfg(architecture="topk", checkpoint_path="ckpts")
    assert a.activation_fn == "topk" and a.activation_fn_kwargs == {"k": 100}
    assert a.checkpoint_path.startswith("ckpts/") and a.checkpoint_path != b.checkpoint_path
    assert make_cfg(wandb_id="run1", checkpoint_path="ckpts").checkpoint_path == "ckpts/run1"
    assert make_cfg(resume=True, checkpoint_path="ckpts/run1").checkpoint_path == "ckpts/run1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"architecture": "relu"},
            r"architecture must be one of \['standard', 'gated', 'jumprelu', 'topk', 'batchtopk', "
            r"'matryoshka_batchtopk', 'clt'\], got 'relu'",
        ),
        ({"normalize_activations": "unit"}, r"normalize_activations must be one of"),
        ({"b_dec_init_method": "median"}, r"b_dec_init_method must be one of"),
        ({"lr_scheduler_name": "linear"}, r"lr_scheduler_name must be one of"),
        ({"dtype": "float8"}, r"unknown dtype .float8.: expected one of"),
        ({"d_sae": 10, "expansion_factor": 2}, r"set d_sae or expansion_factor, not both"),
        (
            {"architecture": "topk", "activation_fn": "relu"},
            r"If using topk architecture, activation_fn must be topk",
        ),
        (
            {"architecture": "topk", "activation_fn_kwargs": {"k": 0}},
            r"activation_fn_kwargs\['k'\] must be a positive int",
        ),
        ({"context_size": 0}, r"context_size must be > 0"),
        ({"lr": 0.0}, r"lr must be > 0"),
        ({"seqpos_slice": (200, None)}, r"seqpos_slice \(200, None\) selects no positions"),
        ({"seqpos_slice": (0, 10, 0)}, r"step must be at least 1"),
        ({"decoder_heuristic_init": True}, r"normalize_sae_decoder and decoder_heuristic_init"),
        ({"decoder_init_norm": 0.1}, r"decoder_init_norm needs normalize_sae_decoder=False"),
        (
            {"decoder_init_norm": 0.0, "normalize_sae_decoder": False},
            r"decoder_init_norm must be > 0, got 0.0",
        ),
        ({"scale_sparsity_penalty_by_decoder_norm": True}, r"needs normalize_sae_decoder=False"),
        ({"finetuning_method": "decoder"}, r"needs apply_b_dec_to_input=False"),
        ({"exclude_special_tokens": [1, "a"]}, r"exclude_special_tokens must be a bool or a list"),
    ],
)
def test_invalid_fields_raise_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        make_cfg(**kwargs)
    assert "\n" not in str(info.value)


def test_json_round_trip(tmp_path: Path) -> None:
    cfg = make_cfg(
        architecture="jumprelu",
        d_in=32,
        d_sae=96,
        seqpos_slice=(1, None),
        exclude_special_tokens=[0, 3],
        model_kwargs={"a": 1},
    )
    prefix = str(tmp_path / "run") + "/"
    cfg.to_json(prefix)
    on_disk = json.loads((tmp_path / "run" / "cfg.json").read_text())
    assert on_disk["architecture"] == "jumprelu" and on_disk["seqpos_slice"] == [1, None]
    loaded = LanguageModelSAERunnerConfig.from_json(prefix)
    assert loaded.seqpos_slice == (1, None)
    for name in (
        "architecture",
        "d_in",
        "d_sae",
        "exclude_special_tokens",
        "model_kwargs",
        "lr_end",
    ):
        assert getattr(loaded, name) == getattr(cfg, name)


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(
        ValueError, match=r"unknown LanguageModelSAERunnerConfig fields: \['not_a_field'\]"
    ):
        LanguageModelSAERunnerConfig.from_dict({"not_a_field": 1})


def test_training_sae_cfg_dict_matches_run_config() -> None:
    cfg = make_cfg(architecture="gated", d_in=16, d_sae=64, finetuning_method="scale")
    d = cfg.get_training_sae_cfg_dict()
    assert d["architecture"] == "gated" and d["d_sae"] == 64
    assert d["activation_fn_str"] == "relu" and d["finetuning_scaling_factor"] is True
    assert (
        d["l1_coefficient"] == cfg.l1_coefficient
        and d["jumprelu_bandwidth"] == cfg.jumprelu_bandwidth
    )


def test_json_dict_parses_objects_only() -> None:
    assert json_dict('{"k": 3}') == {"k": 3}
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        json_dict("[1, 2]")


def test_cache_config_sizes() -> None:
    cfg = CacheActivationsRunnerConfig(
        dataset_path="x",
        model_name="m",
        model_batch_size=4,
        hook_name="h",
        hook_layer=0,
        d_in=8,
        training_tokens=1000,
        context_size=10,
        seqpos_slice=(2, None),
        buffer_size_gb=32 * 8 * 4 * 3 / 1e9,
        device="cpu",
    )
    assert cfg.sliced_context_size == 8
    assert cfg.bytes_per_token == 32
    assert cfg.n_tokens_in_batch == 32
    assert cfg.n_tokens_in_buffer == 96  # 3 batches of 32 tokens fit in the buffer
    assert cfg.n_batches_in_buffer == 3
    assert cfg.n_seq_in_dataset == 125
    assert cfg.n_buffers == 11
    assert cfg.new_cached_activations_path == "activations/x/m/h"


def test_cache_config_refuses_a_buffer_smaller_than_one_batch() -> None:
    with pytest.raises(ValueError, match="holds less than one model batch"):
        CacheActivationsRunnerConfig(
            dataset_path="x",
            model_name="m",
            model_batch_size=4,
            hook_name="h",
            hook_layer=0,
            d_in=8,
            training_tokens=1000,
            context_size=10,
            buffer_size_gb=1e-9,
            device="cpu",
        )


def test_pretokenize_config_refuses_unknown_special_token_name() -> None:
    with pytest.raises(
        ValueError, match=r"begin_batch_token must be a token id, one of \['bos', 'eos', 'sep'\]"
    ):
        PretokenizeRunnerConfig(begin_batch_token="cls")  # type: ignore[arg-type]


def test_hooked_mamba_is_refused_when_the_config_is_built() -> None:
    # 5.6.0 accepted it and failed when loading the model; it cannot work here
    # (mamba_lens does not work with transformer-lens 3), so say so up front.
    from sae_lens.config import CacheActivationsRunnerConfig

    with pytest.raises(ValueError, match=r"model_class_name 'HookedMamba' is not supported"):
        LanguageModelSAERunnerConfig(model_class_name="HookedMamba", log_to_wandb=False)
    with pytest.raises(ValueError, match=r"model_class_name 'HookedMamba' is not supported"):
        CacheActivationsRunnerConfig(
            model_name="state-spaces/mamba-130m",
            model_class_name="HookedMamba",
            model_batch_size=4,
            dataset_path="pydoc-corpus",
            hook_name="blocks.0.hook_resid_post",
            hook_layer=0,
            d_in=768,
            training_tokens=4096,
        )
