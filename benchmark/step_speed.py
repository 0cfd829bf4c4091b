"""The SAE training step alone, this project against EleutherAI sparsify 1.3.3 and the
matmul floor, interleaved in one process (issue 18).

    .venv/bin/python benchmark/step_speed.py [--shapes embedded d256] [--rounds 15]

Every architecture runs with SAELens 5.6.0's default training config (decoder rows
renormalised after every step and their gradient projected before it, plain Adam,
gradient clipping at norm 1, as 5.6.0's trainer does) on a fixed [4096, d_in] batch of
Gaussian activations, for two shapes: `embedded` (d_in 128, d_sae 2,048) and `d256`
(d_in 256, d_sae 4,096); TopK with k = 32. sparsify's sparse coder (k = 32, the same
shapes) is imported from its own venv (/work/peer-loaders-venv, torch 2.13.0 as here) into
this process and runs what one of its training steps does: unit-norm decoder, forward,
backward, gradient projection, optimiser (signum, its default, and torch Adam).

Each round runs every job once, one after the other, then the matmul floors (the dense
matmuls each step cannot avoid, outputs preallocated: 1 for TopK, 6 for standard and
JumpReLU, 9 for gated), so machine load hits every job alike; each job's figure is its
best round (wall time; the process CPU time, less disturbed by other jobs on a shared
machine, is reported beside it). This library's jobs (and the floors) run with freed memory blocks kept for reuse
(`sae_lens.allocator`, which its training runner turns on), sparsify's with glibc's defaults
as it ships, and once more with freed blocks kept (`sparsify-signum+reuse`): the allocator
is switched between jobs, outside the clock. Prints a table and writes benchmark/results/step_speed.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
SPARSIFY_SITE = glob.glob("/work/peer-loaders-venv/lib/python3*/site-packages")
SHAPES = {"embedded": (128, 2048), "d256": (256, 4096)}
# "standard@L0=32": the standard SAE with its encoder bias set so that 32 latents per
# token fire on average, as in a trained SAE (its step takes the sparse path)
ARCHITECTURES = ("topk", "standard", "standard@L0=32", "gated", "jumprelu")
BATCH = 4096
K = 32


def our_step(job_arch: str, d_in: int, d_sae: int) -> Callable[[], None]:
    """One 5.6.0-default training step of this library's TrainingSAE (as its trainer runs
    it, without the firing statistics and schedules)."""
    architecture, _, l0 = job_arch.partition("@L0=")
    from sae_lens import LanguageModelSAERunnerConfig
    from sae_lens.training.optim import make_adam
    from sae_lens.training.training_sae import TrainingSAE, TrainingSAEConfig

    topk = dict(activation_fn="topk", activation_fn_kwargs={"k": K})
    cfg = LanguageModelSAERunnerConfig(
        architecture=architecture,
        d_in=d_in,
        d_sae=d_sae,
        log_to_wandb=False,
        device="cpu",
        **(topk if architecture == "topk" else {}),
    )  # 5.6.0's defaults otherwise
    torch.manual_seed(42)
    sae = TrainingSAE(TrainingSAEConfig.from_sae_runner_config(cfg))
    optimizer = make_adam(sae, cfg.lr, (cfg.adam_beta1, cfg.adam_beta2))
    batch = torch.randn(BATCH, d_in, generator=torch.Generator().manual_seed(0))
    if l0:  # one bias for all latents, so that int(l0) of them fire per token on average
        with torch.no_grad():
            pre = sae.process_sae_in(batch) @ sae.W_enc
            cut = pre.flatten().kthvalue(pre.numel() - int(l0) * BATCH).values
            sae.b_enc.fill_(-float(cut))
    no_dead = torch.zeros(d_sae, dtype=torch.bool)

    def step() -> None:
        output = sae.training_forward_pass(batch, cfg.l1_coefficient, no_dead)
        output.loss.backward()
        sae.before_optimizer_step()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        sae.after_optimizer_step()
        optimizer.zero_grad()

    return step


def sparsify_step(d_in: int, d_sae: int, optimizer_name: str) -> Callable[[], None]:
    """One sparsify training step of its sparse coder (as benchmark/peers/sparsify_driver.py
    times it, with a fresh coder)."""
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    torch.manual_seed(42)
    coder = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=K), device="cpu")
    params = list(coder.parameters())
    optimizer: torch.optim.Optimizer = (
        SignSGD(params, lr=1e-3) if optimizer_name == "signum" else torch.optim.Adam(params)
    )
    batch = torch.randn(BATCH, d_in, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        coder.set_decoder_norm_to_unit_norm()
        out = coder(batch)
        (out.fvu + out.auxk_loss + out.multi_topk_fvu / 8).backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad()

    return step


def matmul_floor(architecture: str, d_in: int, d_sae: int) -> Callable[[], None]:
    """The dense matmuls of one step, on operands of the step's shapes and layouts."""
    g = torch.Generator().manual_seed(0)
    x, grad_out = torch.randn(BATCH, d_in, generator=g), torch.randn(BATCH, d_in, generator=g)
    acts = torch.randn(BATCH, d_sae, generator=g)
    grad_pre = torch.randn(BATCH, d_sae, generator=g)
    W_enc, W_dec = torch.randn(d_in, d_sae, generator=g), torch.randn(d_sae, d_in, generator=g)
    encoder = [(x, W_enc), (x.t(), grad_pre), (grad_pre, W_enc.t())]
    decoder = [(acts, W_dec), (grad_out, W_dec.t()), (acts.t(), grad_out)]
    pairs = {
        "topk": encoder[:1],
        "standard": encoder + decoder,
        "jumprelu": encoder + decoder,
        "gated": encoder + decoder + decoder,
    }[architecture]
    outs = [torch.empty(a.shape[0], b.shape[1]) for a, b in pairs]

    def run() -> None:
        for (a, b), out in zip(pairs, outs, strict=True):
            torch.mm(a, b, out=out)

    return run


