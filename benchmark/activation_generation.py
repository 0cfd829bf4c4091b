"""Activation generation throughput: our ActivationsStore vs SAELens 6.54.12's, on CPU.

Both sides load the same model weights (config + state_dict written to a temp folder) and
read the same tokens (a dataset saved to disk), each in its own subprocess and venv, run one
after the other, never in parallel. A run builds the store and serves `n_batches` training
batches through `next_batch()`; the clock covers store construction and every buffer
refill; throughput is reported per wall second and per CPU second of the process (the
ratio uses CPU time, which other jobs on a shared machine disturb far less), median over
alternating repeats. Memory is the peak resident set size (RSS, sampled every 5 ms from /proc) during
the run minus the RSS before the store was built, so model weights are not counted.
Each run uses `--threads` torch CPU threads (default 1: on a small shared machine more
threads mostly measure contention).

    .venv/bin/python benchmark/activation_generation.py [--peer-python /work/peer-venv/bin/python]

Writes benchmark/results/activation_generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "activation_generation.json"

GPT2_SMALL = dict(
    n_layers=12,
    d_model=768,
    d_head=64,
    n_heads=12,
    d_mlp=3072,
    n_ctx=1024,
    d_vocab=50257,
    act_fn="gelu_new",
    normalization_type="LN",
    seed=0,
)
WORKLOADS: dict[str, dict[str, Any]] = {
    "embedded/pretokenized/blocks.0.hook_mlp_out": dict(
        model="embedded",
        data="tokens",
        hook="blocks.0.hook_mlp_out",
        layer=0,
        d_in=128,
        context=128,
        prompts=32,
        train_batch=4096,
        n_batches=40,
        buffer_tokens=32768,
    ),
    "embedded/text-on-the-fly/blocks.0.hook_mlp_out": dict(
        model="embedded",
        data="text",
        hook="blocks.0.hook_mlp_out",
        layer=0,
        d_in=128,
        context=128,
        prompts=32,
        train_batch=4096,
        n_batches=40,
        buffer_tokens=32768,
    ),
    "embedded/pretokenized/blocks.1.hook_resid_pre": dict(
        model="embedded",
        data="tokens",
        hook="blocks.1.hook_resid_pre",
        layer=1,
        d_in=128,
        context=128,
        prompts=32,
        train_batch=4096,
        n_batches=40,
        buffer_tokens=32768,
    ),
    "gpt2-small-shaped/pretokenized/blocks.5.hook_resid_post": dict(
        model="gpt2",
        data="tokens",
        hook="blocks.5.hook_resid_post",
        layer=5,
        d_in=768,
        context=128,
        prompts=8,
        train_batch=1024,
        n_batches=12,
        buffer_tokens=4096,
    ),
    "gpt2-small-shaped/pretokenized/blocks.5.hook_resid_pre": dict(
        model="gpt2",
        data="tokens",
        hook="blocks.5.hook_resid_pre",
        layer=5,
        d_in=768,
        context=128,
        prompts=8,
        train_batch=1024,
        n_batches=12,
        buffer_tokens=4096,
    ),
}


# ---------------------------------------------------------------- shared inputs (our venv)


def prepare(work: Path) -> None:
    """Write both models (config + weights + tokenizer) and both datasets to `work`."""
    from datasets import Dataset
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae_lens.embedded import load_embedded_dataset, load_embedded_tokenizer
    from sae_lens.load_model import load_model

    tokenizer = load_embedded_tokenizer()
    tokenizer.save_pretrained(str(work / "tokenizer"))
    embedded = load_model("HookedTransformer", "tiny-pydoc-gpt2", device="cpu")
    embedded_cfg = {k: v for k, v in embedded.cfg.to_dict().items() if k in _CONFIG_KEYS}
    _save_model(work / "embedded", embedded_cfg, embedded.state_dict())
    gpt2 = HookedTransformer(HookedTransformerConfig(**GPT2_SMALL, device="cpu"))
    _save_model(work / "gpt2", GPT2_SMALL, gpt2.state_dict())

    texts = [row["text"] for row in load_embedded_dataset(split="train", streaming=False)]
    Dataset.from_dict({"text": texts}).save_to_disk(str(work / "data_embedded_text"))
    token_rows = []
    for text in texts:
        token_rows.extend(tokenizer(text)["input_ids"])
        if len(token_rows) > 2_000_000:
            break
    flat = torch.tensor(token_rows[: (len(token_rows) // 128) * 128])
    Dataset.from_dict({"tokens": flat.view(-1, 128).tolist()}).save_to_disk(
        str(work / "data_embedded_tokens")
    )
    gen = torch.Generator().manual_seed(0)
    gpt2_rows = torch.randint(0, GPT2_SMALL["d_vocab"], (400, 128), generator=gen)
    Dataset.from_dict({"tokens": gpt2_rows.tolist()}).save_to_disk(str(work / "data_gpt2_tokens"))


_CONFIG_KEYS = (
    "n_layers",
    "d_model",
    "d_head",
    "n_heads",
    "d_mlp",
    "n_ctx",
    "d_vocab",
    "act_fn",
    "normalization_type",
    "eps",
    "positional_embedding_type",
    "original_architecture",
)


def _save_model(folder: Path, cfg: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save(state_dict, folder / "weights.pt")


# ---------------------------------------------------------------- one measured run (either venv)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the process RSS in a thread; `peak` is the highest value seen."""

    def __enter__(self) -> PeakRss:
        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def measure(side: str, work: Path, name: str) -> dict[str, Any]:
    from datasets import Dataset
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    from sae_lens.training.activations_store import ActivationsStore

    spec = WORKLOADS[name]
    folder = work / spec["model"]
    model = HookedTransformer(
        HookedTransformerConfig(**json.loads((folder / "config.json").read_text()), device="cpu")
    )
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    model.set_tokenizer(AutoTokenizer.from_pretrained(str(work / "tokenizer")))
    model.eval()
    dataset = Dataset.load_from_disk(str(work / f"data_{spec['model']}_{spec['data']}"))
    common = dict(
        model=model,
        dataset=dataset,
        streaming=False,
        hook_name=spec["hook"],
        hook_head_index=None,
        context_size=spec["context"],
        d_in=spec["d_in"],
        total_training_tokens=10**9,
        store_batch_size_prompts=spec["prompts"],
        train_batch_size_tokens=spec["train_batch"],
        prepend_bos=True,
        normalize_activations="none",
        device=torch.device("cpu"),
        dtype="float32",
    )
    if side == "ours":
        # our buffer: buffer_tokens in two halves of n_batches_in_buffer // 2 model batches
        n_batches = spec["buffer_tokens"] // (spec["prompts"] * spec["context"])
        extra = dict(hook_layer=spec["layer"], n_batches_in_buffer=n_batches)
    else:
        # SAELens 6.x: buffer of n_batches_in_buffer * context tokens, half kept for mixing
        extra = dict(n_batches_in_buffer=spec["buffer_tokens"] // spec["context"])
    baseline = _rss_bytes()
    with PeakRss() as rss:
        start, cpu_start = time.perf_counter(), time.process_time()
        store = ActivationsStore(**common, **extra)
        for _ in range(spec["n_batches"]):
            batch = store.next_batch()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert batch.shape[0] == spec["train_batch"] and batch.shape[-1] == spec["d_in"]
    tokens = spec["n_batches"] * spec["train_batch"]
    return {
        "tokens": tokens,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "tokens_per_s": tokens / elapsed,
        "tokens_per_cpu_s": tokens / cpu,
        "peak_rss_increase_mb": (rss.peak - baseline) / 2**20,
    }


# ---------------------------------------------------------------- driver


# glibc settings that keep freed memory in the heap instead of unmapping it, so the model's
# large temporary tensors do not page-fault afresh on every forward pass
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**34)}


