"""The multi-SAE runner: each SAE equals the same SAE trained alone, the run folder's
layout, resume after an interruption, and the errors of a bad hook or a diverged SAE."""

from __future__ import annotations

import json
import logging
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.multi_sae_config import MultiSAETrainingRunnerConfig
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner
from sae_lens.sae import SAE
from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training.sae_trainer import InterruptedException, TrainingDivergedError
from sae_lens.training.shared_forward import SharedForwardStore
from tests.sae_training_runner.runner_helpers import signal_at_batch

# A few thousand tokens of the embedded model and corpus: 8 steps of 256 tokens.
SHARED: dict[str, Any] = dict(
    training_tokens=2048,
    train_batch_size_tokens=256,
    context_size=32,
    store_batch_size_prompts=4,
    n_batches_in_buffer=4,
    n_eval_batches=2,
    dead_feature_window=2,
    log_to_wandb=False,
    verbose=False,
)
TWO_HOOKS = {
    "resid0_k8": {
        "hook_name": "blocks.0.hook_resid_post",
        "architecture": "topk",
        "activation_fn_kwargs": {"k": 8},
        "d_sae": 128,
    },
    "mlp1_std": {
        "hook_name": "blocks.1.hook_mlp_out",
        "architecture": "standard",
        "l1_coefficient": 2.0,
        "d_sae": 64,
        "lr": 1e-3,
        "noise_scale": 0.1,  # draws random numbers while training: from its own generator
    },
}


def topk_sweep(ks: tuple[int, ...], d_sae: int) -> dict[str, dict[str, Any]]:
    """A k sweep on one hook: TopK SAEs named `k<k>` on blocks.0.hook_resid_post."""
    return {
        f"k{k}": {
            "hook_name": "blocks.0.hook_resid_post",
            "architecture": "topk",
            "activation_fn_kwargs": {"k": k},
            "d_sae": d_sae,
        }
        for k in ks
    }


def multi_cfg(tmp_path: Path, saes: dict, **shared: Any) -> MultiSAETrainingRunnerConfig:
    values = {**SHARED, "checkpoint_path": str(tmp_path / "multi"), **shared}
    return MultiSAETrainingRunnerConfig(saes, **values)


def train_alone(tmp_path: Path, name: str, fields: dict, **shared: Any) -> SAE:
    layer = int(fields["hook_name"].split(".")[1])
    values = {**SHARED, **shared, **fields, "hook_layer": layer}
    cfg = LanguageModelSAERunnerConfig(**values, checkpoint_path=str(tmp_path / "single" / name))
    return SAETrainingRunner(cfg).run()


def assert_same_weights(a: SAE, b: SAE) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_each_sae_of_a_multi_run_equals_the_sae_trained_alone(tmp_path: Path) -> None:
    # evaluated every 4 steps: each SAE spliced into the model on its own evaluation stream
    evals = dict(wandb_log_frequency=2, eval_every_n_wandb_logs=2)
    cfg = multi_cfg(tmp_path, TWO_HOOKS, **evals)
    runner = MultiSAETrainingRunner(cfg)
    saes = runner.run()
    assert list(saes) == ["resid0_k8", "mlp1_std"]
    # the evaluation stores are fed by one model pass, and every batch of it was taken
    shared = {id(store._shared_forward) for store in runner.eval_stores.values()}  # type: ignore[union-attr]
    assert len(shared) == 1
    assert runner.eval_stores["mlp1_std"]._shared_forward.n_pending == 0  # type: ignore[union-attr]
    for name, fields in TWO_HOOKS.items():
        alone = train_alone(tmp_path, name, fields, **evals)
        assert_same_weights(saes[name], alone)
        # the run folder: one folder per SAE, laid out as a single run's
        sae_dir = cfg.run_dir / name
        loaded = SAE.load_from_pretrained(str(sae_dir / "final_2048"))
        assert loaded.cfg.hook_name == fields["hook_name"]
        torch.testing.assert_close(loaded.W_dec, saes[name].W_dec, rtol=0, atol=0)
        # the final SAE's firing frequencies, measured on the shared evaluation stream
        (single_final,) = (tmp_path / "single" / name).glob("*/final_2048")
        sparsity = load_file(sae_dir / "final_2048" / "sparsity.safetensors")
        assert sparsity.keys() == {"sparsity"}
        single_sparsity = load_file(single_final / "sparsity.safetensors")
        torch.testing.assert_close(sparsity, single_sparsity, rtol=0, atol=0)
        rows = [json.loads(line) for line in (sae_dir / "metrics.jsonl").read_text().splitlines()]
        (single_metrics,) = (tmp_path / "single" / name).glob("*/metrics.jsonl")
        assert rows == [json.loads(line) for line in single_metrics.read_text().splitlines()]
        evaluated = [
            row["step"] for row in rows if "model_performance_preservation/ce_loss_score" in row
        ]
        assert evaluated == [3, 7]
        assert (sae_dir / "training_curves.png").is_file()
    run_config = json.loads((cfg.run_dir / "run_config.json").read_text())
    assert run_config["saes"] == TWO_HOOKS
    assert run_config["checkpoint_path"] == str(cfg.run_dir.resolve())


