"""Quality per token (issue 17): held-out explained variance after 50, 200 and 1,000 steps of
each library at its defaults, and of this library's training options one by one.

    .venv/bin/python benchmark/quality_recipe.py --workload d256 --runs ours/topk/5.6.0 \\
        ours/topk/recommended sparsify/topk saelens6/topk --steps 1000 --snapshots 50 200 1000

Workloads (benchmark/peers/workload.py, chosen with SAE_BENCH_WORKLOAD): `d256`, a 2-layer
GPT-2 of d_model 256 with random weights hooked after block 0, SAEs of 4,096 latents; and
`embedded`, the training benchmark's d_model 128 model, 2,048 latents. Batches of 4,096
tokens of the embedded corpus; TopK k = 32; evaluation on 8,192 held-out tokens with one
function for every library (`train_throughput.evaluate`: L0, explained variance, KL score).

A run of `--steps` steps writes the SAE after each `--snapshots` step: ours through
checkpoints after exactly those steps (the checkpoint folder holds the weights to
evaluate: schedule-free's average), SAELens 6.54 by wrapping `SAETrainer.step`. With every
library's defaults and every option set below, nothing depends on the run's length (constant
learning rates, no decay), so the step-50 SAE of a 1,000-step run is the SAE of a 50-step
run; sparsify saves only at multiples of its `save_every`, so it gets one run per budget.
Results accumulate in benchmark/results/quality_recipe_<workload>.json (a rerun of a run
replaces its entry).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def _workload_from_argv() -> str:
    """The workload must be chosen before workload.py is imported (it reads the env var)."""
    if "--workload" in sys.argv:
        return sys.argv[sys.argv.index("--workload") + 1]
    return os.environ.get("SAE_BENCH_WORKLOAD", "embedded")


os.environ["SAE_BENCH_WORKLOAD"] = _workload_from_argv()
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import train_throughput as bench  # noqa: E402
import workload as wl  # noqa: E402

K = bench.K
# W_enc = W_dec.T scaled to `tied_encoder_norm` ("auto", filled in per architecture), b_dec
# the activations' mean
TIED_INIT = {
    "init_encoder_as_decoder_transpose": True,
    "b_dec_init_method": "mean",
    "encoder_init_norm": "auto",
}
TIED_INIT_UNSCALED = {"init_encoder_as_decoder_transpose": True, "b_dec_init_method": "mean"}
SIGN_SF = {"optimizer": "signsgd", "schedule_free": True, "lr": 5e-3, "scale_lr_with_width": True}
ADAM_SCALED = {"optimizer": "adam", "lr": 2e-4, "scale_lr_with_width": True}
SAELENS6_INIT = {"adam_beta1": 0.9, "normalize_sae_decoder": False, "decoder_init_norm": 0.1}

# Our option sets, by name: fields of LanguageModelSAERunnerConfig on top of each
# architecture's defaults (5.6.0's, with k = 32 for topk).
OURS: dict[str, dict[str, Any]] = {
    "5.6.0": {},
    "recommended": {"recipe": "recommended"},
    "recommended_encoder_0.577": {"recipe": "recommended", "encoder_init_norm": 3**-0.5},
    # one choice at a time, from the 5.6.0 defaults
    "tied_init": TIED_INIT,
    "adam_beta1_0.9": {"adam_beta1": 0.9},
    "adam_scaled": ADAM_SCALED,
    "adam_scaled_tied": {**ADAM_SCALED, **TIED_INIT},
    "adam_scaled_tied_b09": {**ADAM_SCALED, **TIED_INIT, "adam_beta1": 0.9},
    "adam_3e-3_tied": {"lr": 3e-3, **TIED_INIT},
    "signsgd_scaled": {**SIGN_SF, "schedule_free": False},
    "signsgd_sf_scaled": SIGN_SF,
    "signsgd_sf_unscaled": {**SIGN_SF, "scale_lr_with_width": False},
    "signsgd_sf_scaled_tied": {**SIGN_SF, **TIED_INIT},
    "signsgd_scaled_tied": {**SIGN_SF, **TIED_INIT, "schedule_free": False},
    "signsgd_sf_unscaled_tied": {**SIGN_SF, **TIED_INIT, "scale_lr_with_width": False},
    "signsgd_sf_2x_tied": {**SIGN_SF, **TIED_INIT, "lr": 1e-2},
    "signsgd_sf_half_tied": {**SIGN_SF, **TIED_INIT, "lr": 2.5e-3},
    "muon_tied": {"optimizer": "muon", "lr": 2e-3, **TIED_INIT},
    "saelens6_init": SAELENS6_INIT,
    "signsgd_sf_saelens6_init": {**SIGN_SF, **SAELENS6_INIT},
    "k_decay_tied": {**SIGN_SF, **TIED_INIT, "k_decay_steps": 40},
    "signsgd_sf_scaled_tied_unscaled_encoder": {**SIGN_SF, **TIED_INIT_UNSCALED},
    "no_clipping_tied": {**SIGN_SF, **TIED_INIT, "max_grad_norm": 0.0},
}
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "standard": {},
    "gated": {},
    "jumprelu": {},
    "topk": {"activation_fn_kwargs": {"k": K}},
}
# SAELens 6.54 at its defaults (k = 32 for topk): the sae_options of its training configs
SAELENS6_DEFAULTS: dict[str, dict[str, Any]] = {
    "standard": {},
    "gated": {},
    "jumprelu": {},
    "topk": {"k": K},
}


def run_spec(name: str) -> tuple[str, str, str]:
    """'ours/topk/recommended' -> ('ours', 'topk', 'recommended'); peers: 'sparsify/topk',
    'saelens6/standard'."""
    parts = name.split("/")
    if parts[0] == "ours" and len(parts) == 3 and parts[2] in OURS:
        return parts[0], parts[1], parts[2]
    if parts[0] in ("sparsify", "saelens6") and len(parts) == 2:
        return parts[0], parts[1], "defaults"
    raise SystemExit(
        f"unknown run {name!r}: ours/<arch>/<{'|'.join(OURS)}>, sparsify/topk, saelens6/<arch>"
    )


# ---------------------------------------------------------------- our job (subprocess)


def run_our_job(job: dict[str, Any]) -> None:
    """Train with our runner; the checkpoints come after exactly the snapshot steps."""
    from sae_lens import SAETrainingRunner
    from sae_lens.allocator import freed_memory_reused
    from sae_lens.training import sae_trainer

    steps, batch = job["snapshot_steps"], wl.BATCH_TOKENS
    sae_trainer.checkpoint_thresholds = lambda cfg: [(s - 1) * batch for s in steps]
    model = wl.load_hooked_transformer(job["model_dir"])
    dataset = wl.load_tokens(job["tokens"])
    cfg = bench.ours_runner_config(job)
    with freed_memory_reused("cpu", enabled=True):
        clock = wl.Clock()
        runner = SAETrainingRunner(cfg, override_model=model, override_dataset=dataset)
        runner.run()
        wall, cpu = clock.read()
    out = Path(job["out_dir"])
    for step in steps:
        folder = Path(cfg.checkpoint_path) / str(step * batch)
        shutil.copy(folder / "sae_weights.safetensors", out / f"weights_{step}.safetensors")
    shutil.rmtree(cfg.checkpoint_path)
    resolved = {
        k: getattr(cfg, k) for k in ("optimizer", "schedule_free", "lr", "scale_lr_with_width")
    }
    wl.write_json(
        out / "result.json", {"train_wall_s": wall, "train_cpu_s": cpu, "resolved": resolved}
    )


# ---------------------------------------------------------------- orchestration


def jobs_for(
    name: str, paths: dict[str, str], work: Path, steps: int, snapshots: list[int]
) -> list[tuple[str, Path, dict[str, Any], list[int]]]:
    """(python, script, job, steps the job's weights files cover) for one named run."""
    library, arch, option_set = run_spec(name)
    common = dict(paths, architecture=arch, step_bench_steps=0)
    out = work / "quality" / name.replace("/", "_")
    if library == "ours":
        options = {**ARCH_DEFAULTS[arch], **OURS[option_set]}
        if options.get("encoder_init_norm") == "auto":
            from sae_lens.training.recipes import tied_encoder_norm

            active = K if arch == "topk" else wl.D_SAE // 2
            options["encoder_init_norm"] = tied_encoder_norm(wl.D_IN, wl.D_SAE, active)
        job = dict(common, name=name, options=options, training_tokens=steps * wl.BATCH_TOKENS,
                   snapshot_steps=snapshots, out_dir=str(out))  # fmt: skip
        return [(sys.executable, Path(__file__), job, snapshots)]
    if library == "saelens6":
        job = dict(common, name=name, sae_options=SAELENS6_DEFAULTS[arch], runner_options={},
                   training_tokens=steps * wl.BATCH_TOKENS, snapshot_steps=snapshots,
                   out_dir=str(out))  # fmt: skip
        return [(bench.SAELENS6_PYTHON, HERE / "peers" / "saelens6_driver.py", job, snapshots)]
    if arch != "topk":
        raise SystemExit("sparsify trains topk only")
    jobs = []
    for step in snapshots:  # sparsify saves at multiples of save_every only: one run per budget
        job = dict(common, name=f"{name}@{step}", **bench.SPARSIFY_TOPK,
                   training_tokens=step * wl.BATCH_TOKENS, step_bench_steps=1,
                   out_dir=str(out / str(step)))  # fmt: skip
        jobs.append((bench.SPARSIFY_PYTHON, HERE / "peers" / "sparsify_driver.py", job, [step]))
    return jobs


def weights_file(job: dict[str, Any], step: int) -> Path:
    out = Path(job["out_dir"])
    snapshot = out / f"weights_{step}.safetensors"
    return snapshot if snapshot.is_file() else out / "weights.safetensors"


def markdown_table(report: dict[str, Any]) -> str:
    """One row per run: explained variance (and L0) at each step it was evaluated."""
    runs = report["runs"]
    steps = sorted({int(s) for r in runs.values() for s in r["steps"]})
    lines = [
        "| run | " + " | ".join(f"EV @ {s} (L0)" for s in steps) + " |",
        "|---|" + "---:|" * len(steps),
    ]
    for name, run in sorted(runs.items(), key=lambda kv: (kv[1]["architecture"], kv[0])):
        cells = []
        for step in steps:
            scores = run["steps"].get(str(step))
            cells.append(
                f"{scores['explained_variance']:.3f} ({scores['l0']:.0f})" if scores else "-"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def time_recipe(
    paths: dict[str, str], work: Path, arch: str, option_sets: list[str], rounds: int, steps: int
) -> dict[str, dict[str, list[float]]]:
    """For each option set, in alternating subprocesses (`train_throughput.py`'s jobs): the
    end-to-end tokens/s of a `steps`-step run (model forward, store, trainer, saving) and
    the best-of-15 wall ms of the trainer's step (`SAETrainer._train_step`: forward,
    backward, the configured optimizer, schedules, statistics) on the fixed batch."""
    times: dict[str, dict[str, list[float]]] = {
        name: {"tokens_per_s": [], "trainer_step_best_ms": []} for name in option_sets
    }
    for i in range(rounds):
        for name in option_sets:
            options = {**ARCH_DEFAULTS[arch], **OURS[name]}
            job = dict(paths, name=f"timing/{arch}/{name}/{i}", architecture=arch,
                       options=options, training_tokens=steps * wl.BATCH_TOKENS,
                       step_bench_steps=15,
                       out_dir=str(work / "timing" / f"{arch}_{name}_{i}"))  # fmt: skip
            result = bench.run_job(sys.executable, HERE / "train_throughput.py", job, 1800, False)
            tokens_per_s = job["training_tokens"] / result["train_wall_s"]
            times[name]["tokens_per_s"].append(tokens_per_s)
            times[name]["trainer_step_best_ms"].append(result["trainer_step"]["best_ms"])
            print(f"  {arch} {name}: {tokens_per_s:,.0f} tok/s end to end, trainer step "
                  f"{result['trainer_step']['best_ms']:.1f} ms", flush=True)  # fmt: skip
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="embedded", choices=sorted(wl.WORKLOADS))
    parser.add_argument("--runs", nargs="+", default=[], help="named runs, see run_spec")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--snapshots", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument(
        "--work", type=Path, default=None, help="default /tmp/sae_quality_<workload>"
    )
    parser.add_argument("--results", type=Path, default=bench.RESULTS_DIR)
    parser.add_argument("--report", action="store_true", help="print the results as a table")
    parser.add_argument("--timing", type=int, default=0, metavar="ROUNDS",
                        help="time training with and without the recipe instead")  # fmt: skip
    parser.add_argument("--timing-steps", type=int, default=100)
    parser.add_argument("--timing-architectures", nargs="+", default=["topk", "standard"])
    parser.add_argument("job", nargs="?", type=Path, help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.job is not None:
        run_our_job(json.loads(args.job.read_text()))
        return
    if args.timing:
        work = args.work or Path(f"/tmp/sae_quality_{args.workload}")
        paths = bench.prepare(work)
        times = {
            arch: time_recipe(
                paths, work, arch, ["5.6.0", "recommended"], args.timing, args.timing_steps
            )  # fmt: skip
            for arch in args.timing_architectures
        }
        out = args.results / f"quality_recipe_timing_{args.workload}.json"
        out.write_text(json.dumps({"steps": args.timing_steps, "load_average": os.getloadavg(),
                                   "by_architecture": times}, indent=2))  # fmt: skip
        print(json.dumps(times))
        return
    if args.report:
        path = args.results / f"quality_recipe_{args.workload}.json"
        print(markdown_table(json.loads(path.read_text())))
        return
    if max(args.snapshots) > args.steps:
        raise SystemExit("snapshots must not exceed --steps")
    work = args.work or Path(f"/tmp/sae_quality_{args.workload}")
    work.mkdir(parents=True, exist_ok=True)
    paths = bench.prepare(work)

    from safetensors.torch import load_file

    model = wl.load_hooked_transformer(paths["model_dir"])
    eval_tokens = load_file(paths["acts"])["eval_tokens"]
    eval_acts = bench._hook_acts(model, eval_tokens)
    downstream = bench.Downstream(model, eval_tokens)
    results_path = args.results / f"quality_recipe_{args.workload}.json"
    for name in args.runs:
        _, arch, _ = run_spec(name)
        entry: dict[str, Any] = {"architecture": arch, "steps": {}, "jobs": []}
        for python, script, job, steps in jobs_for(
            name, paths, work, args.steps, sorted(args.snapshots)
        ):
            print(
                f"running {job['name']} ({job['training_tokens'] // wl.BATCH_TOKENS} steps) ...",
                flush=True,
            )
            result = bench.run_job(python, script, job, 4 * 3600, False)
            entry["jobs"].append({"name": job["name"], "options": job.get("options") or job.get("sae_options"),
                                  "train_wall_s": result.get("train_wall_s"),
                    "train_cpu_s": result.get("train_cpu_s"), "load_avg": result["load_avg_before"],
                                  "resolved": result.get("resolved")})  # fmt: skip
            for step in steps:
                scores = bench.evaluate(arch, weights_file(job, step), eval_acts, downstream)
                entry["steps"][str(step)] = scores
                print(f"  step {step}: L0 {scores['l0']:.1f}, EV {scores['explained_variance']:.4f}, "
                      f"KL score {scores['kl_score']:.4f}", flush=True)  # fmt: skip
        report = json.loads(results_path.read_text()) if results_path.is_file() else {}
        report.setdefault("workload", {"name": args.workload, "model": wl.MODEL, "hook": wl.HOOK_NAME,
                                       "d_in": wl.D_IN, "d_sae": wl.D_SAE, "k": K,
                                       "batch_tokens": wl.BATCH_TOKENS})  # fmt: skip
        report.setdefault("runs", {})[name] = {**entry, "date": time.strftime("%Y-%m-%d %H:%M")}
        args.results.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
