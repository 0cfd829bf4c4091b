"""A cross-layer transcoder against per-layer transcoders on the embedded model, both layers.

    .venv/bin/python benchmark/clt_vs_transcoders.py [--tokens N] [--width W] [--k K]
        [--seed S] [--results DIR] [--name NAME]

Trained on the same tokens (the embedded corpus's train split, same seed, context, batch
and buffer sizes), with the same options (Adam at 3e-3, free decoder norms, TopK k per
layer, AuxK on latents dead for 200 steps), and the same total width (2 x W latents):
- `clt_per_layer`: a CLT over layers 0-1 (`blocks.*.ln2.hook_normalized` ->
  `blocks.*.hook_mlp_out`), W latents per layer, TopK k in each layer (the default);
- `clt_global`: the same with one TopK of 2k over both layers;
- `transcoders`: two TopK transcoders, `blocks.i.ln2.hook_normalized` ->
  `blocks.i.hook_mlp_out`, W latents and k each.
Each is trained by `SAETrainingRunner` (one model pass per step: the CLT's store reads all
four hooks; each transcoder's reads its two). Then one evaluation on the corpus's held-out
split (`sae_lens.clt_evals.evaluate_replacement`): per-layer FVU and L0 (open loop, every
layer's input from the unpatched model), and the CE loss score and KL divergence of the
model with both MLP outputs replaced (closed loop: layer 1 reads the replaced layer 0).

Writes <results>/<name>.json (default benchmark/results/clt_vs_transcoders.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sae_lens.clt_evals import evaluate_replacement
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.dataset_sources import held_out_split, load_any_dataset
from sae_lens.embedded import EMBEDDED_DATASET_NAME, EMBEDDED_MODEL_NAME
from sae_lens.sae import SAE
from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training.activations_store import ActivationsStore

HERE = Path(__file__).resolve().parent
CONTEXT, BATCH_TOKENS, EVAL_BATCHES, EVAL_PROMPTS = 128, 1024, 16, 8
IN_HOOK, OUT_HOOK = "blocks.{}.ln2.hook_normalized", "blocks.{}.hook_mlp_out"


def common(tokens: int, run_dir: str, seed: int = 42) -> dict[str, Any]:
    return dict(
        model_name=EMBEDDED_MODEL_NAME,
        dataset_path=EMBEDDED_DATASET_NAME,
        context_size=CONTEXT,
        train_batch_size_tokens=BATCH_TOKENS,
        training_tokens=tokens,
        store_batch_size_prompts=16,
        n_batches_in_buffer=8,
        lr=3e-3,
        normalize_sae_decoder=False,
        dead_feature_window=200,
        eval_every_n_wandb_logs=10**9,  # evaluated once, below
        log_to_wandb=False,
        verbose=False,
        seed=seed,
        checkpoint_path=run_dir,
    )


def clt_config(
    tokens: int, width: int, k: int, scope: str, run_dir: str, seed: int
) -> dict[str, Any]:
    return dict(
        **common(tokens, run_dir, seed),
        architecture="clt",
        hook_name=IN_HOOK.format("*"),
        hook_name_out=OUT_HOOK.format("*"),
        hook_layer=1,
        d_in=2 * 128,
        d_sae=2 * width,
        activation_fn_kwargs={"k": k, "topk_scope": scope},
    )


def transcoder_config(
    tokens: int, width: int, k: int, layer: int, run_dir: str, seed: int
) -> dict[str, Any]:
    return dict(
        **common(tokens, run_dir, seed),
        architecture="topk",
        hook_name=IN_HOOK.format(layer),
        hook_name_out=OUT_HOOK.format(layer),
        hook_layer=layer,
        d_in=128,
        d_sae=width,
        activation_fn_kwargs={"k": k},
    )


def train(fields: dict[str, Any]) -> tuple[SAE, SAETrainingRunner, float]:
    started = time.perf_counter()
    runner = SAETrainingRunner(LanguageModelSAERunnerConfig(**fields))
    sae = runner.run()
    return sae.eval(), runner, time.perf_counter() - started


def held_out_tokens(runner: SAETrainingRunner) -> list[torch.Tensor]:
    """EVAL_BATCHES batches of EVAL_PROMPTS held-out sequences (documents training never read)."""
    cfg = runner.cfg
    split = held_out_split(cfg.dataset_path)
    dataset = load_any_dataset(cfg.dataset_path, split=split)
    store = ActivationsStore.from_config(runner.model, cfg, override_dataset=dataset)
    return [store.get_batch_tokens(EVAL_PROMPTS) for _ in range(EVAL_BATCHES)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=150 * BATCH_TOKENS)
    parser.add_argument("--width", type=int, default=512, help="latents per layer")
    parser.add_argument("--k", type=int, default=16, help="active latents per layer")
    parser.add_argument("--seed", type=int, default=42, help="initialisation and data order")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="clt_vs_transcoders", help="results file name")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(True)
    results: dict[str, Any] = {
        "setup": {
            "model": EMBEDDED_MODEL_NAME,
            "dataset": EMBEDDED_DATASET_NAME,
            "training_tokens": args.tokens,
            "latents_per_layer": args.width,
            "total_latents": 2 * args.width,
            "k_per_layer": args.k,
            "seed": args.seed,
            "eval_tokens": EVAL_BATCHES * EVAL_PROMPTS * CONTEXT,
            "threads": torch.get_num_threads(),
        }
    }
    with tempfile.TemporaryDirectory() as run_dir:
        replacements: dict[str, Any] = {}
        times: dict[str, float] = {}
        for scope in ("layer", "global"):
            fields = clt_config(args.tokens, args.width, args.k, scope, run_dir, args.seed)
            clt, runner, seconds = train(fields)
            replacements[f"clt_{'per_layer' if scope == 'layer' else scope}"] = clt
            times[f"clt_{'per_layer' if scope == 'layer' else scope}"] = seconds
        transcoders, seconds = [], 0.0
        for layer in (0, 1):
            sae, runner, took = train(
                transcoder_config(args.tokens, args.width, args.k, layer, run_dir, args.seed)
            )
            transcoders.append(sae)
            seconds += took
        replacements["transcoders"], times["transcoders"] = transcoders, seconds
        tokens = held_out_tokens(runner)
        model = runner.model
        for name, replacement in replacements.items():
            metrics = evaluate_replacement(model, replacement, tokens)
            results[name] = {**metrics, "train_seconds": round(times[name], 1)}
            print(name, json.dumps(results[name]))
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{args.name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
