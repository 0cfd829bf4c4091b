"""Values in 5.6.0's form: the config strings `SAE.to` writes, the learning-rate scheduler
objects and their rates step by step, config dicts and their key order, and the
pretrained directory's entries with their value types. Expected values marked "5.6.0"
were recorded by running the published sae-lens 5.6.0 on the same input."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    SequentialLR,
)

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae import SAE, SAEConfig
from sae_lens.toolkit.pretrained_sae_loaders import SAEConfigLoadOptions, get_sae_config
from sae_lens.toolkit.pretrained_saes_directory import (
    get_pretrained_saes_directory,
    get_repo_id_and_folder_name,
)
from sae_lens.training.optim import get_lr_scheduler
from sae_lens.training.training_sae import TrainingSAE, TrainingSAEConfig
from tests.sae_configs import sae_cfg_dict


def small_sae_config() -> SAEConfig:
    return SAEConfig.from_dict(
        sae_cfg_dict(d_in=4, d_sae=8, context_size=16, model_name="m", dataset_path="d")
    )


# --- SAE.to -----------------------------------------------------------------------------

# call -> (cfg.device, cfg.dtype, sae.dtype, parameter dtype, parameter device) (5.6.0)
TO_CASES_56: list[tuple[str, Callable[[SAE], SAE], tuple[str, ...]]] = [
    ("dtype", lambda s: s.to(torch.float16), ("cpu", "torch.float16", "torch.float16", "cpu")),
    (
        "device, dtype",
        lambda s: s.to("cpu", torch.float16),
        ("cpu", "torch.float16", "torch.float16", "cpu"),
    ),
    (
        "dtype=",
        lambda s: s.to(dtype=torch.float64),
        ("cpu", "torch.float64", "torch.float64", "cpu"),
    ),
    ("device str", lambda s: s.to("cpu"), ("cpu", "float32", "torch.float32", "cpu")),
    ("device=", lambda s: s.to(device="cpu"), ("cpu", "float32", "torch.float32", "cpu")),
    (
        "torch.device",
        lambda s: s.to(torch.device("cpu")),
        ("cpu", "float32", "torch.float32", "cpu"),
    ),
    (
        "tensor",
        lambda s: s.to(torch.zeros(1, dtype=torch.bfloat16)),
        ("cpu", "torch.bfloat16", "torch.bfloat16", "cpu"),
    ),
    (
        "device=, dtype=",
        lambda s: s.to(device=torch.device("cpu"), dtype=torch.bfloat16),
        ("cpu", "torch.bfloat16", "torch.bfloat16", "cpu"),
    ),
    ("meta", lambda s: s.to("meta"), ("meta", "float32", "torch.float32", "meta")),
]


@pytest.mark.parametrize(
    ("call", "expected"), [c[1:] for c in TO_CASES_56], ids=[c[0] for c in TO_CASES_56]
)
def test_to_writes_5_6_0_device_and_dtype_strings(
    call: Callable[[SAE], SAE], expected: tuple[str, ...]
) -> None:
    sae = SAE(small_sae_config())
    assert call(sae) is sae
    cfg_device, cfg_dtype, param_dtype, param_device = expected
    assert (sae.cfg.device, sae.cfg.dtype) == (cfg_device, cfg_dtype)
    assert (str(sae.dtype), str(sae.device)) == (param_dtype, param_device)
    assert (str(sae.W_enc.dtype), str(sae.W_enc.device)) == (param_dtype, param_device)


def test_a_half_precision_sae_saves_and_loads_with_the_5_6_0_dtype_string(tmp_path: Path) -> None:
    sae = SAE(small_sae_config()).to(torch.float16)
    sae.save_model(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["dtype"] == "torch.float16"
    loaded = SAE.load_from_pretrained(str(tmp_path))
    assert loaded.dtype == torch.float16 and torch.equal(loaded.W_enc, sae.W_enc)


# --- config dicts -------------------------------------------------------------------------

# json.dumps(cfg.to_dict()) of `small_sae_config()` (5.6.0): cfg.json byte for byte
SAE_CFG_JSON_56 = (
    '{"architecture": "standard", "d_in": 4, "d_sae": 8, "dtype": "float32", "device": "cpu", '
    '"model_name": "m", "hook_name": "blocks.0.hook_resid_pre", "hook_layer": 0, '
    '"hook_head_index": null, "activation_fn_str": "relu", "activation_fn_kwargs": {}, '
    '"apply_b_dec_to_input": true, "finetuning_scaling_factor": false, '
    '"sae_lens_training_version": null, "prepend_bos": true, "dataset_path": "d", '
    '"dataset_trust_remote_code": false, "context_size": 16, "normalize_activations": "none", '
    '"neuronpedia_id": null, "model_from_pretrained_kwargs": {}, "seqpos_slice": [null]}'
)
# list(TrainingSAEConfig.to_dict()) after the SAEConfig keys (5.6.0)
TRAINING_KEYS_56 = """
    l1_coefficient lp_norm use_ghost_grads normalize_sae_decoder noise_scale
    decoder_orthogonal_init init_encoder_as_decoder_transpose mse_loss_normalization
    decoder_heuristic_init scale_sparsity_penalty_by_decoder_norm jumprelu_init_threshold
    jumprelu_bandwidth
