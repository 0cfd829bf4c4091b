"""One multi-SAE run against one single run per layer: this project's
`MultiSAETrainingRunner` (one model forward per batch for every layer) and its
`SAETrainingRunner` run once per layer, on the same tokens, widths and seed.

    .venv/bin/python benchmark/multi_sae_runs.py [--tokens N] [--d-model 768 --n-layers 12 ...]

The model is a HookedTransformer with random weights (seed 0; GPT-2-small-shaped by
default: 12 layers, d_model 768, 12 heads, d_mlp 3072) and the embedded tokenizer; the
tokens are the embedded corpus `pydoc-corpus`, tokenized on the fly. One TopK SAE per
layer on `blocks.<layer>.hook_resid_post`. The script reports wall time of each side (model
loading excluded: both get the same model object), the speed-up, whether every SAE of the
multi run has the weights of its single run (it should, bit for bit), and the explained
variance of each SAE on held-out activations (the corpus' test split).

The peers of issue 20 (sparsify training all layers, SAELens 6.54's MultiSAETrainingRunner)
are not driven by this script yet. Writes benchmark/results/multi_sae_runs.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.dataset_sources import held_out_split, load_any_dataset
from sae_lens.embedded import load_embedded_hooked_transformer
from sae_lens.multi_sae_config import MultiSAETrainingRunnerConfig
from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner
from sae_lens.sae_training_runner import SAETrainingRunner
from sae_lens.training.activations_store import ActivationsStore

RESULTS = Path(__file__).with_name("results") / "multi_sae_runs.json"


def build_model(args: argparse.Namespace) -> HookedTransformer:
    tokenizer = load_embedded_hooked_transformer().tokenizer
    cfg = HookedTransformerConfig(
        n_layers=args.n_layers,
        d_model=args.d_model,
        n_heads=args.n_heads,
        d_head=args.d_model // args.n_heads,
        d_mlp=args.d_mlp,
        n_ctx=args.context,
        d_vocab=len(tokenizer),
        act_fn="gelu_new",
        normalization_type="LN",
        seed=0,
        device=args.device,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.eval()
    return model


def shared_fields(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    return dict(
        training_tokens=args.tokens,
        train_batch_size_tokens=args.batch,
        context_size=args.context,
        store_batch_size_prompts=max(args.batch // args.context, 1),
        n_batches_in_buffer=8,
        d_in=args.d_model,
        device=args.device,
        n_eval_batches=1,
        log_to_wandb=False,
        verbose=False,
        checkpoint_path=str(run_dir),
    )


def sae_fields(args: argparse.Namespace) -> dict[str, Any]:
    return dict(architecture="topk", activation_fn_kwargs={"k": args.k}, d_sae=args.d_sae)


@torch.no_grad()
def explained_variance(
    sae: Any, model: HookedTransformer, layer: int, args: argparse.Namespace
) -> float:
    cfg = LanguageModelSAERunnerConfig(
        **{
            **shared_fields(args, Path(tempfile.mkdtemp())),
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hook_layer": layer,
        },
        **sae_fields(args),
    )
    held_out = load_any_dataset(cfg.dataset_path, split=held_out_split(cfg.dataset_path))
    store = ActivationsStore.from_config(model, cfg, override_dataset=held_out)
    acts = store.get_activations(store.get_batch_tokens(args.eval_prompts))[:, :, 0, :].flatten(
        0, 1
    )
    sae.eval()
    recon = sae(acts.to(sae.device))
    residual = (acts - recon).pow(2).sum(-1)
    total = (acts - acts.mean(0)).pow(2).sum(-1)
    return float(1 - residual.sum() / total.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--n-heads", type=int, default=12)
    parser.add_argument("--d-mlp", type=int, default=3072)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--d-sae", type=int, default=3072)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--eval-prompts", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    model = build_model(args)
    work = Path(tempfile.mkdtemp(prefix="multi_sae_bench_"))

    start = time.perf_counter()
    cfg = MultiSAETrainingRunnerConfig(
        {"resid": {"hook_name": "blocks.*.hook_resid_post", **sae_fields(args)}},
        **shared_fields(args, work / "multi"),
    )
    multi = MultiSAETrainingRunner(cfg, override_model=model).run()
    multi_s = time.perf_counter() - start

    single_s, same, rows = 0.0, True, []
    for layer in range(args.n_layers):
        single_cfg = LanguageModelSAERunnerConfig(
            **shared_fields(args, work / "single"),
            **sae_fields(args),
            hook_name=f"blocks.{layer}.hook_resid_post",
            hook_layer=layer,
        )
        start = time.perf_counter()
        single = SAETrainingRunner(single_cfg, override_model=model).run()
        single_s += time.perf_counter() - start
        mine = multi[f"resid_{layer}"]
        equal = all(
            torch.equal(a, b)
            for a, b in zip(mine.state_dict().values(), single.state_dict().values(), strict=True)
        )
        same &= equal
        rows.append(
            dict(
                layer=layer,
                identical_weights=equal,
                explained_variance_multi=explained_variance(mine, model, layer, args),
                explained_variance_single=explained_variance(single, model, layer, args),
            )
        )
    result = dict(
        args=vars(args),
        machine=f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
        multi_seconds=multi_s,
        single_runs_seconds=single_s,
        speedup=single_s / multi_s,
        all_identical=same,
        per_layer=rows,
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(
        f"multi run {multi_s:.1f}s, {args.n_layers} single runs {single_s:.1f}s: {single_s / multi_s:.2f}x; identical weights: {same}"
    )


if __name__ == "__main__":
    main()
