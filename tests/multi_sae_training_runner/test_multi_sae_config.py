"""The multi-SAE config: shared fields and per-SAE fields, hook_name patterns, and the
errors that name a mistake before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from sae_lens.multi_sae_config import MultiSAETrainingRunnerConfig

HOOKS = [
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.attn.hook_z",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "blocks.1.ln2.hook_normalized",
    "blocks.1.hook_mlp_out",
    "blocks.1.hook_resid_post",
]


def make(saes: dict, tmp_path: Path, **shared: object) -> MultiSAETrainingRunnerConfig:
    values = dict(log_to_wandb=False, verbose=False, checkpoint_path=str(tmp_path / "runs"))
    return MultiSAETrainingRunnerConfig(saes, **{**values, **shared})


def test_each_sae_resolves_to_a_full_run_config_with_shared_and_own_fields(
    tmp_path: Path,
) -> None:
    cfg = make(
        {
            "k16": {
                "hook_name": "blocks.0.hook_resid_post",
                "architecture": "topk",
                "activation_fn_kwargs": {"k": 16},
            },
            "mlp1": {"hook_name": "blocks.1.hook_mlp_out", "l1_coefficient": 2.0, "d_sae": 64},
        },
        tmp_path,
        d_sae=512,  # a top-level value of a per-SAE field is every SAE's default
        training_tokens=8192,
        wandb_id="myrun",
    )
    resolved = cfg.resolve(HOOKS)
    assert list(resolved) == ["k16", "mlp1"]
    k16, mlp1 = resolved["k16"], resolved["mlp1"]
    assert (k16.architecture, k16.activation_fn_kwargs, k16.d_sae) == ("topk", {"k": 16}, 512)
    assert (mlp1.architecture, mlp1.l1_coefficient, mlp1.d_sae) == ("standard", 2.0, 64)
    assert (k16.hook_layer, mlp1.hook_layer) == (0, 1)  # derived from the hook names
    assert k16.training_tokens == mlp1.training_tokens == 8192
    assert cfg.run_dir == tmp_path / "runs" / "myrun"
    assert Path(mlp1.checkpoint_path) == tmp_path / "runs" / "myrun" / "mlp1"


def test_a_hook_name_pattern_gives_one_sae_per_matching_hook(tmp_path: Path) -> None:
    cfg = make(
        {
            "resid": {"hook_name": "blocks.*.hook_resid_post"},
            "z": {"hook_name": "blocks.*.attn.hook_*", "d_in": 64},
        },
        tmp_path,
    )
    resolved = cfg.resolve(HOOKS)
    assert {n: (c.hook_name, c.hook_layer) for n, c in resolved.items()} == {
        "resid_0": ("blocks.0.hook_resid_post", 0),
        "resid_1": ("blocks.1.hook_resid_post", 1),
        "z_0_z": ("blocks.0.attn.hook_z", 0),
    }


@pytest.mark.parametrize(
    ("saes", "shared", "message"),
    [
        (
            {"a": {"d_sea": 64}},
            {},
            "SAE 'a' sets 'd_sea', which is not a LanguageModelSAERunnerConfig field.*d_sae",
        ),
        (
            {"a": {}},
            {"trainig_tokens": 5},
            "the multi-SAE config sets 'trainig_tokens'.*training_tokens",
        ),
        (
            {"a": {"seed": 3}},
            {},
            "SAE 'a' sets 'seed', which every SAE of a multi-SAE run shares: set it at the top level",
        ),
        ({"a": {"training_tokens": 3}}, {}, "SAE 'a' sets 'training_tokens', which every SAE"),
        ({}, {}, "`saes` must map each SAE's name to its fields"),
        ({"a/b": {}}, {}, "SAE name 'a/b' is not a folder name"),
        ({"a": {"architecture": "nope"}}, {}, "SAE 'a': .*architecture"),
        ({"a": [1]}, {}, "SAE 'a': its fields must be a mapping"),
    ],
)
def test_config_mistakes_are_named_before_any_loading(
    tmp_path: Path, saes: dict, shared: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make(saes, tmp_path, **shared)


def test_pattern_mistakes_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"SAE 'r': no hook point of the model matches hook_name 'blocks\.\*\.hook_resid_mdi'",
    ):
        make({"r": {"hook_name": "blocks.*.hook_resid_mdi"}}, tmp_path).resolve(HOOKS)
    with pytest.raises(ValueError, match="two SAEs are named 'r_0'"):
        make({"r": {"hook_name": "blocks.*.hook_resid_post"}, "r_0": {}}, tmp_path).resolve(HOOKS)
    with pytest.raises(ValueError, match="sets hook_layer with the hook_name pattern"):
        make({"r": {"hook_name": "blocks.*.hook_mlp_out", "hook_layer": 1}}, tmp_path).resolve(
            HOOKS
        )


def test_to_dict_round_trips_and_names_the_run_folder(tmp_path: Path) -> None:
    cfg = make({"a": {"hook_name": "blocks.*.hook_mlp_out", "d_sae": 32}}, tmp_path, lr=1e-3)
    data = cfg.to_dict()
    assert data["checkpoint_path"] == str(cfg.run_dir.resolve())
    again = MultiSAETrainingRunnerConfig.from_dict(data)
    assert again.run_dir != cfg.run_dir  # a fresh run from the same values gets a new folder
    assert again.saes == cfg.saes
    assert {
        n: c.to_dict() | {"checkpoint_path": None} for n, c in again.resolve(HOOKS).items()
    } == {n: c.to_dict() | {"checkpoint_path": None} for n, c in cfg.resolve(HOOKS).items()}


def test_the_recipe_applies_to_each_sae_with_its_own_fields_winning(tmp_path: Path) -> None:
    """`recipe: recommended` at the top level: each SAE gets the recipe's values for its
    architecture (sign updates for TopK, Adam for the L1 SAE), and an SAE's own field wins."""
    from sae_lens.training.recipes import RECOMMENDED_LR

    cfg = make(
        {
            "k16": {
                "hook_name": "blocks.0.hook_resid_post",
                "architecture": "topk",
                "activation_fn_kwargs": {"k": 16},
            },  # fmt: skip
            "mlp1": {"hook_name": "blocks.1.hook_mlp_out", "l1_coefficient": 2.0},
            "k16_lr": {
                "hook_name": "blocks.0.hook_resid_post",
                "architecture": "topk",
                "activation_fn_kwargs": {"k": 16},
                "lr": 1e-3,
            },  # fmt: skip
        },
        tmp_path,
        d_sae=512,
        recipe="recommended",
    )
    resolved = cfg.resolve(HOOKS)
    k16, mlp1, k16_lr = resolved["k16"], resolved["mlp1"], resolved["k16_lr"]
    assert (k16.optimizer, k16.schedule_free, k16.lr) == (
        "signsgd",
        True,
        RECOMMENDED_LR["signsgd"],
    )
    assert k16.scale_lr_with_width and k16.init_encoder_as_decoder_transpose
    assert (mlp1.optimizer, mlp1.lr, mlp1.adam_beta1) == ("adam", RECOMMENDED_LR["adam"], 0.9)
    assert (k16_lr.optimizer, k16_lr.lr, k16_lr.scale_lr_with_width) == ("signsgd", 1e-3, False)
    assert k16.b_dec_init_method == mlp1.b_dec_init_method == "mean"


