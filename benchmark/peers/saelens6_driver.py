"""One training-benchmark job with SAELens 6.54.12 (run with /work/peer-venv/bin/python).

    python benchmark/peers/saelens6_driver.py JOB.json

JOB.json (written by benchmark/train_throughput.py) names the architecture, its training
options, the model folder, the token dataset, the fixed activation batch and where to
write. The job trains with `LanguageModelSAETrainingRunner` (override model and dataset,
no wandb), then times the SAE step alone on the fixed batch, and writes `result.json`
plus the trained weights in inference form (`weights.safetensors`: W_enc [d_in, d_sae],
b_enc / threshold / b_gate, r_mag, b_mag [d_sae], W_dec [d_sae, d_in], b_dec [d_in]).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402  (this folder, not an installed package)


def training_sae_config(job: dict[str, Any]) -> Any:
    from sae_lens import (
        BatchTopKTrainingSAEConfig,
        GatedTrainingSAEConfig,
        JumpReLUTrainingSAEConfig,
        MatryoshkaBatchTopKTrainingSAEConfig,
        StandardTrainingSAEConfig,
        TopKTrainingSAEConfig,
    )

    classes = {
        "standard": StandardTrainingSAEConfig,
        "gated": GatedTrainingSAEConfig,
        "jumprelu": JumpReLUTrainingSAEConfig,
        "topk": TopKTrainingSAEConfig,
        "batchtopk": BatchTopKTrainingSAEConfig,
        "matryoshka_batchtopk": MatryoshkaBatchTopKTrainingSAEConfig,
    }
    return classes[job["architecture"]](d_in=wl.D_IN, d_sae=wl.D_SAE, **job["sae_options"])


def runner_config(job: dict[str, Any]) -> Any:
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    return LanguageModelSAERunnerConfig(
        sae=training_sae_config(job),
        model_name="benchmark-gpt2",
        hook_name=wl.HOOK_NAME,
        dataset_path=job["tokens"],
        is_dataset_tokenized=True,
        streaming=False,
        context_size=wl.CONTEXT,
        training_tokens=job["training_tokens"],
        train_batch_size_tokens=wl.BATCH_TOKENS,
        store_batch_size_prompts=wl.PROMPTS_PER_BATCH,
        # SAELens 6's buffer holds n_batches_in_buffer * context_size tokens (5.6.0's held
        # n_batches_in_buffer * store_batch_size_prompts * context_size): the same 32k.
        n_batches_in_buffer=wl.BUFFER_TOKENS // wl.CONTEXT,
        device="cpu",
        seed=wl.SAE_SEED,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=str(Path(job["out_dir"]) / "final"),
        verbose=False,
        **job["runner_options"],
    )


def install_snapshots(job: dict[str, Any]) -> None:
    """With `job["snapshot_steps"]`: after each of those training steps write the SAE's
    inference weights to `weights_<step>.safetensors` (SAETrainer.step wrapped; the weights
    are copied, the run is unchanged)."""
    steps = set(job.get("snapshot_steps") or [])
    if not steps:
        return
    from safetensors.torch import save_file

    from sae_lens.training.sae_trainer import SAETrainer

    step = SAETrainer.step

    def step_and_snapshot(self: Any, batch: Any) -> Any:
        output = step(self, batch)
        done = self.n_training_steps + 1  # fit() counts the step after this call
        if done in steps:
            state = {k: v.detach().clone() for k, v in self.sae.state_dict().items()}
            self.sae.process_state_dict_for_saving_inference(state)
            save_file(state, Path(job["out_dir"]) / f"weights_{done}.safetensors")
        return output

    SAETrainer.step = step_and_snapshot  # type: ignore[method-assign]


def train(job: dict[str, Any], model: Any, dataset: Any) -> dict[str, Any]:
    from sae_lens import LanguageModelSAETrainingRunner

    install_snapshots(job)
    rss_before = wl.current_rss_mb()
    clock = wl.Clock()
    runner = LanguageModelSAETrainingRunner(
        runner_config(job), override_model=model, override_dataset=dataset
    )
    sae = runner.run()
    wall, cpu = clock.read()
    export_weights(sae, Path(job["out_dir"]))
    return {
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": wl.max_rss_mb(),
    }


def export_weights(sae: Any, out_dir: Path) -> None:
    """The trained SAE's inference weights (decoder norms folded where SAELens folds them)."""
    from safetensors.torch import load_file, save_file

    folder = out_dir / "inference"
    sae.save_inference_model(str(folder))
    save_file(load_file(str(folder / "sae_weights.safetensors")), out_dir / "weights.safetensors")


def step_benchmark(job: dict[str, Any], batch: Any) -> dict[str, Any]:
    """Forward + backward + Adam (+ gradient clipping, as the trainer does) on one fixed
    batch, with a freshly initialised SAE; then the trainer's own step on the same batch."""
    import torch
    from sae_lens.saes.sae import TrainingSAE, TrainStepInput

    from sae_lens.training.sae_trainer import SAETrainer

    cfg = runner_config(job)
    torch.manual_seed(wl.SAE_SEED)
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    optimizer = torch.optim.Adam(
        sae.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2)
    )
    coefficients = {
        name: getattr(value, "value", value) for name, value in sae.get_coefficients().items()
    }
    no_dead = torch.zeros(wl.D_SAE, dtype=torch.bool)

    def sae_step() -> None:
        output = sae.training_forward_pass(
            TrainStepInput(
                sae_in=batch,
                coefficients=coefficients,
                dead_neuron_mask=no_dead,
                n_training_steps=0,
                is_logging_step=False,
            )
        )
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    result = {
        "sae_step": wl.time_steps(
            sae_step, job["step_bench_steps"], wl.matmul_floor(job["architecture"])
        )
    }
    torch.manual_seed(wl.SAE_SEED)
    fresh = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    trainer = SAETrainer(cfg=cfg.to_sae_trainer_config(), sae=fresh, data_provider=iter(()))
    result["trainer_step"] = wl.time_steps(
        lambda: trainer._train_step(sae=fresh, sae_in=batch), job["step_bench_steps"]
    )
    return result


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    import sae_lens

    if "peer-venv" not in sae_lens.__file__:
        raise SystemExit(f"expected SAELens 6.54.12 from /work/peer-venv, got {sae_lens.__file__}")
    model = wl.load_hooked_transformer(job["model_dir"])
    dataset = wl.load_tokens(job["tokens"])
    result: dict[str, Any] = {"library": f"SAELens {sae_lens.__version__}"}
    if job["training_tokens"] > 0:
        result.update(train(job, model, dataset))
    if job["step_bench_steps"] > 0:
        result.update(step_benchmark(job, wl.fixed_activation_batch(job["acts"])))
    wl.write_json(Path(job["out_dir"]) / "result.json", result)


if __name__ == "__main__":
    main()
