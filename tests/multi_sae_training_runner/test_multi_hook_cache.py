"""An activation cache of several hooks written in one pass (one column per hook) holds
what single-hook caches hold, and a multi-SAE run trains from it as single runs would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import load_from_disk

from sae_lens.cache_activations_runner import CacheActivationsRunner
from sae_lens.config import CacheActivationsRunnerConfig
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner
from tests.multi_sae_training_runner.test_multi_sae_training_runner import (
    assert_same_weights,
    multi_cfg,
    train_alone,
)

HOOKS = {"blocks.0.hook_resid_post": 0, "blocks.1.hook_mlp_out": 1}


def cache(path: Path, hook_name: str, **overrides: Any) -> CacheActivationsRunnerConfig:
    values: dict[str, Any] = dict(
        dataset_path="pydoc-corpus",
        model_name="tiny-pydoc-gpt2",
        model_batch_size=4,
        hook_name=hook_name,
        hook_layer=HOOKS[hook_name],
        d_in=128,
        training_tokens=4096,
        context_size=32,
        new_cached_activations_path=str(path),
        buffer_size_gb=4 * 32 * 128 * 4 * 4 / 1e9,  # 4 model batches per shard
        device="cpu",
        shuffle=False,
    )
    return CacheActivationsRunnerConfig(**{**values, **overrides})


def test_a_multi_hook_cache_holds_each_single_hook_cache_as_a_column(tmp_path: Path) -> None:
    both = cache(
        tmp_path / "both", "blocks.0.hook_resid_post", extra_hooks={"blocks.1.hook_mlp_out": 128}
    )
    CacheActivationsRunner(both).run()
    multi = load_from_disk(str(tmp_path / "both")).with_format("torch")
    assert set(multi.column_names) == {*HOOKS, "token_ids"}
    for i, hook in enumerate(HOOKS):
        CacheActivationsRunner(cache(tmp_path / f"single{i}", hook)).run()
        single = load_from_disk(str(tmp_path / f"single{i}")).with_format("torch")
        assert len(single) == len(multi) == 128
        assert torch.equal(multi[hook], single[hook])
        assert torch.equal(multi["token_ids"], single["token_ids"])


def test_extra_hooks_must_be_other_hooks_with_a_width(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra_hooks must map hooks other than hook_name"):
        cache(tmp_path, "blocks.0.hook_resid_post", extra_hooks={"blocks.0.hook_resid_post": 128})
    with pytest.raises(ValueError, match="extra_hooks must map"):
        cache(tmp_path, "blocks.0.hook_resid_post", extra_hooks={"blocks.1.hook_mlp_out": 0})


def test_a_multi_sae_run_trains_from_a_multi_hook_cache_as_single_runs_do(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    cfg = cache(path, "blocks.0.hook_resid_post", extra_hooks={"blocks.1.hook_mlp_out": 128})
    CacheActivationsRunner(cfg).run()
    saes = {
        "resid0": {"hook_name": "blocks.0.hook_resid_post", "d_sae": 64},
        "mlp1": {"hook_name": "blocks.1.hook_mlp_out", "d_sae": 64, "l1_coefficient": 2.0},
    }
    from_cache = dict(use_cached_activations=True, cached_activations_path=str(path))
    trained = MultiSAETrainingRunner(multi_cfg(tmp_path, saes, **from_cache)).run()
    for name, fields in saes.items():
        assert_same_weights(trained[name], train_alone(tmp_path, name, fields, **from_cache))
