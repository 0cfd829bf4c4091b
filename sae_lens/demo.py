"""`python -m sae_lens.demo` (`make demo`): train a TopK SAE on the embedded model's
residual stream over the embedded corpus, offline, in a few minutes on a laptop CPU, then
evaluate it and print where everything was written."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae_training_runner import SAETrainingRunner, print_run_outputs

DEFAULT_OUTPUT_DIR = "demo_output"
DEFAULT_TRAINING_TOKENS = 3000 * 512


def demo_config(output_dir: str, training_tokens: int) -> LanguageModelSAERunnerConfig:
    """A TopK SAE (8x expansion, k=32) on the residual stream between the embedded
    model's two blocks."""
    steps = training_tokens // 512
    return LanguageModelSAERunnerConfig(
        hook_name="blocks.0.hook_resid_post",
        hook_layer=0,
        architecture="topk",
        activation_fn_kwargs={"k": 32},
        d_sae=1024,
        context_size=128,
        training_tokens=training_tokens,
        train_batch_size_tokens=512,
        store_batch_size_prompts=16,
        n_batches_in_buffer=16,
        lr=1e-3,
        lr_scheduler_name="constant",
        lr_warm_up_steps=min(100, steps // 10),
        lr_decay_steps=steps // 5,
        b_dec_init_method="geometric_median",
        dead_feature_window=500,
        feature_sampling_window=1000,
        wandb_log_frequency=20,
        eval_every_n_wandb_logs=25,
        n_eval_batches=4,
        eval_batch_size_prompts=8,
        n_checkpoints=2,
        log_to_wandb=False,
        checkpoint_path=output_dir,
        verbose=True,
    )


def final_evaluation(runner: SAETrainingRunner, sae: Any) -> dict[str, float]:
    """L0, explained variance, CE loss score and never-firing latents of the trained SAE,
    on the corpus's held-out split (documents training never read)."""
    from sae_lens.dataset_sources import held_out_split, load_any_dataset
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activations_store import ActivationsStore

    cfg = runner.cfg
    split = held_out_split(cfg.dataset_path)
    assert split is not None, f"{cfg.dataset_path} has no held-out split"
    held_out = ActivationsStore.from_config(
        runner.model, cfg, override_dataset=load_any_dataset(cfg.dataset_path, split=split)
    )
    eval_config = EvalConfig(
        batch_size_prompts=8,
        n_eval_reconstruction_batches=10,
        n_eval_sparsity_variance_batches=10,
        compute_ce_loss=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
    )
    metrics, features = run_evals(sae.eval(), held_out, runner.model, eval_config)
    performance = metrics["model_performance_preservation"]
    never_fired = sum(density == 0 for density in features["feature_density"])
    return {
        "L0 (active latents per token)": metrics["sparsity"]["l0"],
        "explained variance": metrics["reconstruction_quality"]["explained_variance"],
        "CE loss score": performance["ce_loss_score"],
        "CE loss without SAE": performance["ce_loss_without_sae"],
        "CE loss with SAE": performance["ce_loss_with_sae"],
        "CE loss with zero ablation": performance["ce_loss_with_ablation"],
        f"latents never firing (of {sae.cfg.d_sae})": never_fired,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sae_lens.demo",
        description="Train and evaluate a small SAE on the embedded model and corpus (offline).",
    )
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR,
                        help="folder for the run (default: %(default)s)")  # fmt: skip
    parser.add_argument("--training_tokens", type=int, default=DEFAULT_TRAINING_TOKENS,
                        help="tokens to train on (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)

    # Small matrix products gain little from many threads and lose a lot when the
    # threads outnumber the free cores (5-10x slower on a busy 2-core machine).
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    start = time.perf_counter()
    cfg = demo_config(args.output_dir, args.training_tokens)
    print(f"Training a TopK SAE (d_sae={cfg.d_sae}, k=32) on {cfg.model_name} "
          f"{cfg.hook_name} over {cfg.training_tokens:,} tokens of {cfg.dataset_path}")  # fmt: skip
    runner = SAETrainingRunner(cfg)
    sae = runner.run()
    metrics = final_evaluation(runner, sae)
    elapsed = time.perf_counter() - start

    run_dir = Path(cfg.checkpoint_path)
    print("\nFinal evaluation (held-out batches of the corpus):")
    for name, value in metrics.items():
        print(f"  {name:<32} {value:.4f}" if isinstance(value, float) else f"  {name:<32} {value}")
    print()
    print_run_outputs(run_dir)
    print(f"total time:       {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
