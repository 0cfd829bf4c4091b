"""Data-parallel throughput (issue 23): tokens/s of one training run in 2 processes x 1 torch
thread (torchrun, gloo) against 1 process x 1 thread, same workload and tokens.

The workload: a GPT-2-shaped HookedTransformer with random weights (seed fixed, built the
same in every process: d_model 256, 4 layers, context 128), a pretokenized dataset of
random tokens, a TopK SAE (k 32, 4,096 latents) on `blocks.3.hook_resid_post`, batches of
4,096 tokens. The clock covers `SAETrainingRunner.run()` on rank 0 (buffer fills, training,
the final save), not process start-up, model construction or a 2-step warm-up run before it
(numba's kernels compile or load from their cache there). Sides alternate; each side's
figure is the median of its repeats.

    .venv/bin/python benchmark/data_parallel.py --repeats 3

Run on a machine with no other job: the 2-process side needs both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "data_parallel.json"


def build_model() -> Any:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=4, d_model=256, n_heads=4, d_head=64, d_mlp=1024, n_ctx=128,
        d_vocab=4096, act_fn="gelu", normalization_type="LN",
    )  # fmt: skip
    return HookedTransformer(cfg)


def build_dataset(n_rows: int) -> Any:
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 4096, (n_rows, 128), generator=generator)
    return Dataset.from_dict({"tokens": tokens.tolist()})


def worker(args: argparse.Namespace) -> None:
    """One process of a run (alone, or one rank under torchrun): a 2-step warm-up run (numba
    kernels compiled or loaded from their cache, allocator warm), then the timed run."""
    import torch

    torch.set_num_threads(1)
    train(4096 * 2, str(Path(args.out) / "warm-up"))
    seconds = train(args.tokens, str(Path(args.out) / "run"))
    if os.environ.get("RANK", "0") == "0":
        Path(args.out, "seconds.json").write_text(json.dumps({"seconds": seconds}))


def train(tokens: int, out: str) -> float:
    """Seconds of `SAETrainingRunner.run()` on the workload, `tokens` training tokens."""
    from sae_lens import LanguageModelSAERunnerConfig, SAETrainingRunner

    cfg = LanguageModelSAERunnerConfig(
        model_name="random-gpt2-d256",
        hook_name="blocks.3.hook_resid_post",
        hook_layer=3,
        d_in=256,
        d_sae=4096,
        architecture="topk",
        activation_fn_kwargs={"k": 32},
        context_size=128,
        is_dataset_tokenized=True,
        streaming=False,
        training_tokens=tokens,
        train_batch_size_tokens=4096,
        store_batch_size_prompts=16,
        n_batches_in_buffer=8,
        b_dec_init_method="zeros",
        log_to_wandb=False,
        verbose=False,
        checkpoint_path=out,
        n_checkpoints=0,
        device="cpu",
    )
    dataset = build_dataset(tokens // 128 + 512)
    runner = SAETrainingRunner(cfg, override_dataset=dataset, override_model=build_model())
    runner.distributed.barrier()
    started = time.perf_counter()
    runner.run()
    return time.perf_counter() - started


def measure(processes: int, tokens: int) -> float:
    """Tokens per second of one run in `processes` processes of 1 thread each."""
    with tempfile.TemporaryDirectory() as out:
        script = [__file__, "--worker", "--tokens", str(tokens), "--out", out]
        if processes == 1:
            command = [sys.executable, *script]
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command = [*launcher, "--nproc_per_node", str(processes), *script]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        seconds = json.loads(Path(out, "seconds.json").read_text())["seconds"]
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=4096 * 60)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs: dict[str, list[float]] = {"1x1": [], "2x1": []}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        for side, processes in (("1x1", 1), ("2x1", 2)):
            runs[side].append(measure(processes, args.tokens))
            print(f"repeat {repeat}: {side} {runs[side][-1]:,.0f} tok/s", flush=True)
    one, two = statistics.median(runs["1x1"]), statistics.median(runs["2x1"])
    result = {
        "workload": "random GPT-2 d_model 256, 4 layers, ctx 128; TopK k 32, d_sae 4096, "
        "batch 4096, blocks.3.hook_resid_post",
        "tokens": args.tokens,
        "tokens_per_s": runs,
        "median_1x1": one,
        "median_2x1": two,
        "speedup": two / one,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg()[0],
        "cpu": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"2 processes x 1 thread: {two / one:.2f}x one process x 1 thread -> {RESULTS}")


if __name__ == "__main__":
    main()
