"""Transcoder training, end to end: this project against EleutherAI sparsify 1.3.3's
`--transcode`, on CPU, in one run so that the ratio is fair.

    .venv/bin/python benchmark/transcoder_vs_sparsify.py [--tokens N] [--repeats R]
        [--work DIR] [--results DIR]

The workload is the training benchmark's (benchmark/peers/workload.py: a GPT-2 with random
weights, d_model 128, the embedded corpus's tokens in rows of 256, batches of 4,096 tokens),
with a TopK skip transcoder (k 32, 2,048 latents) on the MLP of block `HOOK_LAYER`:
- this project: `SAETrainingRunner` from `blocks.<layer>.ln2.hook_normalized` to
  `blocks.<layer>.hook_mlp_out` (`skip_connection=True`, options `OURS`), as the command
  line runs (freed memory reused);
- sparsify: `Trainer` with `SaeConfig(transcode=True, skip_connection=True)` on hookpoint
  `h.<layer>.mlp` (benchmark/peers/sparsify_transcoder_driver.py, /work/peer-loaders-venv),
  its defaults otherwise.
Each job runs in its own process (from /tmp), the libraries alternating with `--repeats`;
the wall time counts everything from building the runner (trainer) to the saved result.

Then one evaluation applied to both libraries' weights: the held-out FVU (test split, EVAL_ROWS
rows) of the MLP output, each transcoder given its own input (this project's: the normalised
residual; sparsify's: `ln_2`'s output, the same tensor after LayerNorm's affine map, which
the TransformerLens model folds into the MLP's weights).

Writes <results>/transcoder_vs_sparsify.json and .md (default benchmark/results/).
"""

from __future__ import annotations

import argparse
import json
import os
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

import workload as wl  # noqa: E402  (benchmark/peers/workload.py)

SPARSIFY_PYTHON = "/work/peer-loaders-venv/bin/python"
SPARSIFY_DRIVER = HERE / "peers" / "sparsify_transcoder_driver.py"
K = 32
IN_HOOK = f"blocks.{wl.HOOK_LAYER}.ln2.hook_normalized"
OUT_HOOK = f"blocks.{wl.HOOK_LAYER}.hook_mlp_out"
EVAL_ROWS = 32
DEFAULT_TOKENS = 100 * wl.BATCH_TOKENS
# This project's options beyond the workload's: Adam at 3e-3 (beta1 0.9), decoder rows
# started at norm 0.01 with the encoder tied to them and left free (SAELens 6's
# initialisation, a smaller norm: the MLP output is small). Calibration at 100 steps
# (held-out FVU): these 0.046; lr 1e-2 with norm 0.01 0.062, with norm 0.1 0.063;
# sparsify's defaults 0.296. The `recommended` recipe (signSGD, schedule-free) and 5.6.0's
# defaults (Adam 3e-4, unit-norm decoder) start far off (FVU 6.2 and 300 after 20 steps).
OURS: dict[str, Any] = dict(
    lr=3e-3, adam_beta1=0.9, normalize_sae_decoder=False, decoder_init_norm=0.01
)


# ---------------------------------------------------------------- jobs


