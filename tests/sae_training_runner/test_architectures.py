"""Every architecture trains end to end on the embedded model and corpus, and the trained
SAE reconstructs held-out activations far better than the freshly initialised one."""

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae_training_runner import SAETrainingRunner


def _explained_variance(sae: Any, acts: torch.Tensor) -> float:
    """1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the tokens of `acts` [n, d_in]."""
    with torch.no_grad():
        out = sae.eval()(acts)
    return 1 - ((out - acts) ** 2).sum().item() / ((acts - acts.mean(0)) ** 2).sum().item()


@pytest.mark.parametrize(
    ("architecture", "extra"),
    [
        ("standard", {"l1_coefficient": 3.0}),
        ("gated", {"l1_coefficient": 3.0}),
        ("jumprelu", {"l1_coefficient": 1.0}),
        ("topk", {"activation_fn_kwargs": {"k": 16}}),
    ],
)
def test_trained_sae_beats_a_fresh_one(
    tmp_path: Path, embedded_model: Any, architecture: str, extra: dict[str, Any]
) -> None:
    cfg = LanguageModelSAERunnerConfig(
        architecture=architecture,
        hook_name="blocks.0.hook_resid_post",
        hook_layer=0,
        d_sae=256,
        training_tokens=128 * 100,
        train_batch_size_tokens=128,
        context_size=32,
        store_batch_size_prompts=8,
        n_batches_in_buffer=4,
        lr=3e-3,
        log_to_wandb=False,
        checkpoint_path=str(tmp_path),
        verbose=False,
        **extra,
    )
    runner = SAETrainingRunner(cfg, override_model=embedded_model)
    fresh = copy.deepcopy(runner.sae)
    trained = runner.run()
    held_out = torch.cat([runner.activations_store.next_batch()[:, 0] for _ in range(8)])

    fresh_ev = _explained_variance(fresh, held_out)
    trained_ev = _explained_variance(trained, held_out)
    assert trained_ev > 0.6, trained_ev
    assert trained_ev > fresh_ev + 0.5, (fresh_ev, trained_ev)
    with torch.no_grad():
        l0 = (trained.encode(held_out) > 0).float().sum(-1)  # [n]
    if architecture == "topk":
        assert torch.all(l0 <= 16)
    else:
        assert l0.mean() < cfg.d_sae * 0.6
