"""Errors where 5.6.0 raised them: for each `raise` of 5.6.0's config.py, optim.py, sae.py
and training_sae.py (and the TypeErrors of its config dataclasses), the same input raises
the same exception type here, and the messages 5.6.0's tests match on still match. The
exception types were recorded by running the published sae-lens 5.6.0 on each input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens.config import (
    CacheActivationsRunnerConfig,
    LanguageModelSAERunnerConfig,
    json_dict,
)
from sae_lens.sae import SAE, SAEConfig, get_activation_fn
from sae_lens.training.optim import L1Scheduler, get_lr_scheduler
from sae_lens.training.training_sae import TrainingSAE, TrainingSAEConfig


def runner_cfg(**kwargs: Any) -> LanguageModelSAERunnerConfig:
    values: dict[str, Any] = dict(
        model_name="m",
        dataset_path="x/y",
        d_in=8,
        wandb_id="abc",
        log_to_wandb=False,
        verbose=False,
        model_from_pretrained_kwargs={},
    )
    values.update(kwargs)
    return LanguageModelSAERunnerConfig(**values)


def cache_cfg(**kwargs: Any) -> CacheActivationsRunnerConfig:
    values: dict[str, Any] = dict(
        dataset_path="",
        model_name="",
        model_batch_size=1,
        hook_name="",
        hook_layer=0,
        d_in=1,
        training_tokens=100,
        context_size=10,
    )
    values.update(kwargs)
    return CacheActivationsRunnerConfig(**values)


def scheduler(**kwargs: Any) -> Any:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    values: dict[str, Any] = dict(
        scheduler_name="constant",
        optimizer=optimizer,
        training_steps=10,
        lr=0.1,
        warm_up_steps=0,
        decay_steps=0,
        lr_end=0.01,
        num_cycles=1,
    )
    values.update(kwargs)
    return get_lr_scheduler(**values)


def training_sae(architecture: str = "standard", **kwargs: Any) -> TrainingSAE:
    cfg = runner_cfg(architecture=architecture, d_sae=16, **kwargs)
    return TrainingSAE(TrainingSAEConfig.from_sae_runner_config(cfg))


def sae(**overrides: Any) -> SAE:
    return SAE.from_dict({**runner_cfg(d_sae=16).get_base_sae_cfg_dict(), **overrides})


def gated_error_term_check() -> None:
    gated = training_sae("gated")
    gated.use_error_term = True
    gated.check_cfg_compatibility()


def sae_config_without_d_sae() -> None:
    cfg_dict = runner_cfg(d_sae=16).get_base_sae_cfg_dict()
    del cfg_dict["d_sae"]
    SAEConfig.from_dict(cfg_dict)


def unknown_training_sae_architecture() -> None:
    cfg_dict = runner_cfg(d_sae=16).get_training_sae_cfg_dict()
    TrainingSAE.from_dict({**cfg_dict, "architecture": "nope"})


# id, code, exception type 5.6.0 raised, regex of a 5.6.0 test's `match=` (or None)
CASES: list[tuple[str, Callable[[], object], type[BaseException], str | None]] = [
    # config.py
    ("json_dict of a list", lambda: json_dict("[1]"), ValueError, None),
    (
        "topk with relu",
        lambda: runner_cfg(architecture="topk", activation_fn="relu"),
        ValueError,
        "If using topk architecture, activation_fn must be topk.",
    ),
    (
        "topk without k",
        lambda: runner_cfg(architecture="topk", activation_fn="topk", activation_fn_kwargs={}),
        ValueError,
        "activation_fn_kwargs.k must be provided for topk architecture.",
    ),
    (
        "d_sae and expansion_factor",
        lambda: runner_cfg(d_sae=16, expansion_factor=2),
        ValueError,
        None,
    ),
    ("b_dec_init_method", lambda: runner_cfg(b_dec_init_method="median"), ValueError, None),
    (
        "heuristic init, unit decoder",
        lambda: runner_cfg(decoder_heuristic_init=True),
        ValueError,
        None,
    ),
    (
        "decoder-norm penalty, unit decoder",
        lambda: runner_cfg(scale_sparsity_penalty_by_decoder_norm=True),
        ValueError,
        None,
    ),
    (
        "decoder fine-tuning with b_dec",
        lambda: runner_cfg(finetuning_method="decoder"),
        ValueError,
        None,
    ),
    ("normalize_activations", lambda: runner_cfg(normalize_activations="unit"), ValueError, None),
    ("negative context_size", lambda: runner_cfg(context_size=-1), ValueError, None),
    ("empty seqpos", lambda: runner_cfg(seqpos_slice=(5, 5), context_size=10), ValueError, None),
    ("reversed seqpos", lambda: runner_cfg(seqpos_slice=(6, 3), context_size=10), ValueError, None),
    (
        "seqpos step 0",
        lambda: runner_cfg(seqpos_slice=(None, 10, 0), context_size=10),
        ValueError,
        None,
    ),
    (
        "seqpos step -1",
        lambda: runner_cfg(seqpos_slice=(None, 10, -1), context_size=10),
        ValueError,
        None,
    ),
    (
        "exclude_special_tokens",
        lambda: runner_cfg(exclude_special_tokens=[1, "a"]),
        ValueError,
        None,
    ),
    ("cache config, empty seqpos", lambda: cache_cfg(seqpos_slice=(5, 5)), ValueError, None),
    (
        "cache config, seqpos step -1",
        lambda: cache_cfg(seqpos_slice=(None, 10, -1)),
        ValueError,
        None,
    ),
    # training/optim.py
    (
        "unknown scheduler",
        lambda: scheduler(scheduler_name="unknown"),
        ValueError,
        "Unsupported scheduler: unknown",
    ),
    (
        "decay to lr_end 0",
        lambda: scheduler(scheduler_name="cosineannealing", decay_steps=2, lr_end=0.0),
        ValueError,
        "Cannot have decay_steps with lr_end=0.0",
    ),
    (
        "decay from above lr",
        lambda: scheduler(scheduler_name="cosineannealing", decay_steps=2, lr_end=0.5),
        ValueError,
        None,
    ),
    (
        "no step per restart cycle",
        lambda: scheduler(scheduler_name="cosineannealingwarmrestarts", num_cycles=20),
        ValueError,
        None,
    ),
    (
        "non-numeric l1 coefficient",
        lambda: L1Scheduler(l1_warm_up_steps=0, total_steps=1, final_l1_coefficient="1"),  # type: ignore[arg-type]
        TypeError,
        None,
    ),
    # sae.py
    ("SAE architecture", lambda: sae(architecture="nope"), ValueError, None),
    ("unknown activation", lambda: get_activation_fn("unknown"), ValueError, None),
    ("topk activation without k", lambda: get_activation_fn("topk"), ValueError, None),
    (
        "hook_z reshaping off hook_z",
        lambda: sae().turn_on_forward_pass_hook_z_reshaping(),
        ValueError,
        None,
    ),
    ("unknown release", lambda: SAE.from_pretrained("not-a-release", "x"), ValueError, None),
    (
        "unknown SAE id",
        lambda: SAE.from_pretrained("gpt2-small-res-jb", "not-an-id"),
        ValueError,
        None,
    ),
    ("SAEConfig without d_sae", sae_config_without_d_sae, TypeError, None),
    # training/training_sae.py
    ("TrainingSAE architecture", unknown_training_sae_architecture, ValueError, None),
    ("threshold of a standard SAE", lambda: training_sae().threshold, ValueError, None),
    ("ghost grads, gated", lambda: training_sae("gated", use_ghost_grads=True), ValueError, None),
    (
        "ghost grads, topk",
        lambda: training_sae("topk", use_ghost_grads=True, activation_fn_kwargs={"k": 4}),
        ValueError,
        None,
    ),
    ("gated error term", gated_error_term_check, ValueError, None),
]


@pytest.mark.parametrize(
    ("code", "error", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_same_exception_type_as_5_6_0(
    code: Callable[[], object], error: type[BaseException], match: str | None
) -> None:
    with pytest.raises(error, match=match):
        code()


def test_training_sae_from_an_inference_folder_lacks_training_fields(tmp_path: Path) -> None:
    sae().save_model(tmp_path)
    # 5.6.0: TypeError from the dataclass call, missing the 12 training fields
    with pytest.raises(TypeError, match=r"missing required field\(s\) \['l1_coefficient'"):
        TrainingSAE.load_from_pretrained(str(tmp_path))


def test_config_field_errors_are_also_value_errors() -> None:
    # our earlier releases raised ValueError here; both still catch it
    with pytest.raises(ValueError, match=r"SAEConfig is missing required field\(s\) \['d_sae'\]"):
        sae_config_without_d_sae()
    with pytest.raises(TypeError, match=r"unknown LanguageModelSAERunnerConfig fields"):
        LanguageModelSAERunnerConfig.from_dict({"not_a_field": 1})
