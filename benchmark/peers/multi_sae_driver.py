"""One job of benchmark/multi_sae_peers.py: one TopK SAE per layer of the benchmark GPT-2,
all layers in one run, with one library (run with that library's python).

    .venv/bin/python benchmark/peers/multi_sae_driver.py JOB.json                 # ours, ours_single
    /work/peer-venv/bin/python benchmark/peers/multi_sae_driver.py JOB.json       # saelens6
    /work/peer-loaders-venv/bin/python benchmark/peers/multi_sae_driver.py JOB.json  # sparsify

`job["library"]` picks the side:
- "ours": this project's `MultiSAETrainingRunner` (`blocks.*.hook_resid_post`, one SAE a layer);
- "ours_single": this project's `SAETrainingRunner`, once per layer (the same options);
- "saelens6": SAELens 6.54's `MultiSAETrainingRunner` (override model and dataset);
- "sparsify": sparsify's `Trainer` with hookpoints `h.0` ... `h.<n-1>` (the block outputs,
  the same residual stream as TransformerLens's `blocks.<L>.hook_resid_post`).

The clock starts after the model and the token dataset are loaded (the same for every side)
and stops when the last SAE is trained. Each side then writes its SAEs' inference weights
in this project's names (`weights_<L>.safetensors`: W_enc [d_in, d_sae], b_enc, W_dec
[d_sae, d_in], b_dec) and `result.json` (wall and CPU seconds, peak RSS).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload as wl  # noqa: E402  (this folder, not an installed package)


def hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def ours_fields(job: dict[str, Any]) -> dict[str, Any]:
    """This project's runner options shared by the multi and the single runs: the SAELens 6
    recipe of benchmark/train_throughput.py for TopK (Adam beta1 0.9, decoder rows started
    at norm 0.1, no decoder renormalisation), or with `job["ours_recipe"]` that recipe of
    this project (`recipe="recommended"`: its own optimizer, learning rate and start)."""
    if job.get("ours_recipe"):
        fields = _shared_fields(job)
        fields.update(recipe=job["ours_recipe"], **job.get("ours_options", {}))
        return fields
    return dict(
        _shared_fields(job),
        lr=job["lr"],
        adam_beta1=0.9,
        normalize_sae_decoder=False,
        decoder_init_norm=0.1,
        **job.get("ours_options", {}),  # extra options for this project's runs only
    )


def _shared_fields(job: dict[str, Any]) -> dict[str, Any]:
    """The workload: model, tokens, length, batches, buffer, seed."""
    return dict(
        model_name="benchmark-gpt2",
        dataset_path=job["tokens"],
        is_dataset_tokenized=True,
        streaming=False,
        context_size=job["context"],
        d_in=job["d_in"],
        training_tokens=job["training_tokens"],
        train_batch_size_tokens=job["batch_tokens"],
        store_batch_size_prompts=job["batch_tokens"] // job["context"],
        n_batches_in_buffer=job["buffer_batches"],
        device="cpu",
        seed=job["seed"],
        log_to_wandb=False,
        eval_every_n_wandb_logs=10**9,
        verbose=False,
    )


def ours_sae(job: dict[str, Any]) -> dict[str, Any]:
    return dict(architecture="topk", activation_fn_kwargs={"k": job["k"]}, d_sae=job["d_sae"])


def save_ours(sae: Any, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    sae.process_state_dict_for_saving(state)
    save_file(state, path)


def train_ours(job: dict[str, Any], out: Path) -> dict[str, Any]:
    import sae_lens
    from sae_lens.allocator import freed_memory_reused
    from sae_lens.multi_sae_config import MultiSAETrainingRunnerConfig
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner

    model = wl.load_hooked_transformer(job["model_dir"])
    cfg = MultiSAETrainingRunnerConfig(
        {"resid": {"hook_name": "blocks.*.hook_resid_post", **ours_sae(job)}},
        **ours_fields(job),
        checkpoint_path=str(out / "runs"),
    )
    clock = wl.Clock()
    with freed_memory_reused("cpu", enabled=True):  # as the command line runs
        saes = MultiSAETrainingRunner(cfg, override_model=model).run()
    wall, cpu = clock.read()
    for layer in range(job["n_layers"]):
        save_ours(saes[f"resid_{layer}"], out / f"weights_{layer}.safetensors")
    return {
        "library": f"sae_lens {sae_lens.__version__} (this project), multi",
        "wall_s": wall,
        "cpu_s": cpu,
    }


def train_ours_single(job: dict[str, Any], out: Path) -> dict[str, Any]:
    import sae_lens
    from sae_lens import SAETrainingRunner
    from sae_lens.allocator import freed_memory_reused
    from sae_lens.config import LanguageModelSAERunnerConfig

    model = wl.load_hooked_transformer(job["model_dir"])
    clock = wl.Clock()
    saes = []
    with freed_memory_reused("cpu", enabled=True):
        for layer in range(job["n_layers"]):
            cfg = LanguageModelSAERunnerConfig(
                **ours_fields(job),
                **ours_sae(job),
                hook_name=hook(layer),
                hook_layer=layer,
                checkpoint_path=str(out / "runs"),
            )
            saes.append(SAETrainingRunner(cfg, override_model=model).run())
    wall, cpu = clock.read()
    for layer, sae in enumerate(saes):
        save_ours(sae, out / f"weights_{layer}.safetensors")
    return {
        "library": f"sae_lens {sae_lens.__version__} (this project), {len(saes)} single runs",
        "wall_s": wall,
        "cpu_s": cpu,
    }


def train_saelens6(job: dict[str, Any], out: Path) -> dict[str, Any]:
    from safetensors.torch import load_file, save_file

    import sae_lens
    from sae_lens import LoggingConfig, TopKTrainingSAEConfig

    if "peer-venv" not in sae_lens.__file__:
        raise SystemExit(f"expected SAELens 6.54.12 from /work/peer-venv, got {sae_lens.__file__}")
    from sae_lens.multi_sae_training_runner import (
        MultiSAETrainingRunner,
        MultiSAETrainingRunnerConfig,
    )

    model = wl.load_hooked_transformer(job["model_dir"])
    dataset = wl.load_tokens(job["tokens"])
    names = {f"resid_{layer}": hook(layer) for layer in range(job["n_layers"])}
    cfg = MultiSAETrainingRunnerConfig(
        saes={
            name: TopKTrainingSAEConfig(d_in=job["d_in"], d_sae=job["d_sae"], k=job["k"])
            for name in names
        },
        hook_names=names,
        model_name="benchmark-gpt2",
        dataset_path=job["tokens"],
        streaming=False,
        context_size=job["context"],
        training_tokens=job["training_tokens"],
        train_batch_size_tokens=job["batch_tokens"],
        store_batch_size_prompts=job["batch_tokens"] // job["context"],
        # SAELens 6's buffer holds n_batches_in_buffer * context_size tokens: the same tokens
        # as this project's n_batches_in_buffer model batches
        n_batches_in_buffer=job["buffer_batches"] * job["batch_tokens"] // job["context"],
        device="cpu",
        seed=job["seed"],
        lr=job["lr"],
        adam_beta1=0.9,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=str(out / "final"),
    )
    clock = wl.Clock()
    saes = MultiSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()
    wall, cpu = clock.read()
    for layer in range(job["n_layers"]):
        folder = out / "inference" / str(layer)
        saes[f"resid_{layer}"].save_inference_model(str(folder))
        save_file(
            load_file(str(folder / "sae_weights.safetensors")),
            out / f"weights_{layer}.safetensors",
        )
    return {"library": f"SAELens {sae_lens.__version__}", "wall_s": wall, "cpu_s": cpu}


def train_sparsify(job: dict[str, Any], out: Path) -> dict[str, Any]:
    import importlib.metadata

    from safetensors.torch import load_file, save_file
    from sparsify import SaeConfig, TrainConfig, Trainer

    model = wl.load_hf_model(job["model_dir"])
    dataset = wl.load_tokens(job["tokens"])
    n_rows = job["training_tokens"] // job["context"]
    data = dataset.select(range(n_rows)).with_format("torch")
    hookpoints = [f"h.{layer}" for layer in range(job["n_layers"])]
    cfg = TrainConfig(
        SaeConfig(expansion_factor=job["d_sae"] // job["d_in"], k=job["k"]),
        batch_size=job["batch_tokens"] // job["context"],
        hookpoints=hookpoints,
        init_seeds=[job["seed"]],
        log_to_wandb=False,
        save_every=10**9,  # only the final save
        save_dir=str(out / "checkpoints"),
        run_name="run",
    )
    clock = wl.Clock()
    Trainer(cfg, data, model).fit()
    wall, cpu = clock.read()
    for layer, point in enumerate(hookpoints):
        saved = load_file(str(out / "checkpoints" / "run" / point / "sae.safetensors"))
        save_file(
            {
                "W_enc": saved["encoder.weight"].T.contiguous(),
                "b_enc": saved["encoder.bias"],
                "W_dec": saved["W_dec"],
                "b_dec": saved["b_dec"],
            },
            out / f"weights_{layer}.safetensors",
        )
    version = importlib.metadata.version("eai-sparsify")
    return {"library": f"sparsify {version}", "wall_s": wall, "cpu_s": cpu}


TRAIN = {
    "ours": train_ours,
    "ours_single": train_ours_single,
    "saelens6": train_saelens6,
    "sparsify": train_sparsify,
}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["out_dir"])
    result = TRAIN[job["library"]](job, out)
    result["peak_rss_mb"] = wl.max_rss_mb()
    wl.write_json(out / "result.json", result)


if __name__ == "__main__":
    main()
