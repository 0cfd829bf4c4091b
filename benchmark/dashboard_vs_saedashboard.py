"""Feature dashboards: this project's `sae_lens.dashboard` against SAEDashboard 0.8.0
(with SAELens 6.54.12, in its own venv) on the same model weights, SAE and tokens.

Both sides get the embedded model's weights as a TransformerLens HookedTransformer built
the same way (`peers/workload.load_hooked_transformer`: LayerNorm folded, nothing
centred), one SAE folder (random weights with unit-norm decoder rows, so SAEDashboard's
`fold_W_dec_norm` changes nothing), one token tensor from the embedded corpus, the same
latents and the same special tokens left out. The clock covers building the dashboard
from tokens to written files (ours: the pass, index.html, dashboard.json and the
Neuronpedia batches; SAEDashboard: `SaeVisRunner.run` and `save_feature_centric_vis`),
not loading the model. Each side batches as its default does (ours 8 sequences per
forward, SAEDashboard's `minibatch_size_tokens` 64; `--batch`, `--peer-batch`). The sides
run one after the other in subprocesses, alternating,
one torch thread each; the figures are the medians of the repeats, in wall time and in
CPU time of the measuring process (less disturbed by other jobs on a shared machine).

Same top examples: SAEDashboard only picks tokens at positions 6 to context-6 (its
(5, 5) context buffer), so for each sampled latent our top examples at those positions
must be the first examples of SAEDashboard's list, at the same (sequence, position), with
the same activation.

    .venv/bin/python benchmark/dashboard_vs_saedashboard.py [--peer-python PY]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
from workload import load_hooked_transformer  # noqa: E402

RESULTS = HERE / "results" / "dashboard_vs_saedashboard.json"
HOOK = "blocks.1.hook_resid_post"
BUFFER = (5, 5)  # SAEDashboard's default context buffer around a top token


def make_sae(d_in: int, d_sae: int, context: int, folder: Path) -> None:
    """A random SAE with unit-norm decoder rows and an encoder tied to them, biased so that
    each latent fires on a few percent of tokens."""
    from sae_lens.sae import SAE, SAEConfig

    cfg = SAEConfig.from_dict(
        dict(
            architecture="standard", d_in=d_in, d_sae=d_sae, activation_fn_str="relu",
            apply_b_dec_to_input=False, finetuning_scaling_factor=False, context_size=context,
            model_name="tiny-pydoc-gpt2", hook_name=HOOK, hook_layer=1, hook_head_index=None,
            prepend_bos=True, dataset_path="pydoc-corpus", dataset_trust_remote_code=False,
            normalize_activations="none", dtype="float32", device="cpu",
            sae_lens_training_version=None,
        )
    )  # fmt: skip
    sae = SAE(cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w_dec = torch.randn(d_sae, d_in, generator=generator)
        sae.W_dec.copy_(w_dec / w_dec.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.fill_(-1.0)
        sae.b_dec.zero_()
    sae.save_model(str(folder))


def prepare(work: Path, n_sequences: int, context: int, d_sae: int) -> dict[str, str]:
    from sae_lens.embedded import embedded_model_dir
    from sae_lens.sae import SAE
    from sae_lens.training.activations_store import ActivationsStore

    model_dir = str(embedded_model_dir())
    model = load_hooked_transformer(model_dir)
    make_sae(model.cfg.d_model, d_sae, context, work / "sae")
    sae = SAE.load_from_pretrained(str(work / "sae"))
    store = ActivationsStore.from_sae(model, sae, context_size=context, dataset="pydoc-corpus")
    torch.save(store.get_batch_tokens(n_sequences).cpu(), work / "tokens.pt")
    return {"model_dir": model_dir, "sae_dir": str(work / "sae"), "tokens": str(work / "tokens.pt")}


def run_ours(job: dict) -> None:
    """This project's side (in a subprocess of this script)."""
    torch.set_num_threads(job["threads"])
    from sae_lens.dashboard import DashboardSettings, build_dashboard
    from sae_lens.sae import SAE

    model = load_hooked_transformer(job["model_dir"])
    sae = SAE.load_from_pretrained(job["sae_dir"])
    tokens = torch.load(job["tokens"], weights_only=True)
    settings = DashboardSettings(
        n_tokens=tokens.numel(), n_top_examples=20, batch_size_prompts=job["batch_size_prompts"]
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    data = build_dashboard(
        sae, job["features"], settings, model=model, tokens=tokens,
        output_dir=job["out_dir"], progress=False,
    )  # fmt: skip
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    top = {
        str(latent.index): [
            [e.sequence_index, e.sequence_position, e.activation] for e in latent.top_examples
        ]
        for latent in data.latents
    }
    result = {"seconds": seconds, "cpu_seconds": cpu_seconds, "top": top}
    Path(job["result"]).write_text(json.dumps(result))


def run_side(python: str, script: Path, job: dict, work: Path, name: str) -> dict:
    job_file = work / f"{name}_job.json"
    job_file.write_text(json.dumps(job))
    args = [
        python,
        str(script),
        *(["--side-ours"] if name.startswith("ours") else []),
        str(job_file),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(Path(job["result"]).read_text())


def compare(ours: dict, peer: dict, features: list[int], context: int) -> dict:
    """Per sampled latent: ours at SAEDashboard's eligible positions against the start of
    SAEDashboard's list (same sequence, position and activation)."""
    low, high = BUFFER[0] + 1, context - BUFFER[1]
    report = {}
    for feature in features:
        mine = [e for e in ours["top"][str(feature)] if low <= e[1] < high]
        theirs = [[seq, pos, acts[BUFFER[0]]] for seq, pos, acts, _ in peer["top"][str(feature)]]
        n = min(len(mine), len(theirs))
        same_place = all(m[:2] == t[:2] for m, t in zip(mine[:n], theirs[:n], strict=True))
        max_diff = max(
            (abs(m[2] - t[2]) for m, t in zip(mine[:n], theirs[:n], strict=True)), default=0.0
        )
        report[str(feature)] = {
            "compared": n,
            "same_sequence_and_position": same_place,
            "max_activation_difference": max_diff,
            "ours_top_activation": ours["top"][str(feature)][0][2]
            if ours["top"][str(feature)]
            else None,
            "saedashboard_top_activation": theirs[0][2] if theirs else None,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-python", default="/work/saedash-venv/bin/python")
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--features", type=int, default=64, help="latents 0..N-1")
    parser.add_argument("--sampled", type=int, default=8, help="latents compared")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8, help="ours: sequences per forward")
    parser.add_argument(
        "--peer-batch", type=int, default=64, help="SAEDashboard's minibatch_size_tokens"
    )
    parser.add_argument("--out", default=str(RESULTS), help="results JSON file")
    parser.add_argument("--side-ours", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.side_ours:
        run_ours(json.loads(Path(rest[0]).read_text()))
        return
    features = list(range(args.features))
    load_before = os.getloadavg()  # 2 shared cores: other jobs' load shows in wall time
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        work = Path(tmp)
        inputs = prepare(work, args.sequences, args.context, args.d_sae)
        times: dict[str, list[float]] = {"ours": [], "saedashboard": []}
        cpu: dict[str, list[float]] = {"ours": [], "saedashboard": []}
        results: dict[str, dict] = {}
        for repeat in range(args.repeats):
            for side in ("saedashboard", "ours") if repeat % 2 else ("ours", "saedashboard"):
                job = {
                    **inputs, "features": features, "threads": args.threads,
                    "batch_size_prompts": args.peer_batch if side == "saedashboard" else args.batch,
                    "result": str(work / f"{side}_{repeat}.json"),
                    "out_dir": str(work / f"ours_{repeat}"),
                    "out_html": str(work / f"saedashboard_{repeat}.html"),
                }  # fmt: skip
                if side == "ours":
                    result = run_side(sys.executable, Path(__file__), job, work, f"ours_{repeat}")
                else:
                    driver = HERE / "dashboard_saedashboard_driver.py"
                    result = run_side(args.peer_python, driver, job, work, f"peer_{repeat}")
                times[side].append(result["seconds"])
                cpu[side].append(result["cpu_seconds"])
                results[side] = result
                print(
                    f"repeat {repeat} {side}: {result['seconds']:.2f} s wall, "
                    f"{result['cpu_seconds']:.2f} s CPU",
                    flush=True,
                )
        sampled = sorted(random.Random(0).sample(features, min(args.sampled, len(features))))
        agreement = compare(results["ours"], results["saedashboard"], sampled, args.context)
    ours_s, peer_s = statistics.median(times["ours"]), statistics.median(times["saedashboard"])
    ours_cpu, peer_cpu = statistics.median(cpu["ours"]), statistics.median(cpu["saedashboard"])
    summary = {
        "workload": {
            "model": "embedded tiny-pydoc-gpt2 weights (2 layers, d_model 128) as HookedTransformer",
            "hook": HOOK, "d_sae": args.d_sae, "latents": args.features,
            "sequences": args.sequences, "context": args.context,
            "tokens": args.sequences * args.context, "threads": args.threads,
            "sequences_per_forward": {"ours": args.batch, "saedashboard": args.peer_batch},
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "cores": os.cpu_count(), "load_average_1_5_15_min_before": load_before,
            "load_average_1_5_15_min_after": os.getloadavg(),
        },
        "wall_seconds": times,
        "cpu_seconds": cpu,
        "median_wall_seconds": {"ours": ours_s, "saedashboard": peer_s},
        "median_cpu_seconds": {"ours": ours_cpu, "saedashboard": peer_cpu},
        "speedup_wall": peer_s / ours_s,
        "speedup_cpu": peer_cpu / ours_cpu,
        "top_examples": agreement,
        "all_sampled_agree": all(
            a["same_sequence_and_position"] and a["max_activation_difference"] < 1e-3
            for a in agreement.values()
        ),
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    shown = ("median_wall_seconds", "speedup_wall", "speedup_cpu", "all_sampled_agree")
    print(json.dumps({k: summary[k] for k in shown}))


if __name__ == "__main__":
    main()
