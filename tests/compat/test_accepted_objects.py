"""Objects 5.6.0 accepted where it accepted them: a run config where a TrainingSAE config
was expected, a TrainingSAEConfig for an inference SAE, config dicts (legacy keys and
unknown keys included), and the configs 5.6.0 built in its own tests. Expected values
marked "5.6.0" were recorded by running the published sae-lens 5.6.0 on the same input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae import SAE, SAEConfig, TopK
from sae_lens.training.training_sae import TrainingSAE, TrainingSAEConfig

ARCHITECTURES = ["standard", "gated", "jumprelu", "topk"]


def build_runner_cfg(**kwargs: Any) -> LanguageModelSAERunnerConfig:
    """A small run config written as 5.6.0 code writes one (every value spelled out)."""
    values: dict[str, Any] = dict(
        model_name="m",
        dataset_path="x/y",
        d_in=6,
        d_sae=10,
        wandb_id="abc",
        log_to_wandb=False,
        verbose=False,
        l1_coefficient=0.5,
        model_from_pretrained_kwargs={},
    )
    values.update(kwargs)
    return LanguageModelSAERunnerConfig(**values)


def arch_kwargs(architecture: str) -> dict[str, Any]:
    return dict(
        architecture=architecture, activation_fn_kwargs={"k": 4} if architecture == "topk" else None
    )


# Parameter sums after torch.manual_seed(0) and the training forward pass of
# `test_training_sae_from_a_run_config_trains_as_in_5_6_0` (5.6.0).
EXPECTED_56 = {
    "standard": {
        "sums": {"W_enc": -5.350591, "W_dec": -2.471255},
        "losses": {"l1_loss": 8.79672, "mse_loss": 110.87986},
        "loss": 119.67658,
    },
    "gated": {
        "sums": {"W_enc": -5.350591, "W_dec": 0.560656},
        "losses": {
            "auxiliary_reconstruction_loss": 191.12129,
            "l1_loss": 8.79672,
            "mse_loss": 191.12129,
        },
        "loss": 391.03931,
    },
}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_sae_accepts_a_run_config(architecture: str) -> None:
    cfg = build_runner_cfg(**arch_kwargs(architecture))
    sae = TrainingSAE(cfg)  # as 5.6.0's tests/training/test_sae_training.py does
    assert isinstance(sae.cfg, TrainingSAEConfig)
    assert sae.cfg == TrainingSAEConfig.from_sae_runner_config(cfg)
    assert (sae.cfg.architecture, sae.cfg.d_in, sae.cfg.d_sae) == (architecture, 6, 10)
    assert sae.cfg.activation_fn_str == cfg.activation_fn
    out = sae.training_forward_pass(torch.randn(3, 6), current_l1_coefficient=0.5)
    assert out.sae_out.shape == (3, 6) and torch.isfinite(out.loss)


@pytest.mark.parametrize("architecture", ["standard", "gated"])
def test_training_sae_from_a_run_config_trains_as_in_5_6_0(architecture: str) -> None:
    cfg = build_runner_cfg(**arch_kwargs(architecture))
    torch.manual_seed(0)
    sae = TrainingSAE(cfg)
    torch.manual_seed(1)
    x = torch.randn(5, 6) * 3
    sae.train()
    out = sae.training_forward_pass(
        x, current_l1_coefficient=0.5, dead_neuron_mask=torch.tensor([True, False] * 5)
    )
    expected = EXPECTED_56[architecture]
    for name, total in expected["sums"].items():
        assert sae.state_dict()[name].double().sum().item() == pytest.approx(total, abs=1e-5)
    losses = {k: float(v.detach()) for k, v in out.losses.items()}  # type: ignore[union-attr]
    assert losses == pytest.approx(expected["losses"])
    assert out.loss.item() == pytest.approx(expected["loss"])


def test_training_sae_from_a_run_config_equals_the_one_from_its_training_config() -> None:
    cfg = build_runner_cfg(architecture="jumprelu")
    torch.manual_seed(0)
    direct = TrainingSAE(cfg)
    torch.manual_seed(0)
    converted = TrainingSAE(TrainingSAEConfig.from_sae_runner_config(cfg))
    for name, tensor in direct.state_dict().items():
        assert torch.equal(tensor, converted.state_dict()[name]), name


def test_inference_sae_accepts_a_training_config(tmp_path: Path) -> None:
    training_cfg = TrainingSAEConfig.from_sae_runner_config(build_runner_cfg())
    sae = SAE(training_cfg)
    assert sae.cfg is training_cfg
    sae.save_model(tmp_path)
    on_disk = json.loads((tmp_path / "cfg.json").read_text())
    # 5.6.0 saved the whole TrainingSAEConfig, training fields included
    assert on_disk["l1_coefficient"] == 0.5 and on_disk["lp_norm"] == 1
    assert SAE.load_from_pretrained(str(tmp_path)).cfg.d_sae == 10


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_config_dicts_of_a_run_config_build_every_class(architecture: str) -> None:
    cfg = build_runner_cfg(**arch_kwargs(architecture))
    assert SAE.from_dict(cfg.get_base_sae_cfg_dict()).cfg.architecture == architecture
    assert SAEConfig.from_dict(cfg.get_base_sae_cfg_dict()).d_sae == 10
    assert TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict()).cfg.l1_coefficient == 0.5
    training_cfg = TrainingSAEConfig.from_dict(cfg.get_training_sae_cfg_dict())
    assert training_cfg == TrainingSAEConfig.from_sae_runner_config(cfg)
    # a whole run config's dict: keys that are not config fields are ignored, as in 5.6.0
    merged = {**cfg.to_dict(), **cfg.get_training_sae_cfg_dict()}
    assert TrainingSAEConfig.from_dict(merged) == training_cfg


def test_inference_sae_from_a_training_sae_config_dict() -> None:
    training_sae = TrainingSAE(build_runner_cfg())
    sae = SAE.from_dict(training_sae.cfg.to_dict())
    assert type(sae.cfg) is SAEConfig
    assert sae.cfg.to_dict() == SAEConfig.from_dict(training_sae.cfg.to_dict()).to_dict()


def test_sae_config_from_dict_renames_legacy_keys_and_keeps_seqpos_as_tuple() -> None:
    cfg_dict = build_runner_cfg().get_base_sae_cfg_dict()
    legacy = {
        {"hook_name": "hook_point", "hook_layer": "hook_point_layer"}.get(k, k): v
        for k, v in cfg_dict.items()
        if k not in ("hook_head_index", "activation_fn_str")
    }
    legacy.update(hook_point_head_index=None, activation_fn="relu", seqpos_slice=[1, None])
    cfg = SAEConfig.from_dict(legacy)
    assert (cfg.hook_name, cfg.hook_layer, cfg.activation_fn_str) == (
        "blocks.0.hook_mlp_out",
        0,
        "relu",
    )
    assert cfg.seqpos_slice == (1, None)


def test_training_config_from_dict_makes_a_single_seqpos_value_a_tuple() -> None:
    cfg_dict = build_runner_cfg().get_training_sae_cfg_dict()
    assert TrainingSAEConfig.from_dict({**cfg_dict, "seqpos_slice": 2}).seqpos_slice == (2,)
    assert TrainingSAEConfig.from_dict({**cfg_dict, "seqpos_slice": [0, 4]}).seqpos_slice == (
        0,
        4,
    )


def test_topk_config_with_k_above_d_sae_is_accepted_with_a_warning() -> None:
    # 5.6.0's own tests build topk configs with d_sae=4 and the default k=100
    with pytest.warns(UserWarning, match=r"activation_fn_kwargs\['k'\] \(100\) exceeds d_sae"):
        cfg = build_runner_cfg(architecture="topk", d_in=3, d_sae=4, normalize_sae_decoder=False)
    assert cfg.activation_fn_kwargs == {"k": 100}
    sae = TrainingSAE(TrainingSAEConfig.from_sae_runner_config(cfg))
    assert sae.cfg.activation_fn_kwargs == {"k": 100}


def test_scheduler_names_are_case_insensitive_as_in_5_6_0() -> None:
    cfg = build_runner_cfg(lr_scheduler_name="CosineAnnealing")
    assert cfg.lr_scheduler_name == "CosineAnnealing"


def test_resume_is_accepted_here_where_5_6_0_refused_it() -> None:
    # a deliberate difference: runs can be resumed (5.6.0 raised ValueError)
    assert build_runner_cfg(resume=True, checkpoint_path="ckpts/run1").resume


def test_sae_accepts_normalize_activations_none_as_5_6_0_gemma_scope_configs_had() -> None:
    cfg_dict = {**build_runner_cfg().get_base_sae_cfg_dict(), "normalize_activations": None}
    sae = SAE.from_dict(cfg_dict)
    x = torch.randn(4, 6)
    with torch.no_grad():
        torch.testing.assert_close(
            sae.encode(x), torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
        )


def test_topk_accepts_numpy_integers() -> None:
    topk = TopK(np.int64(2))
    out = topk(torch.tensor([[3.0, -1.0, 2.0, 0.5]]))
    assert torch.equal(out, torch.tensor([[3.0, 0.0, 2.0, 0.0]]))


def test_runner_config_with_no_warnings_for_ordinary_topk() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_runner_cfg(architecture="topk", d_sae=128)