def test_a_sweep_on_one_hook_equals_single_runs_with_the_fused_forward(tmp_path: Path) -> None:
    sweep = topk_sweep((4, 16), d_sae=64)
    runner = MultiSAETrainingRunner(multi_cfg(tmp_path, sweep, b_dec_init_method="mean"))
    saes = runner.run()
    # every model batch computed was taken by both stores and released
    assert runner.stores["k4"]._shared_forward.n_pending == 0
    for name, fields in sweep.items():
        alone = train_alone(tmp_path, name, fields, b_dec_init_method="mean")
        assert_same_weights(saes[name], alone)


def test_an_interrupted_multi_run_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    saes = {"r": {"hook_name": "blocks.*.hook_resid_post", "d_sae": 32, "noise_scale": 0.1}}
    whole = MultiSAETrainingRunner(multi_cfg(tmp_path / "whole", saes)).run()
    cfg = multi_cfg(tmp_path / "cut", saes, n_checkpoints=2)
    # 2 stores take a batch per step: the 11th batch served is step 5's (steps from 0);
    # the checkpoints: 1280 tokens (n_checkpoints) and 1536 (the stop)
    with signal_at_batch(monkeypatch, 11, signals=(signal.SIGINT,)):
        with pytest.raises(InterruptedException, match="saved a checkpoint 1536 of every SAE"):
            MultiSAETrainingRunner(cfg).run()
    for name in ("r_0", "r_1"):
        assert sorted(p.name for p in (cfg.run_dir / name).iterdir() if p.is_dir()) == [
            "1280",
            "1536",
        ]
    # as if killed while writing the checkpoints: r_1 lacks the newest, so both resume at 1280
    shutil.rmtree(cfg.run_dir / "r_1" / "1536")
    data = {**cfg.to_dict(), "resume": True}
    with caplog.at_level(logging.INFO, logger="sae_lens"):
        resumed = MultiSAETrainingRunner(MultiSAETrainingRunnerConfig.from_dict(data)).run()
    assert f"resuming multi-SAE run {cfg.run_dir} at step 5" in caplog.text  # 1280 tokens
    assert list(resumed) == list(whole) == ["r_0", "r_1"]
    for name in whole:
        assert_same_weights(resumed[name], whole[name])
    # resuming a finished run returns its SAEs
    again = MultiSAETrainingRunner(MultiSAETrainingRunnerConfig.from_dict(data)).run()
    assert_same_weights(again["r_1"], whole["r_1"])


def test_a_diverged_sae_stops_the_run_naming_it(tmp_path: Path) -> None:
    runner = MultiSAETrainingRunner(multi_cfg(tmp_path, TWO_HOOKS))
    with torch.no_grad():
        runner.saes["mlp1_std"].W_enc[0, 0] = float("nan")
    with pytest.raises(
        TrainingDivergedError, match=r"^SAE 'mlp1_std': training diverged at step 0"
    ):
        runner.run()


def test_a_hook_the_model_lacks_is_named(tmp_path: Path) -> None:
    saes = {"a": {"hook_name": "blocks.0.hook_resid_psot"}}
    with pytest.raises(ValueError, match="blocks.0.hook_resid_psot"):
        MultiSAETrainingRunner(multi_cfg(tmp_path, saes))
    saes = {"a": {"hook_name": "blocks.*.hook_resid_psot"}}
    with pytest.raises(ValueError, match="no hook point of the model matches"):
        MultiSAETrainingRunner(multi_cfg(tmp_path, saes))


@pytest.mark.parametrize("fused_forward", [True, False])
def test_the_shared_forward_gives_each_store_what_its_own_forward_would(
    embedded_model: Any, fused_forward: bool
) -> None:
    hooks = [
        "blocks.0.hook_mlp_out",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_pre",
        "blocks.1.attn.hook_z",
    ]
    cfgs = [
        LanguageModelSAERunnerConfig(
            **SHARED,
            hook_name=hook,
            hook_layer=int(hook.split(".")[1]),
            d_in=128,
            fused_forward=fused_forward,
            checkpoint_path=str(Path("unused")),
        )
        for hook in hooks
    ]
    stores = SharedForwardStore.group(embedded_model, cfgs)
    assert (stores[0]._shared_forward._multi_reader is not None) == fused_forward
    tokens = stores[0].get_batch_tokens()
    found = stores[0]._shared_forward.activations(tokens)
    for hook, store in zip(hooks, stores, strict=True):
        torch.testing.assert_close(
            found[hook], store._hook_activations(tokens).view(found[hook].shape), rtol=0, atol=0
        )