def test_the_runner_and_its_config_are_exported_from_the_package() -> None:
    import sae_lens
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner

    assert sae_lens.MultiSAETrainingRunner is MultiSAETrainingRunner
    assert sae_lens.MultiSAETrainingRunnerConfig is MultiSAETrainingRunnerConfig
    assert {"MultiSAETrainingRunner", "MultiSAETrainingRunnerConfig"} <= set(dir(sae_lens))


def test_a_transcoder_output_pattern_takes_the_parts_its_input_pattern_matched(
    tmp_path: Path,
) -> None:
    saes = {
        "mlp": {
            "hook_name": "blocks.*.ln2.hook_normalized",
            "hook_name_out": "blocks.*.hook_mlp_out",
            "skip_connection": True,
        }
    }
    resolved = make(saes, tmp_path).resolve(HOOKS)
    found = {n: (c.hook_name, c.hook_layer, c.hook_name_out) for n, c in resolved.items()}
    assert found == {
        "mlp_0": ("blocks.0.ln2.hook_normalized", 0, "blocks.0.hook_mlp_out"),
        "mlp_1": ("blocks.1.ln2.hook_normalized", 1, "blocks.1.hook_mlp_out"),
    }
    assert [c.hook_layer_out for c in resolved.values()] == [0, 1]
    one_star = {"mlp": {**saes["mlp"], "hook_name": "blocks.0.ln2.hook_normalized"}}
    with pytest.raises(ValueError, match="as many '\\*' as hook_name"):
        make(one_star, tmp_path).resolve(HOOKS)
    with pytest.raises(ValueError, match="remove hook_layer_out"):
        make({"mlp": {**saes["mlp"], "hook_layer_out": 1}}, tmp_path).resolve(HOOKS)
