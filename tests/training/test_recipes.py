"""The `recipe` field: "5.6.0" changes nothing, "recommended" sets its values on the
fields the user did not set, however the config is given (Python, file, command line)."""

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae_training_runner import parse_cli_config
from sae_lens.training.recipes import RECOMMENDED_LR, recommended_values, tied_encoder_norm

QUIET = {"verbose": False, "log_to_wandb": False, "wandb_id": "run"}
TOPK = {"architecture": "topk", "activation_fn_kwargs": {"k": 32}, "d_sae": 2048}


def _cfg(**kwargs: Any) -> LanguageModelSAERunnerConfig:
    return LanguageModelSAERunnerConfig(**QUIET, **kwargs)


def _recommended_fields() -> set[str]:
    return set(recommended_values(_cfg(), frozenset()))


def test_the_5_6_0_recipe_is_the_default_and_changes_nothing() -> None:
    default = _cfg()
    assert default.recipe == "5.6.0"
    assert _cfg(recipe="5.6.0").to_dict() == default.to_dict()
    for f in fields(LanguageModelSAERunnerConfig):  # every new option defaults to 5.6.0's way
        if f.name in ("optimizer", "schedule_free", "scale_lr_with_width", "max_grad_norm"):
            assert getattr(default, f.name) == {"optimizer": "adam", "max_grad_norm": 1.0}.get(
                f.name, False
            )
    assert (default.gradient_accumulation_steps, default.k_decay_steps) == (1, 0)
    assert default.checkpoint_spacing == "linear"


def test_recommended_recipe_sets_its_values() -> None:
    cfg = _cfg(recipe="recommended")
    values = recommended_values(_cfg(), frozenset())
    for name, value in values.items():
        assert getattr(cfg, name) == value, name
    assert cfg.lr == RECOMMENDED_LR[cfg.optimizer]
    assert cfg.lr_end == pytest.approx(cfg.lr / 10)  # derived from the recipe's lr


def test_recommended_recipe_for_topk_and_for_penalised_architectures() -> None:
    topk = _cfg(recipe="recommended", **TOPK)
    assert (topk.optimizer, topk.schedule_free, topk.scale_lr_with_width) == ("signsgd", True, True)
    assert topk.lr == RECOMMENDED_LR["signsgd"]
    assert topk.init_encoder_as_decoder_transpose and topk.b_dec_init_method == "mean"
    assert topk.encoder_init_norm == pytest.approx(3**-0.5)  # sparsify's, for sign updates
    adam_topk = _cfg(recipe="recommended", optimizer="adam", **TOPK)
    assert adam_topk.encoder_init_norm == pytest.approx(tied_encoder_norm(128, 2048, 32))
    standard = _cfg(recipe="recommended", d_sae=2048)
    assert (standard.optimizer, standard.schedule_free) == ("adam", False)
    assert standard.lr == RECOMMENDED_LR["adam"]
    assert standard.encoder_init_norm == pytest.approx(1 / 9, rel=1e-3)  # 1024 active of 2048


def test_tied_encoder_norm_is_the_least_squares_scale_for_isotropic_data() -> None:
    torch.manual_seed(0)
    d_in, d_sae, k = 64, 1024, 16
    x = torch.randn(4096, d_in)
    w = torch.nn.functional.normalize(torch.randn(d_sae, d_in), dim=1)
    pre = x @ w.T
    top = pre.topk(k, dim=-1)
    recon = torch.zeros_like(pre).scatter(-1, top.indices, top.values) @ w
    best = (x * recon).sum() / (recon * recon).sum()
    assert tied_encoder_norm(d_in, d_sae, k) == pytest.approx(best.item(), rel=0.1)


def test_fields_the_user_passes_win_even_at_their_default_value() -> None:
    cfg = _cfg(recipe="recommended", optimizer="adam", **TOPK)
    assert cfg.optimizer == "adam"
    assert cfg.schedule_free is False  # follows the optimizer the user chose
    assert cfg.lr == RECOMMENDED_LR["adam"]  # the recipe's rate for that optimizer
    # a learning rate the user gives is used as it is: no width scaling unless asked
    given = _cfg(recipe="recommended", lr=3e-4, **TOPK)
    assert (given.lr, given.scale_lr_with_width) == (3e-4, False)
    both = _cfg(recipe="recommended", lr=3e-4, scale_lr_with_width=True, **TOPK)
    assert (both.lr, both.scale_lr_with_width) == (3e-4, True)


def test_a_saved_config_loads_back_with_the_values_it_trained_with(tmp_path: Path) -> None:
    cfg = _cfg(recipe="recommended", optimizer="adam", d_sae=512, checkpoint_path=str(tmp_path))
    cfg.to_json(str(tmp_path) + "/")
    loaded = LanguageModelSAERunnerConfig.from_json(str(tmp_path) + "/")
    for name in _recommended_fields() | {"optimizer", "recipe"}:
        assert getattr(loaded, name) == getattr(cfg, name), name


def test_recipe_from_a_config_file_and_from_flags(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("recipe: recommended\noptimizer: adam\narchitecture: topk\nwandb_id: run\n")
    from_file = parse_cli_config(["--config", str(path)])
    assert (from_file.optimizer, from_file.lr) == ("adam", RECOMMENDED_LR["adam"])
    assert from_file.b_dec_init_method == _cfg(recipe="recommended").b_dec_init_method
    from_flags = parse_cli_config(
        ["--recipe", "recommended", "--lr", "0.001", "--architecture", "topk"]
    )
    assert from_flags.optimizer == "signsgd"
    assert (from_flags.lr, from_flags.scale_lr_with_width) == (0.001, False)
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"recipe": "recommended", "max_grad_norm": 1.0}))
    assert parse_cli_config(["--config", str(json_path)]).max_grad_norm == 1.0
    assert parse_cli_config(["--recipe", "5.6.0"]).optimizer == "adam"


def test_a_config_built_without_the_tracked_init_counts_changed_fields_as_set() -> None:
    from dataclasses import dataclass

    @dataclass
    class Sub(LanguageModelSAERunnerConfig):  # a subclass gets dataclass's own __init__
        note: str = ""

    cfg = Sub(recipe="recommended", lr=1e-3, **QUIET, **TOPK)
    assert cfg.lr == 1e-3  # differs from the default: counted as set
    assert cfg.optimizer == "signsgd"
