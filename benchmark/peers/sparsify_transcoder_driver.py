"""One transcoder-benchmark job with EleutherAI sparsify 1.3.3 (`--transcode`; run with
/work/peer-loaders-venv/bin/python).

    python benchmark/peers/sparsify_transcoder_driver.py JOB.json

Trains a TopK skip transcoder on the benchmark model's MLP of block `HOOK_LAYER`
(hookpoint `h.<layer>.mlp`: its input, the output of `ln_2`, predicts its output, the same
tensor as TransformerLens's `blocks.<layer>.hook_mlp_out`) with sparsify's `Trainer` and its
defaults (FVU loss, signum optimiser, learning rate from the number of latents, no wandb),
batches of PROMPTS_PER_BATCH rows = BATCH_TOKENS tokens. sparsify runs the whole model
forward for every batch: that is part of its end-to-end time. Writes `result.json` and
`weights.safetensors` in this project's layout (W_enc [d_in, d_sae], b_enc, W_dec
[d_sae, d_out], b_dec, W_skip [d_in, d_out]).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402  (this folder, not an installed package)

HOOKPOINT = f"h.{wl.HOOK_LAYER}.mlp"


def train(job: dict[str, Any], model: Any, dataset: Any) -> dict[str, Any]:
    from sparsify import SaeConfig, TrainConfig, Trainer

    n_rows = job["training_tokens"] // wl.CONTEXT
    data = dataset.select(range(n_rows)).with_format("torch")
    cfg = TrainConfig(
        SaeConfig(
            expansion_factor=wl.D_SAE // wl.D_IN,
            k=job["k"],
            skip_connection=True,
            transcode=True,
        ),
        batch_size=wl.PROMPTS_PER_BATCH,
        hookpoints=[HOOKPOINT],
        init_seeds=[wl.SAE_SEED],
        log_to_wandb=False,
        save_every=10**9,  # only the final save
        save_dir=str(Path(job["out_dir"]) / "checkpoints"),
        run_name="run",
    )
    clock = wl.Clock()
    Trainer(cfg, data, model).fit()
    wall, cpu = clock.read()
    export_weights(Path(job["out_dir"]))
    return {"train_wall_s": wall, "train_cpu_s": cpu, "peak_rss_mb": wl.max_rss_mb()}


def export_weights(out_dir: Path) -> None:
    """The transcoder sparsify saved at the end of training, in this project's layout."""
    from safetensors.torch import load_file, save_file

    saved = load_file(str(out_dir / "checkpoints" / "run" / HOOKPOINT / "sae.safetensors"))
    save_file(
        {
            "W_enc": saved["encoder.weight"].T.contiguous(),  # [d_in, d_sae]
            "b_enc": saved["encoder.bias"],
            "W_dec": saved["W_dec"],  # [d_sae, d_out]
            "b_dec": saved["b_dec"],
            "W_skip": saved["W_skip"].T.contiguous(),  # sparsify's [d_out, d_in]
        },
        out_dir / "weights.safetensors",
    )


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    import importlib.metadata

    model = wl.load_hf_model(job["model_dir"])
    dataset = wl.load_tokens(job["tokens"])
    result: dict[str, Any] = {"library": f"sparsify {importlib.metadata.version('eai-sparsify')}"}
    result.update(train(job, model, dataset))
    wl.write_json(Path(job["out_dir"]) / "result.json", result)


if __name__ == "__main__":
    main()