def run_side(
    python: str, side: str, work: Path, name: str, threads: int, tuned_malloc: bool
) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if tuned_malloc:
        env.update(TUNED_MALLOC)
    out = subprocess.run(
        [python, __file__, "--measure", side, "--work", str(work), "--workload", name],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("tokens_per_s", "tokens_per_cpu_s", "peak_rss_increase_mb")
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each run")
    parser.add_argument("--measure", choices=["ours", "peer"])
    parser.add_argument("--work")
    parser.add_argument("--workload", choices=sorted(WORKLOADS))
    parser.add_argument("--only", default="", help="run the workloads whose name contains this")
    parser.add_argument(
        "--tuned-malloc",
        action="store_true",
        help=f"run both sides with {TUNED_MALLOC} (results in their own section)",
    )
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, Path(args.work), args.workload)))
        return

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work)
        for name in [w for w in WORKLOADS if args.only in w]:
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "peer": []}
            for _ in range(args.repeats):  # alternate the sides to share any machine noise
                for side, python in (("ours", sys.executable), ("peer", args.peer_python)):
                    runs[side].append(
                        run_side(python, side, work, name, args.threads, args.tuned_malloc)
                    )
            summary = {side: _summary(r) for side, r in runs.items()}
            results[name] = {
                "ours": summary["ours"],
                "sae_lens_6.54.12": summary["peer"],
                "speedup_cpu_time": summary["ours"]["tokens_per_cpu_s"]
                / summary["peer"]["tokens_per_cpu_s"],
                "speedup_wall_time": summary["ours"]["tokens_per_s"]
                / summary["peer"]["tokens_per_s"],
                "all_runs": runs,
            }
            print(
                f"{name}: ours {summary['ours']['tokens_per_cpu_s']:.0f} tok/cpu-s, "
                f"SAELens 6.54.12 {summary['peer']['tokens_per_cpu_s']:.0f} tok/cpu-s, "
                f"x{results[name]['speedup_cpu_time']:.2f} (wall x{results[name]['speedup_wall_time']:.2f})",
                flush=True,
            )
    RESULTS.parent.mkdir(exist_ok=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved["machine"] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    section = saved.setdefault("tuned_malloc" if args.tuned_malloc else "default_malloc", {})
    section["method"] = (
        f"median of {args.repeats} alternating runs per side, {args.threads} torch thread(s) each"
        + (f", env {TUNED_MALLOC}" if args.tuned_malloc else "")
        + "; clock covers store construction and all refills; speedup_cpu_time compares "
        "tokens per CPU second of the process; memory = peak RSS (sampled every 5 ms) minus "
        "RSS before the store was built"
    )
    workloads = section.setdefault("workloads", {})
    workloads.update({k: {**v, "spec": WORKLOADS[k]} for k, v in results.items()})
    RESULTS.write_text(json.dumps(saved, indent=2))


if __name__ == "__main__":
    main()
