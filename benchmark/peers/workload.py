"""The training benchmark's shared workload and measuring helpers.

Imported by the orchestrator (`benchmark/train_throughput.py`, this project's venv) and by
the peer drivers in this folder, each running in its own venv (SAELens 6.54.12 in
/work/peer-venv, EleutherAI sparsify 1.3.3 in /work/peer-loaders-venv). It therefore
imports no `sae_lens`, and transformer_lens only inside `load_hooked_transformer`.

The model is a GPT-2 with random weights (seed fixed) saved once as a Hugging Face folder:
sparsify reads it with transformers, this project and SAELens as a TransformerLens
`HookedTransformer` converted from the same weights (LayerNorm weights folded into the
next layer, nothing centred, so the hooked residual stream is the Hugging Face block
output).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# ---------------------------------------------------------------- the workload

# Two shapes, chosen with the environment variable SAE_BENCH_WORKLOAD (inherited by the
# drivers' subprocesses): "embedded" (the default), d_model 128 as the embedded model, 4
# layers, hooked after block 1 (d_model 128 rather than 256 so that 9 training runs of 100
# steps fit in ~20 minutes on the shared 2-core CPU); "d256", issue 17's quality workload,
# 2 layers of d_model 256 hooked after block 0, SAEs of 4,096 latents.
WORKLOADS = {
    "embedded": dict(
        model=dict(n_embd=128, n_layer=4, n_head=4, n_inner=512, n_positions=256, vocab_size=4096),
        hook_layer=1,  # the middle of 4 blocks
    ),
    "d256": dict(
        model=dict(n_embd=256, n_layer=2, n_head=4, n_inner=1024, n_positions=256, vocab_size=4096),
        hook_layer=0,
    ),
}
WORKLOAD = os.environ.get("SAE_BENCH_WORKLOAD", "embedded")
MODEL: dict[str, int] = WORKLOADS[WORKLOAD]["model"]  # type: ignore[assignment]
MODEL_SEED = 0
HOOK_LAYER: int = WORKLOADS[WORKLOAD]["hook_layer"]  # type: ignore[assignment]
HOOK_NAME = f"blocks.{HOOK_LAYER}.hook_resid_post"  # TransformerLens
HF_HOOKPOINT = f"h.{HOOK_LAYER}"  # sparsify: the same block's output in GPT2Model
D_IN = MODEL["n_embd"]
D_SAE = 16 * D_IN
CONTEXT = MODEL["n_positions"]
BATCH_TOKENS = 4096  # one SAE training batch
PROMPTS_PER_BATCH = BATCH_TOKENS // CONTEXT  # model batch for activation generation
BUFFER_BATCHES = 8  # shuffle buffer of the SAE Lens activation stores: 8 model batches
BUFFER_TOKENS = BUFFER_BATCHES * BATCH_TOKENS
SAE_SEED = 42
STEP_BENCH_WARMUP = 2


def load_hf_model(model_dir: str | Path) -> Any:
    """The benchmark model as a transformers GPT2LMHeadModel (eval mode, fp32)."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(str(model_dir))
    return model.eval()


def load_hooked_transformer(model_dir: str | Path) -> Any:
    """The benchmark model as a TransformerLens HookedTransformer with the same weights
    (LayerNorm folded, nothing centred), tokenizer from the folder."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import AutoTokenizer

    hf_model = load_hf_model(model_dir)
    hf = hf_model.config
    cfg = HookedTransformerConfig(
        d_model=hf.n_embd,
        d_head=hf.n_embd // hf.n_head,
        n_heads=hf.n_head,
        d_mlp=hf.n_inner,
        n_layers=hf.n_layer,
        n_ctx=hf.n_positions,
        eps=hf.layer_norm_epsilon,
        d_vocab=hf.vocab_size,
        act_fn=hf.activation_function,
        normalization_type="LN",
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        default_prepend_bos=True,
        seed=MODEL_SEED,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    state_dict = convert_gpt2_weights(hf_model, cfg)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=True,  # leaves the residual stream as it is (LayerNorm weights move on)
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.eval()


def load_tokens(path: str | Path) -> Any:
    """A token dataset written by the orchestrator: rows of CONTEXT token ids in an
    `input_ids` column (the column name every library here reads)."""
    from datasets import load_from_disk

    return load_from_disk(str(path))


# ---------------------------------------------------------------- measuring


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB: VmHWM of /proc/self/status.
    (getrusage's ru_maxrss would count the parent's RSS too: a subprocess is started with
    vfork, and Linux records the memory it had before exec.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM line in /proc/self/status (Linux only)")


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Clock:
    """Wall and process CPU seconds since construction."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def matmul_floor(architecture: str) -> Callable[[], None]:
    """The dense matmuls one training step of `architecture` cannot avoid, on operands of
    the step's shapes and layouts, outputs preallocated: six for standard and jumprelu
    (encoder and decoder, each forward, input-gradient and weight-gradient), nine for
    gated (one shared encoder matmul, two decoder passes), one for topk and the batchtopk
    family (the encoder's forward; everything else touches only the kept latents)."""
    n, d, m = BATCH_TOKENS, D_IN, D_SAE
    g = torch.Generator().manual_seed(0)
    x, grad_out = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    acts, grad_pre = torch.randn(n, m, generator=g), torch.randn(n, m, generator=g)
    W_enc, W_dec = torch.randn(d, m, generator=g), torch.randn(m, d, generator=g)
    encoder = [(x, W_enc), (x.t(), grad_pre), (grad_pre, W_enc.t())]
    decoder = [(acts, W_dec), (grad_out, W_dec.t()), (acts.t(), grad_out)]
    pairs = {
        "standard": encoder + decoder,
        "jumprelu": encoder + decoder,
        "gated": encoder + decoder + decoder,
        "topk": encoder[:1],
        "batchtopk": encoder[:1],  # the sparse step of TopK, another selection
        "matryoshka_batchtopk": encoder[:1],
    }[architecture]
    outs = [torch.empty(a.shape[0], b.shape[1]) for a, b in pairs]

    def run() -> None:
        for (a, b), out in zip(pairs, outs, strict=True):
            torch.mm(a, b, out=out)

    return run


def time_steps(
    step: Callable[[], None], n_steps: int, floor: Callable[[], None] | None = None
) -> dict[str, float]:
    """Run `step` STEP_BENCH_WARMUP times untimed, then `n_steps` times: best and median
    wall milliseconds, and mean process-CPU milliseconds, per step. With `floor` (see
    `matmul_floor`), each timed step is followed by one timed run of it, so that both see
    the same machine load: its best time and the ratio of the best times come back too."""
    for _ in range(STEP_BENCH_WARMUP):
        step()
    walls, cpus, floors = [], [], []
    for _ in range(n_steps):
        clock = Clock()
        step()
        wall, cpu = clock.read()
        walls.append(wall * 1e3)
        cpus.append(cpu * 1e3)
        if floor is not None:
            clock = Clock()
            floor()
            floors.append(clock.read()[0] * 1e3)
    walls.sort()
    result = {
        "best_ms": walls[0],
        "median_ms": walls[len(walls) // 2],
        "cpu_ms": sum(cpus) / len(cpus),
    }
    if floors:
        result["matmul_floor_ms"] = min(floors)
        result["over_matmul_floor"] = walls[0] / min(floors)
    return result


def fixed_activation_batch(acts_path: str | Path) -> torch.Tensor:
    """The [BATCH_TOKENS, D_IN] activation batch every library's step benchmark trains on."""
    from safetensors.torch import load_file

    return load_file(str(acts_path))["step_batch"]


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2))
