"""The transcoder fields of the run config and of SAEConfig: defaults derived from the
output hook, and one-line errors for settings that cannot work."""

from __future__ import annotations

from typing import Any

import pytest

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae import SAEConfig
from sae_lens.saes import transcoder
from tests.sae_configs import sae_cfg_dict
from tests.transcoders.conftest import transcoder_cfg_dict


def _run_cfg(**kwargs: Any) -> LanguageModelSAERunnerConfig:
    fields = dict(
        hook_name="blocks.0.ln2.hook_normalized",
        hook_name_out="blocks.0.hook_mlp_out",
        log_to_wandb=False,
        verbose=False,
    )
    return LanguageModelSAERunnerConfig(**{**fields, **kwargs})


def test_run_config_derives_the_output_layer_and_turns_off_b_dec_on_input() -> None:
    cfg = _run_cfg(hook_name="blocks.1.ln2.hook_normalized", hook_name_out="blocks.1.hook_mlp_out")
    assert cfg.hook_layer_out == 1
    assert cfg.apply_b_dec_to_input is False  # b_dec is the output bias
    assert cfg.d_out is None  # read from the model by the activation store
    sae_cfg = cfg.get_training_sae_cfg_dict()
    assert sae_cfg["hook_name_out"] == "blocks.1.hook_mlp_out" and sae_cfg["hook_layer_out"] == 1


def test_a_plain_run_config_keeps_5_6_0_values() -> None:
    cfg = LanguageModelSAERunnerConfig(log_to_wandb=False, verbose=False)
    assert cfg.apply_b_dec_to_input is True
    assert (cfg.hook_name_out, cfg.hook_layer_out, cfg.d_out, cfg.skip_connection) == (
        None,
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"apply_b_dec_to_input": True}, "apply_b_dec_to_input=True is not supported"),
        ({"hook_name_out": "blocks.0.ln2.hook_normalized"}, "hook_name_out equals hook_name"),
        ({"hook_name_out": "ln_final.hook_normalized"}, "set hook_layer_out"),
        ({"hook_layer_out": -1}, "hook_layer_out must be >= 0"),
        ({"d_out": 0}, "d_out must be a positive integer"),
        ({"normalize_activations": "expected_average_only_in"}, "not supported for transcoders"),
        ({"use_cached_activations": True}, "use_cached_activations is not supported"),
        ({"hook_name_out": None, "skip_connection": True}, "skip_connection=True needs"),
        ({"hook_name_out": None, "d_out": 64}, "d_out is set but hook_name_out is not"),
        ({"hook_name_out": None, "hook_layer_out": 0}, "hook_layer_out is set but"),
    ],
)
def test_run_config_refuses_transcoder_settings_that_cannot_work(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _run_cfg(**kwargs)


def test_sae_config_dict_round_trip_keeps_the_transcoder_fields() -> None:
    cfg = SAEConfig.from_dict(transcoder_cfg_dict())
    saved = cfg.to_dict()
    assert {
        k: saved[k] for k in ("hook_name_out", "hook_layer_out", "d_out", "skip_connection")
    } == {
        "hook_name_out": "blocks.0.hook_mlp_out",
        "hook_layer_out": 0,
        "d_out": 5,
        "skip_connection": True,
    }
    assert SAEConfig.from_dict(saved) == cfg


def test_a_plain_sae_config_writes_5_6_0_keys_only() -> None:
    cfg = SAEConfig.from_dict(sae_cfg_dict(d_in=4, d_sae=8))
    assert cfg.d_out is None and "hook_name_out" not in cfg.to_dict()
    with pytest.raises(ValueError, match="only a transcoder has an output width"):
        SAEConfig.from_dict(sae_cfg_dict(d_in=4, d_sae=8, d_out=3))


def test_sae_config_of_a_transcoder_needs_its_output_width() -> None:
    with pytest.raises(ValueError, match="d_out is not set"):
        SAEConfig.from_dict(transcoder_cfg_dict(d_out=None))


@pytest.mark.parametrize(
    ("architecture", "skip", "saved"),
    [
        ("standard", False, "transcoder"),
        ("standard", True, "skip_transcoder"),
        ("jumprelu", False, "jumprelu_transcoder"),
        ("jumprelu", True, "jumprelu_skip_transcoder"),
        ("topk", True, "topk_skip_transcoder"),
        ("matryoshka_batchtopk", False, "matryoshka_batchtopk_transcoder"),
    ],
)
def test_saved_architecture_names_round_trip(architecture: str, skip: bool, saved: str) -> None:
    assert transcoder.saved_architecture(architecture, skip) == saved
    assert transcoder.parse_saved_architecture(saved) == (architecture, skip)


def test_non_transcoder_names_are_not_parsed() -> None:
    assert transcoder.parse_saved_architecture("jumprelu") is None


@pytest.mark.parametrize(
    ("hook", "layer"),
    [("blocks.7.hook_mlp_out", 7), ("hook_embed", 0), ("ln_final.hook_normalized", None)],
)
def test_layer_of_hook(hook: str, layer: int | None) -> None:
    assert transcoder.layer_of_hook(hook) == layer
