"""Small end-to-end training runs for the runner tests: the tiny config-built model on a
seeded dataset of random token ids (fast), and a way to interrupt a run mid-training."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training.activations_store import ActivationsStore
from tests.conftest import build_tiny_tl_model

CONTEXT = 16


def token_dataset(n_rows: int = 400, seed: int = 0) -> datasets.Dataset:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 50, (n_rows, CONTEXT), generator=generator)
    return datasets.Dataset.from_dict({"tokens": tokens.tolist()})


def tiny_cfg(tmp_path: Path, **overrides: Any) -> LanguageModelSAERunnerConfig:
    """60 steps of 32 tokens on the tiny model's layer-1 residual stream (d_in 16)."""
    kwargs: dict[str, Any] = dict(
        model_name="tiny-test-model",
        hook_name="blocks.1.hook_resid_pre",
        hook_layer=1,
        d_in=16,
        d_sae=32,
        context_size=CONTEXT,
        train_batch_size_tokens=32,
        training_tokens=32 * 60,
        store_batch_size_prompts=4,
        n_batches_in_buffer=4,
        l1_coefficient=0.5,
        lr=3e-3,
        log_to_wandb=False,
        wandb_log_frequency=5,
        eval_every_n_wandb_logs=1000,
        n_eval_batches=1,
        checkpoint_path=str(tmp_path / "runs"),
        verbose=False,
    )
    kwargs.update(overrides)
    return LanguageModelSAERunnerConfig(**kwargs)


def tiny_runner(cfg: LanguageModelSAERunnerConfig, **kwargs: Any) -> SAETrainingRunner:
    return SAETrainingRunner(
        cfg, override_model=build_tiny_tl_model(), override_dataset=token_dataset(), **kwargs
    )


@contextmanager
def signal_at_batch(
    monkeypatch: pytest.MonkeyPatch, batch: int, signals: tuple[int, ...] = (signal.SIGINT,)
) -> Iterator[None]:
    """Send `signals` to this process while the store serves training batch `batch`
    (counting from 1) -- what a user pressing Ctrl-C mid-training does."""
    served = 0
    next_batch = ActivationsStore.next_batch

    def next_batch_with_signal(self: ActivationsStore) -> torch.Tensor:
        nonlocal served
        served += 1
        if served == batch:
            for sig in signals:
                os.kill(os.getpid(), sig)
        return next_batch(self)

    with monkeypatch.context() as patch:
        patch.setattr(ActivationsStore, "next_batch", next_batch_with_signal)
        yield


def final_state(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The weights in the run's final SAE folder."""
    from safetensors.torch import load_file

    (final,) = Path(run_dir).glob("final_*")
    return load_file(final / "sae_weights.safetensors")