def jobs_for(shape: str, architectures: list[str], peers: bool) -> dict[str, Callable[[], None]]:
    d_in, d_sae = SHAPES[shape]
    jobs: dict[str, Callable[[], None]] = {}
    for arch in architectures:
        jobs[f"{shape}/ours/{arch}"] = our_step(arch, d_in, d_sae)
    for base in dict.fromkeys(arch.partition("@")[0] for arch in architectures):
        jobs[f"{shape}/floor/{base}"] = matmul_floor(base, d_in, d_sae)
    if peers and "topk" in architectures:
        for name in ("signum", "adam"):
            jobs[f"{shape}/sparsify-{name}/topk"] = sparsify_step(d_in, d_sae, name)
        jobs[f"{shape}/sparsify-signum+reuse/topk"] = sparsify_step(d_in, d_sae, "signum")
    return jobs


def keeps_freed_memory(name: str) -> bool:
    """Whether job `name` runs with freed blocks kept for reuse: this library (its runner
    sets it) and the peer's `+reuse` variant; the peer as it ships otherwise."""
    library = name.split("/")[1]
    return library in ("ours", "floor") or library.endswith("+reuse")


def use_allocator(keep_freed: bool, enabled: bool) -> None:
    from sae_lens.allocator import restore_malloc_defaults, reuse_freed_memory

    if enabled and keep_freed:
        reuse_freed_memory()
    else:
        restore_malloc_defaults()


def time_interleaved(
    jobs: dict[str, Callable[[], None]], rounds: int, reuse: bool
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU milliseconds of each job's rounds."""
    for name, job in jobs.items():  # warm-up (numba compiles, allocator settles)
        use_allocator(keeps_freed_memory(name), reuse)
        job()
        job()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    cpu: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            use_allocator(keeps_freed_memory(name), reuse)
            start, start_cpu = time.perf_counter(), time.process_time()
            job()
            times[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return times, cpu


def report(times: dict[str, list[float]], cpu: dict[str, list[float]]) -> list[dict[str, Any]]:
    best = {name: min(t) for name, t in times.items()}
    best_cpu = {name: min(t) for name, t in cpu.items()}
    rows = []
    for name, ms in best.items():
        shape, library, arch = name.split("/")
        if library == "floor":
            continue
        row: dict[str, Any] = dict(
            shape=shape, library=library, arch=arch, best_ms=ms, tok_per_s=BATCH / ms * 1e3
        )
        floor = f"{shape}/floor/{arch.partition('@')[0]}"
        row["median_ms"] = sorted(times[name])[len(times[name]) // 2]
        row["over_floor"] = ms / best[floor]
        row["floor_ms"] = best[floor]
        row["best_cpu_ms"] = best_cpu[name]  # process CPU time, both threads
        row["cpu_over_floor"] = best_cpu[name] / best_cpu[floor]
        ours = best.get(f"{shape}/ours/{arch}")
        if library != "ours" and ours is not None:
            row["ours_speedup"] = ms / ours
            row["ours_speedup_cpu"] = best_cpu[name] / best_cpu[f"{shape}/ours/{arch}"]
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The figures as a markdown table: one line per shape and job."""
    lines = [
        "| shape | library | arch | best ms | tok/s | / matmul floor (floor ms) | ours faster by "
        "| CPU ms | CPU / floor's | ours faster by (CPU) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = f"{r['ours_speedup']:.2f}x" if "ours_speedup" in r else "-"
        speedup_cpu = f"{r['ours_speedup_cpu']:.2f}x" if "ours_speedup_cpu" in r else "-"
        lines.append(
            f"| {r['shape']} | {r['library']} | {r['arch']} | {r['best_ms']:.1f} | "
            f"{r['tok_per_s']:,.0f} | {r['over_floor']:.2f} ({r['floor_ms']:.1f}) | {speedup} "
            f"| {r['best_cpu_ms']:.1f} | {r['cpu_over_floor']:.2f} | {speedup_cpu} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="glibc's allocator settings for every job (default: this library keeps freed "
        "blocks, as its runner does; the peer as it ships, and once with them kept)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip sparsify")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "step_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peers = not args.no_peers and bool(SPARSIFY_SITE)
    if peers:
        sys.path.append(SPARSIFY_SITE[0])  # after ours: torch etc. stay this venv's
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for shape in args.shapes:
        jobs = jobs_for(shape, args.architectures, peers)
        times, cpu = time_interleaved(jobs, args.rounds, reuse=not args.glibc_defaults)
        rows += report(times, cpu)
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}, {args.threads} threads")
    print(f"{'shape':9} {'library':15} {'arch':9} {'best ms':>8} {'tok/s':>8} "
          f"{'/floor':>7} {'ours x':>7}")  # fmt: skip
    for r in rows:
        speedup = f"{r['ours_speedup']:.2f}" if "ours_speedup" in r else "-"
        print(f"{r['shape']:9} {r['library']:15} {r['arch']:9} {r['best_ms']:8.1f} "
              f"{r['tok_per_s']:8.0f} {r['over_floor']:7.2f} {speedup:>7}")  # fmt: skip
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".md").write_text(markdown(rows))
    args.results.write_text(
        json.dumps(
            dict(
                rows=rows,
                load_avg=[load_before[0], load_after[0]],
                threads=args.threads,
                torch=torch.__version__,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
