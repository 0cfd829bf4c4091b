"""One training-benchmark job with EleutherAI sparsify 1.3.3 (TopK only; run with
/work/peer-loaders-venv/bin/python).

    python benchmark/peers/sparsify_driver.py JOB.json

Trains a TopK sparse coder on the benchmark model's block output `h.<HOOK_LAYER>` (the same
residual stream as TransformerLens's `blocks.<HOOK_LAYER>.hook_resid_post`) with
sparsify's `Trainer` (its defaults: FVU loss, signum optimiser, no wandb), batches of
PROMPTS_PER_BATCH rows = BATCH_TOKENS tokens. sparsify runs the whole model forward (up to
the logits) for every batch: that is part of its end-to-end time. Then it times the sparse
coder's step alone on the fixed activation batch and writes `result.json` and
`weights.safetensors` (this project's names: W_enc [d_in, d_sae], b_enc, W_dec, b_dec).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402  (this folder, not an installed package)


def train_config(job: dict[str, Any]) -> Any:
    from sparsify import SaeConfig, TrainConfig

    return TrainConfig(
        SaeConfig(expansion_factor=wl.D_SAE // wl.D_IN, **job["sae_options"]),
        batch_size=wl.PROMPTS_PER_BATCH,
        hookpoints=[wl.HF_HOOKPOINT],
        init_seeds=[wl.SAE_SEED],
        log_to_wandb=False,
        save_every=10**9,  # only the final save
        save_dir=str(Path(job["out_dir"]) / "checkpoints"),
        run_name="run",
        **job["runner_options"],
    )


def train(job: dict[str, Any], model: Any, dataset: Any) -> tuple[dict[str, Any], Any]:
    """Train (with a token budget of 0: only build the Trainer) and return its figures
    and the Trainer."""
    from sparsify import Trainer

    n_rows = max(job["training_tokens"], wl.BATCH_TOKENS) // wl.CONTEXT
    if n_rows > len(dataset):  # a budget past one epoch: the rows again, in the same order
        from datasets import concatenate_datasets

        dataset = concatenate_datasets([dataset] * -(-n_rows // len(dataset)))
    data = dataset.select(range(n_rows)).with_format("torch")
    rss_before = wl.current_rss_mb()
    clock = wl.Clock()
    trainer = Trainer(train_config(job), data, model)
    if job["training_tokens"] == 0:
        return {}, trainer
    trainer.fit()
    wall, cpu = clock.read()
    export_weights(Path(job["out_dir"]))
    return {
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": wl.max_rss_mb(),
    }, trainer


def export_weights(out_dir: Path) -> None:
    """The coder sparsify saved at the end of training (with the schedule-free optimiser
    switched to its evaluation weights, as sparsify saves it), in this project's names."""
    from safetensors.torch import load_file, save_file

    saved = load_file(str(out_dir / "checkpoints" / "run" / wl.HF_HOOKPOINT / "sae.safetensors"))
    save_file(
        {
            "W_enc": saved["encoder.weight"].T.contiguous(),  # [d_in, d_sae]
            "b_enc": saved["encoder.bias"],
            "W_dec": saved["W_dec"],  # [d_sae, d_in]
            "b_dec": saved["b_dec"],
        },
        out_dir / "weights.safetensors",
    )


def step_benchmark(job: dict[str, Any], trainer: Any, batch: Any) -> dict[str, Any]:
    """What one sparsify training step does to the sparse coder, on one fixed batch: unit-norm
    decoder, forward (FVU), backward, gradient projection, the step of the optimiser(s) the
    Trainer built (signum by default), zero_grad. Run on the trained coder."""
    coder = trainer.saes[wl.HF_HOOKPOINT]

    def step() -> None:
        coder.set_decoder_norm_to_unit_norm()
        out = coder(batch)
        (out.fvu + out.auxk_loss + out.multi_topk_fvu / 8).backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        for optimizer in trainer.optimizers:
            optimizer.step()
            optimizer.zero_grad()

    return {
        "sae_step": wl.time_steps(
            step, job["step_bench_steps"], wl.matmul_floor(job["architecture"])
        )
    }


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    import importlib.metadata

    version = importlib.metadata.version("eai-sparsify")
    model = wl.load_hf_model(job["model_dir"])
    dataset = wl.load_tokens(job["tokens"])
    result: dict[str, Any] = {"library": f"sparsify {version}"}
    train_result, trainer = train(job, model, dataset)
    result.update(train_result)
    result.update(step_benchmark(job, trainer, wl.fixed_activation_batch(job["acts"])))
    wl.write_json(Path(job["out_dir"]) / "result.json", result)


if __name__ == "__main__":
    main()