""".split()


def test_sae_config_json_is_5_6_0s_byte_for_byte() -> None:
    assert json.dumps(small_sae_config().to_dict()) == SAE_CFG_JSON_56


def test_training_config_dict_keys_in_5_6_0_order_then_ours() -> None:
    cfg = LanguageModelSAERunnerConfig(
        model_name="m", dataset_path="x/y", d_in=6, d_sae=10, log_to_wandb=False, verbose=False
    )
    keys = list(TrainingSAEConfig.from_sae_runner_config(cfg).to_dict())
    base_keys = list(json.loads(SAE_CFG_JSON_56))
    assert keys[: len(base_keys)] == base_keys
    assert keys[len(base_keys) : len(base_keys) + len(TRAINING_KEYS_56)] == TRAINING_KEYS_56
    assert keys[len(base_keys) + len(TRAINING_KEYS_56) :] == [  # ours, after 5.6.0's
        "decoder_init_norm",
        "encoder_init_norm",
        "jumprelu_sparsity_loss_mode",
        "jumprelu_tanh_scale",
        "pre_act_loss_coefficient",
        "topk_threshold_lr",
        "matryoshka_widths",
    ]


def test_jumprelu_training_parameters_in_5_6_0_order() -> None:
    cfg = LanguageModelSAERunnerConfig(
        model_name="m",
        dataset_path="x/y",
        d_in=6,
        d_sae=10,
        architecture="jumprelu",
        log_to_wandb=False,
        verbose=False,
    )
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    assert list(sae.state_dict()) == ["log_threshold", "b_enc", "W_dec", "W_enc", "b_dec"]


# --- learning-rate schedules ------------------------------------------------------------

# (name, training_steps, lr, warm_up, decay, lr_end, cycles) -> scheduler classes,
# milestones, and the lr of each of training_steps + 1 steps (5.6.0)
LR_CASES_56: list[tuple[tuple[Any, ...], list[str], list[int], list[float]]] = [
    (("constant", 6, 0.1, 0, 0, 0.0, 1), ["LambdaLR"], [], [0.1] * 7),
    (
        ("constant", 6, 0.1, 2, 4, 0.0, 1),
        ["LinearLR", "LambdaLR", "LinearLR"],
        [2, 2],
        [0.05, 0.1, 0.1, 0.07500000000000001, 0.05000000000000001, 0.025000000000000005, 0.0],
    ),
    (
        ("cosineannealing", 8, 0.1, 2, 2, 0.01, 1),
        ["LinearLR", "CosineAnnealingLR", "LinearLR"],
        [2, 6],
        [0.05, 0.1, 0.1, 0.08681980515339464, 0.05500000000000001, 0.023180194846605363]
        + [0.01, 0.005, 0.0],
    ),
    (
        ("CosineAnnealing", 7, 0.1, 0, 0, 0.05, 1),
        ["CosineAnnealingLR"],
        [],
        [0.1, 0.09752422169756048, 0.09058724504646834, 0.08056302334890786]
        + [0.06943697665109214, 0.05941275495353166, 0.052475778302439526, 0.05],
    ),
    (
        ("cosineannealingwarmrestarts", 9, 0.1, 1, 2, 0.02, 2),
        ["LinearLR", "CosineAnnealingWarmRestarts", "LinearLR"],
        [1, 7],
        [0.1, 0.1, 0.08, 0.04000000000000001, 0.1, 0.08, 0.04000000000000001, 0.02, 0.01, 0.0],
    ),
]


@pytest.mark.parametrize(("args", "classes", "milestones", "lrs"), LR_CASES_56)
def test_lr_schedulers_are_5_6_0s_objects_with_5_6_0s_rates(
    args: tuple[Any, ...], classes: list[str], milestones: list[int], lrs: list[float]
) -> None:
    name, steps, lr, warm_up, decay, lr_end, cycles = args
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler: Any = get_lr_scheduler(name, optimizer, steps, lr, warm_up, decay, lr_end, cycles)
    assert isinstance(scheduler, SequentialLR)
    assert [type(s).__name__ for s in scheduler._schedulers] == classes
    assert list(scheduler._milestones) == milestones
    seen = []
    for _ in range(steps + 1):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(lrs, abs=1e-12)


def test_main_cosine_schedulers_carry_5_6_0s_settings() -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler: Any = get_lr_scheduler("cosineannealing", optimizer, 4, 0.1, 0, 0, 0.05, 1)
    (main,) = scheduler._schedulers
    assert isinstance(main, CosineAnnealingLR) and (main.T_max, main.eta_min) == (4, 0.05)
    scheduler = get_lr_scheduler("cosineannealingwarmrestarts", optimizer, 8, 0.1, 0, 0, 0.05, 2)
    (main,) = scheduler._schedulers
    assert isinstance(main, CosineAnnealingWarmRestarts) and (main.T_0, main.eta_min) == (4, 0.05)


# --- the pretrained directory -------------------------------------------------------------

# Over every release (5.6.0): conversion_func types, and expected_l0 value types
DIRECTORY_TYPE_COUNTS_56 = {"conv_str": 35, "conv_NoneType": 24, "l0_int": 2406, "l0_float": 1705}
# Releases added since 5.6.0, and the values they add (gemma-scope-2b-pt-transcoders, 26 SAEs)
DIRECTORY_TYPE_COUNTS_ADDED = {"conv_str": 1, "l0_int": 26}
# release -> conversion_func, first two (sae id, expected_l0) (5.6.0)
DIRECTORY_SAMPLES_56 = {
    "gpt2-small-res-jb": (
        None,
        [("blocks.0.hook_resid_pre", 10.0), ("blocks.1.hook_resid_pre", 10.0)],
    ),
    "gemma-scope-2b-pt-res": (
        "gemma_2",
        [("embedding/width_4k/average_l0_6", 0.0), ("embedding/width_4k/average_l0_44", 0.0)],
    ),
    "pythia-70m-deduped-res-sm": (
        None,
        [("blocks.0.hook_resid_pre", 0.0), ("blocks.0.hook_resid_post", 0.0)],
    ),
    "llama_scope_lxr_8x": ("llama_scope", [("l0r_8x", 50.0), ("l1r_8x", 50.0)]),
}


def test_directory_value_types_are_5_6_0s() -> None:
    counts: Counter[str] = Counter()
    for lookup in get_pretrained_saes_directory().values():
        counts["conv_" + type(lookup.conversion_func).__name__] += 1
        for value in lookup.expected_l0.values():
            counts["l0_" + type(value).__name__] += 1
        assert all(type(v) is float for v in lookup.expected_var_explained.values())
        assert all(v is None or type(v) is str for v in lookup.neuronpedia_id.values())
    assert dict(counts) == dict(
        Counter(DIRECTORY_TYPE_COUNTS_56) + Counter(DIRECTORY_TYPE_COUNTS_ADDED)
    )


@pytest.mark.parametrize("release", list(DIRECTORY_SAMPLES_56))
def test_directory_samples_are_5_6_0s(release: str) -> None:
    conversion_func, l0_samples = DIRECTORY_SAMPLES_56[release]
    lookup = get_pretrained_saes_directory()[release]
    assert lookup.conversion_func == conversion_func
    for sae_id, l0 in l0_samples:
        assert type(lookup.expected_l0[sae_id]) is float and lookup.expected_l0[sae_id] == l0


def test_gpt2_small_res_jb_lookup() -> None:
    lookup = get_pretrained_saes_directory()["gpt2-small-res-jb"]
    assert (lookup.repo_id, lookup.model) == ("jbloom/GPT2-Small-SAEs-Reformatted", "gpt2-small")
    assert lookup.config_overrides == {
        "model_from_pretrained_kwargs": {"center_writing_weights": True}
    }
    assert lookup.neuronpedia_id["blocks.11.hook_resid_post"] == "gpt2-small/12-res-jb"
    assert lookup.expected_var_explained["blocks.9.hook_resid_pre"] == 0.77
    assert type(lookup.expected_l0["blocks.9.hook_resid_pre"]) is float


def test_unregistered_release_is_a_repo_id_as_in_5_6_0() -> None:
    assert get_repo_id_and_folder_name("release1", "sae1") == ("release1", "sae1")


# get_sae_config("gemma-scope-2b-pt-res-canonical", "layer_5/width_16k/canonical") (5.6.0)
GEMMA_CFG_56: dict[str, Any] = {
    "architecture": "jumprelu",
    "d_in": 2304,
    "d_sae": 16384,
    "dtype": "float32",
    "model_name": "gemma-2-2b",
    "hook_name": "blocks.5.hook_resid_post",
    "hook_layer": 5,
    "hook_head_index": None,
    "activation_fn_str": "relu",
    "finetuning_scaling_factor": False,
    "sae_lens_training_version": None,
    "prepend_bos": True,
    "dataset_path": "monology/pile-uncopyrighted",
    "context_size": 1024,
    "dataset_trust_remote_code": True,
    "apply_b_dec_to_input": False,
    "normalize_activations": None,
    "neuronpedia_id": "gemma-2-2b/5-gemmascope-res-16k",
    "device": "cpu",
}


def test_get_sae_config_has_5_6_0s_keys_and_value_types() -> None:
    cfg = get_sae_config(
        "gemma-scope-2b-pt-res-canonical", "layer_5/width_16k/canonical", SAEConfigLoadOptions()
    )
    # deliberate differences: remote dataset code is opt-in, and "none" replaces None
    expected = {**GEMMA_CFG_56, "dataset_trust_remote_code": False, "normalize_activations": "none"}
    assert cfg == expected
    assert {k: type(v) for k, v in cfg.items()} == {k: type(v) for k, v in expected.items()}