def run_job(python: str, script: Path, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one job in its own process from /tmp; return its result.json (with the process
    time and the load average before it)."""
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(json.dumps(job, indent=2))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    ours = script == Path(__file__)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) if ours else ""}
    command = [python, str(script), *(["--job"] if ours else []), str(job_file)]
    proc = subprocess.run(
        command, cwd="/tmp", env=env, capture_output=True, text=True, timeout=timeout_s
    )
    (out_dir / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"job {job['name']} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads((out_dir / "result.json").read_text())
    result.update(process_s=time.perf_counter() - started, load_avg_before=load_before)
    return result


def our_config(job: dict[str, Any]) -> Any:
    from sae_lens import LanguageModelSAERunnerConfig

    return LanguageModelSAERunnerConfig(
        model_name="benchmark-gpt2",
        hook_name=IN_HOOK,
        hook_layer=wl.HOOK_LAYER,
        hook_name_out=OUT_HOOK,
        skip_connection=True,
        dataset_path=job["tokens"],
        streaming=False,
        context_size=wl.CONTEXT,
        architecture="topk",
        activation_fn_kwargs={"k": job["k"]},
        d_in=wl.D_IN,
        d_sae=wl.D_SAE,
        training_tokens=job["training_tokens"],
        train_batch_size_tokens=wl.BATCH_TOKENS,
        store_batch_size_prompts=wl.PROMPTS_PER_BATCH,
        n_batches_in_buffer=wl.BUFFER_BATCHES,
        device="cpu",
        seed=wl.SAE_SEED,
        log_to_wandb=False,
        eval_every_n_wandb_logs=10**9,  # no periodic evaluation (sparsify runs none)
        checkpoint_path=str(Path(job["out_dir"]) / "runs"),
        verbose=False,
        **job["our_options"],
    )


def run_our_job(job: dict[str, Any]) -> None:
    """One of this project's jobs (in a subprocess): train, save the weights in the
    layout both libraries are evaluated in."""
    from safetensors.torch import save_file

    import sae_lens
    from sae_lens import SAETrainingRunner
    from sae_lens.allocator import freed_memory_reused

    model = wl.load_hooked_transformer(job["model_dir"])
    dataset = wl.load_tokens(job["tokens"])
    clock = wl.Clock()
    with freed_memory_reused("cpu", enabled=True):  # as the command line runs
        sae = SAETrainingRunner(
            our_config(job), override_model=model, override_dataset=dataset
        ).run()
    wall, cpu = clock.read()
    weights = {name: p.detach().contiguous() for name, p in sae.named_parameters()}
    save_file(weights, Path(job["out_dir"]) / "weights.safetensors")
    result = {
        "library": f"sae_lens {sae_lens.__version__} (this project)",
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        "peak_rss_mb": wl.max_rss_mb(),
    }
    wl.write_json(Path(job["out_dir"]) / "result.json", result)


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def held_out_pairs(paths: dict[str, str]) -> dict[str, torch.Tensor]:
    """Held-out (test split) MLP inputs and outputs [n, d]: `tl_in` (the normalised
    residual), `hf_in` (ln_2's output), `target` (the MLP output), and the largest
    difference between the two models' MLP outputs."""
    from transformers import GPT2LMHeadModel

    tokens = wl.load_tokens(paths["tokens_test"]).with_format("torch")["input_ids"][:EVAL_ROWS]
    tl_model = wl.load_hooked_transformer(paths["model_dir"])
    _, cache = tl_model.run_with_cache(
        tokens, names_filter=[IN_HOOK, OUT_HOOK], stop_at_layer=wl.HOOK_LAYER + 1
    )
    hf_model: GPT2LMHeadModel = wl.load_hf_model(paths["model_dir"])
    captured: dict[str, torch.Tensor] = {}

    def capture(_module: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured["in"], captured["out"] = inputs[0], output

    mlp = hf_model.transformer.h[wl.HOOK_LAYER].mlp
    handle = mlp.register_forward_hook(capture)
    hf_model(tokens)
    handle.remove()
    target = cache[OUT_HOOK].flatten(0, 1)
    return {
        "tl_in": cache[IN_HOOK].flatten(0, 1),
        "hf_in": captured["in"].flatten(0, 1),
        "target": target,
        "max_abs_target_diff": (captured["out"].flatten(0, 1) - target).abs().max(),
    }


def predict(weights: dict[str, torch.Tensor], x: torch.Tensor, k: int) -> torch.Tensor:
    """A TopK skip transcoder's prediction: the k largest ReLU pre-activations decoded, plus
    b_dec and the skip path."""
    pre = torch.relu(x @ weights["W_enc"] + weights["b_enc"])
    top = pre.topk(k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    return acts @ weights["W_dec"] + weights["b_dec"] + x @ weights["W_skip"]


def fvu(prediction: torch.Tensor, target: torch.Tensor) -> float:
    residual = (target - prediction).double().pow(2).sum()
    return (residual / (target - target.mean(0)).double().pow(2).sum()).item()


def evaluate(out_dir: Path, x: torch.Tensor, target: torch.Tensor, k: int) -> dict[str, float]:
    from safetensors.torch import load_file

    weights = load_file(str(out_dir / "weights.safetensors"))
    return {"held_out_fvu": fvu(predict(weights, x, k), target)}


# ---------------------------------------------------------------- orchestration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", default="/tmp/transcoder_bench")
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--our-options", type=json.loads, default=OURS, help="this project's options (JSON)"
    )
    parser.add_argument("--only", choices=("ours", "sparsify"), help="run one side only")
    args = parser.parse_args()
    if args.job:
        run_our_job(json.loads(Path(args.job).read_text()))
        return
    if args.tokens % wl.BATCH_TOKENS:
        raise SystemExit(f"--tokens must be a multiple of {wl.BATCH_TOKENS} (one batch)")

    from train_throughput import prepare  # the shared model and token files

    work = Path(args.work)
    paths = prepare(work)
    pairs = held_out_pairs(paths)
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for library in ("ours", "sparsify"):  # alternating, so load hits both sides
            if args.only not in (None, library):
                continue
            out_dir = work / f"{library}_{repeat}"
            job = {**paths, "name": out_dir.name, "out_dir": str(out_dir), "k": K}
            job.update(training_tokens=args.tokens, our_options=args.our_options)
            if library == "ours":
                result = run_job(sys.executable, Path(__file__), job, args.timeout)
                result.update(evaluate(out_dir, pairs["tl_in"], pairs["target"], K))
            else:
                result = run_job(SPARSIFY_PYTHON, SPARSIFY_DRIVER, job, args.timeout)
                result.update(evaluate(out_dir, pairs["hf_in"], pairs["target"], K))
            result.update(side=library, repeat=repeat)
            runs.append(result)
            print(
                f"{library} #{repeat}: {result['train_wall_s']:.1f} s, "
                f"held-out FVU {result['held_out_fvu']:.4f}",
                flush=True,
            )
    if args.only is not None:
        return  # a calibration run: no comparison to report
    report = summarise(runs, args.tokens, float(pairs["max_abs_target_diff"]), args.our_options)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "transcoder_vs_sparsify.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, results / "transcoder_vs_sparsify.md")
    print(f"speedup (median wall, sparsify / ours): {report['speedup']:.2f}x")


def summarise(
    runs: list[dict[str, Any]], tokens: int, target_diff: float, our_options: dict[str, Any]
) -> dict[str, Any]:
    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["side"] == side)

    return {
        "workload": {
            "model": wl.MODEL,
            "in_hook": IN_HOOK,
            "out_hook": OUT_HOOK,
            "d_sae": wl.D_SAE,
            "k": K,
            "batch_tokens": wl.BATCH_TOKENS,
            "training_tokens": tokens,
            "eval_tokens": EVAL_ROWS * wl.CONTEXT,
            "our_options": our_options,
        },
        "max_abs_mlp_out_diff_hf_vs_tl": target_diff,
        "runs": runs,
        "median_wall_s": {side: median(side, "train_wall_s") for side in ("ours", "sparsify")},
        "median_held_out_fvu": {
            side: median(side, "held_out_fvu") for side in ("ours", "sparsify")
        },
        "speedup": median("sparsify", "train_wall_s") / median("ours", "train_wall_s"),
        "cpu": f"{os.cpu_count()} cores, torch {torch.__version__}",
    }


def write_markdown(report: dict[str, Any], path: Path) -> None:
    work = report["workload"]
    lines = [
        "# Transcoder training: this project vs sparsify 1.3.3 `--transcode`",
        "",
        f"TopK skip transcoder (k {work['k']}, {work['d_sae']} latents) from "
        f"`{work['in_hook']}` to `{work['out_hook']}`, {work['training_tokens']:,} tokens "
        f"in batches of {work['batch_tokens']:,}; held-out FVU on {work['eval_tokens']:,} "
        "test-split tokens. Generated by benchmark/transcoder_vs_sparsify.py.",
        "",
        "| library | median wall (s) | median held-out FVU |",
        "|---|---|---|",
    ]
    for side in ("ours", "sparsify"):
        lines.append(
            f"| {side} | {report['median_wall_s'][side]:.1f} | "
            f"{report['median_held_out_fvu'][side]:.4f} |"
        )
    lines += ["", f"Speedup (sparsify wall / ours): **{report['speedup']:.2f}x**", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
