"""Issue 20's peer benchmark: one TopK SAE per layer of a 12-layer GPT-2 with random weights,
all layers in one run, with this project's `MultiSAETrainingRunner`, SAELens 6.54's
`MultiSAETrainingRunner` and EleutherAI sparsify 1.3.3 (all layers of one `Trainer`); and
this project's multi run against twelve single runs (`SAETrainingRunner`, once per layer).

    .venv/bin/python benchmark/multi_sae_peers.py [--d-model 256] [--tokens 65536] [--repeats 1]

The model: a GPT-2 (12 layers, d_model D, D/64 heads, d_mlp 4D, n_ctx 256, the embedded
tokenizer's 4096-token vocabulary) with random weights (seed 0), saved once as a Hugging Face
folder; sparsify reads it with transformers, the SAE Lens libraries as the same
HookedTransformer (benchmark/peers/workload.py: LayerNorm folded, nothing centred; the
script checks that every layer's hooked residual stream equals the Hugging Face block
output). Tokens: the embedded corpus (train split, rows of 256 tokens starting with BOS,
shuffled; benchmark/train_throughput.py's `_write_tokens`), the same rows in the same order
for every library. SAEs: TopK, k 32, d_sae = expansion x D, one on each
`blocks.<L>.hook_resid_post` (sparsify: `h.<L>`), batches of 4096 tokens. Options: both SAE
Lens libraries Adam (beta1 0.9) at lr 1e-2, decoder rows started at norm 0.1, no decoder
renormalisation (train_throughput's TopK recipe; SAELens 6's defaults); sparsify its
defaults (signum optimiser, learning rate from the width, FVU loss), as in
train_throughput.

Each library runs in its own subprocess (benchmark/peers/multi_sae_driver.py, from /tmp so
the peers import their own installed packages), one after another; with `--repeats N` the
sides alternate N times and the medians are reported. The clock starts after the model and
the tokens are loaded and stops when the last SAE is trained. One evaluation function for
every library (train_throughput's `evaluate`, without the downstream CE/KL scores):
explained variance and L0 of each layer's SAE on held-out activations (32 rows of the test
split). Writes benchmark/results/multi_sae_peers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(0, str(HERE))

import train_throughput as tt  # noqa: E402  (benchmark/train_throughput.py)
import workload as wl  # noqa: E402  (benchmark/peers/workload.py)

DRIVER = HERE / "peers" / "multi_sae_driver.py"
RESULTS = HERE / "results" / "multi_sae_peers.json"
PYTHONS = {
    "ours": sys.executable,
    "ours_single": sys.executable,
    "saelens6": tt.SAELENS6_PYTHON,
    "sparsify": tt.SPARSIFY_PYTHON,
}
CONTEXT = 256
BATCH_TOKENS = 4096
K = 32
LR = 1e-2  # train_throughput's TopK learning rate (both SAE Lens libraries)
SEED = 42


def prepare(work: Path, d_model: int, n_layers: int) -> dict[str, str]:
    """Model folder and token datasets in `work` (kept: delete `work` to rebuild)."""
    model_dir = work / f"model_d{d_model}_l{n_layers}"
    if not (model_dir / "config.json").is_file():
        shape = dict(n_embd=d_model, n_layer=n_layers, n_head=d_model // 64,
                     n_inner=4 * d_model, n_positions=CONTEXT, vocab_size=4096)  # fmt: skip
        tt._write_model(model_dir, shape)
    if not (work / "tokens_test" / "dataset_info.json").is_file():
        assert wl.CONTEXT == CONTEXT
        tt._write_tokens(work)
    return {
        "model_dir": str(model_dir),
        "tokens": str(work / "tokens_train"),
        "tokens_test": str(work / "tokens_test"),
    }


@torch.no_grad()
def held_out_activations(paths: dict[str, str], n_layers: int) -> dict[str, Any]:
    """Every layer's held-out residual stream [rows * CONTEXT, d_model] from the
    HookedTransformer, and the largest difference to the Hugging Face block outputs."""
    tokens = wl.load_tokens(paths["tokens_test"]).with_format("torch")["input_ids"][: tt.EVAL_ROWS]
    model = wl.load_hooked_transformer(paths["model_dir"])
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    acts = [cache[name].flatten(0, 1) for name in names]
    hf_model, hf_acts = wl.load_hf_model(paths["model_dir"]), {}
    for layer in range(n_layers):  # the block outputs sparsify hooks (`h.<L>`)
        hf_model.transformer.h[layer].register_forward_hook(
            lambda module, inputs, output, layer=layer: hf_acts.__setitem__(
                layer, output[0] if isinstance(output, tuple) else output
            )
        )
    hf_model(tokens[:4])
    diff = max(
        (hf_acts[layer].flatten(0, 1) - acts[layer][: 4 * CONTEXT]).abs().max().item()
        for layer in range(n_layers)
    )
    return {"acts": acts, "hf_tl_max_abs_diff": diff}


class NoDownstream:
    """`tt.evaluate` without the CE/KL splice (one hook of one layer per Downstream)."""

    def score(self, reconstruct: Any) -> dict[str, float]:
        return {}


def run(library: str, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    out = Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    job_file = out / "job.json"
    job_file.write_text(json.dumps(job, indent=2))
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) if library.startswith("ours") else ""}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(
        [PYTHONS[library], str(DRIVER), str(job_file)],
        cwd="/tmp",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{library} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    result = json.loads((out / "result.json").read_text())
    result.update(
        process_s=time.perf_counter() - started,
        load_avg_before=load_before,
        load_avg_after=os.getloadavg()[0],
    )
    return result


def evaluate_run(out: Path, acts: list[torch.Tensor]) -> list[dict[str, float]]:
    return [
        tt.evaluate("topk", out / f"weights_{layer}.safetensors", layer_acts, NoDownstream())
        for layer, layer_acts in enumerate(acts)
    ]


def identical(a: Path, b: Path, n_layers: int) -> bool:
    from safetensors.torch import load_file

    for layer in range(n_layers):
        x, y = (load_file(str(p / f"weights_{layer}.safetensors")) for p in (a, b))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=12)
    parser.add_argument("--expansion", type=int, default=8, help="d_sae = expansion x d_model")
    parser.add_argument("--tokens", type=int, default=65536, help="training tokens per run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--libraries",
        nargs="+",
        default=["ours", "sparsify", "saelens6", "ours_single"],
        choices=list(PYTHONS),
    )
    parser.add_argument(
        "--ours-options",
        type=json.loads,
        default={},
        help="extra options of this project's runs, as JSON (e.g. '{\"n_eval_batches\": 1}')",
    )
    parser.add_argument(
        "--ours-recipe",
        default=None,
        help="train this project's runs with this recipe (e.g. recommended) instead of "
        "SAELens 6's TopK options",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/sae_lens_multi_peers"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    paths = prepare(args.work, args.d_model, args.n_layers)
    job_common = dict(
        paths,
        n_layers=args.n_layers,
        d_in=args.d_model,
        d_sae=args.expansion * args.d_model,
        k=K,
        context=CONTEXT,
        batch_tokens=BATCH_TOKENS,
        buffer_batches=wl.BUFFER_BATCHES,
        training_tokens=args.tokens,
        lr=LR,
        seed=SEED,
        ours_options=args.ours_options,
        ours_recipe=args.ours_recipe,
    )
    held_out = held_out_activations(paths, args.n_layers)
    print(
        f"HF vs TransformerLens residual streams: max |diff| {held_out['hf_tl_max_abs_diff']:.2e}"
    )
    runs: dict[str, list[dict[str, Any]]] = {lib: [] for lib in args.libraries}
    for repeat in range(args.repeats):
        for library in args.libraries:
            out = args.work / "jobs" / f"{library}_{repeat}"
            result = run(library, dict(job_common, library=library, out_dir=str(out)), 3600)
            if repeat == 0:
                result["eval"] = evaluate_run(out, held_out["acts"])
                result["mean_explained_variance"] = statistics.mean(
                    e["explained_variance"] for e in result["eval"]
                )
            runs[library].append(result)
            ev = result.get("mean_explained_variance")
            print(
                f"{library} #{repeat}: {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU"
                + (f", mean held-out EV {ev:.4f}" if ev is not None else "")
                + f" (load {result['load_avg_before']:.1f} -> {result['load_avg_after']:.1f})",
                flush=True,
            )
    wall = {lib: statistics.median(r["wall_s"] for r in rs) for lib, rs in runs.items()}
    cpu = {lib: statistics.median(r["cpu_s"] for r in rs) for lib, rs in runs.items()}
    summary: dict[str, Any] = {"median_wall_s": wall, "median_cpu_s": cpu}
    if "ours" in runs:
        summary["speedup_wall"] = {lib: wall[lib] / wall["ours"] for lib in wall if lib != "ours"}
        summary["speedup_cpu"] = {lib: cpu[lib] / cpu["ours"] for lib in cpu if lib != "ours"}
        ev_ours = [e["explained_variance"] for e in runs["ours"][0]["eval"]]
        summary["explained_variance_minus_ours"] = {
            lib: [e["explained_variance"] - o for e, o in zip(rs[0]["eval"], ev_ours, strict=True)]
            for lib, rs in runs.items()
            if lib != "ours"
        }
        if "ours_single" in runs:
            summary["single_runs_identical_weights"] = identical(
                args.work / "jobs" / "ours_0", args.work / "jobs" / "ours_single_0", args.n_layers
            )
    report = dict(
        args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        workload=dict(
            {k: v for k, v in job_common.items() if k not in paths},
            n_heads=args.d_model // 64,
            d_mlp=4 * args.d_model,
            hook="blocks.<L>.hook_resid_post / h.<L>",
            eval_rows=tt.EVAL_ROWS,
        ),
        machine=f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
        uptime=subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        hf_tl_max_abs_diff=held_out["hf_tl_max_abs_diff"],
        summary=summary,
        runs=runs,
    )
    args.results.parent.mkdir(exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
