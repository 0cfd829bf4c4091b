"""A stand-in activation store and config builder for trainer and checkpoint tests: a
seeded stream of activation batches, resumable the way the real store is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.training.sae_trainer import SAETrainer
from sae_lens.training.training_sae import TrainingSAE


class FakeActivationStore:
    """Batch i is a fixed function of (seed, i): sparse codes over a random dictionary,
    so an SAE can learn it. `poison_batch` returns inf activations at that index."""

    def __init__(self, d_in: int, batch_size: int, seed: int = 0, poison_batch: int | None = None):
        self.d_in = d_in
        self.batch_size = batch_size
        self.seed = seed
        self.poison_batch = poison_batch
        self.batches_served = 0
        self.estimated_norm_scaling_factor: float | None = None
        self.exclude_special_tokens: torch.Tensor | None = None
        generator = torch.Generator().manual_seed(seed)
        self.dictionary = torch.randn(4 * d_in, d_in, generator=generator)  # [n_atoms, d_in]

    def batch(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + index)
        n_atoms = self.dictionary.shape[0]
        active = torch.rand(self.batch_size, n_atoms, generator=generator) < 0.05
        codes = torch.rand(self.batch_size, n_atoms, generator=generator) * active
        acts = codes @ self.dictionary + 0.5  # [batch, d_in]
        if index == self.poison_batch:
            acts[0, 0] = float("inf")
        return acts[:, None, :]  # [batch, 1, d_in]

    def next_batch(self) -> torch.Tensor:
        batch = self.batch(self.batches_served)
        self.batches_served += 1
        return batch

    def set_norm_scaling_factor_if_needed(self) -> None:
        pass

    def checkpoint_state(self) -> dict[str, Any]:
        return {"batches_served": self.batches_served}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.batches_served = state["batches_served"]


def make_cfg(tmp_path: Path, **overrides: Any) -> LanguageModelSAERunnerConfig:
    """A tiny training config: d_in 8, d_sae 32, batches of 16 tokens, 40 steps, no wandb."""
    kwargs: dict[str, Any] = dict(
        d_in=8,
        d_sae=32,
        train_batch_size_tokens=16,
        training_tokens=16 * 40,
        context_size=8,
        store_batch_size_prompts=2,
        n_batches_in_buffer=4,
        l1_coefficient=0.1,
        lr=3e-3,
        log_to_wandb=False,
        b_dec_init_method="zeros",
        checkpoint_path=str(tmp_path / "runs"),
        verbose=False,
    )
    kwargs.update(overrides)
    return LanguageModelSAERunnerConfig(**kwargs)


class RecordingSave:
    """A `SaveCheckpointFn` recording the names and steps it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[str] | None]] = []

    def __call__(
        self, trainer: SAETrainer, checkpoint_name: str, wandb_aliases: list[str] | None = None
    ) -> None:
        self.calls.append((checkpoint_name, trainer.n_training_steps, wandb_aliases))


def make_trainer(
    cfg: LanguageModelSAERunnerConfig,
    save: Any = None,
    seed: int = 0,
    store: FakeActivationStore | None = None,
) -> SAETrainer:
    """A trainer on a fresh seeded SAE and a fake store."""
    torch.manual_seed(seed)
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    store = store or FakeActivationStore(cfg.d_in, cfg.train_batch_size_tokens)
    return SAETrainer(
        model=None,  # type: ignore[arg-type]  # only evals use the model
        sae=sae,
        activation_store=store,  # type: ignore[arg-type]
        save_checkpoint_fn=save or RecordingSave(),
        cfg=cfg,
    )
