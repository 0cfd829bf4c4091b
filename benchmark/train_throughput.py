"""SAE training speed and quality: this project against SAELens 6.54.12 and EleutherAI
sparsify 1.3.3, on CPU, in one run so that the ratios are fair.

    .venv/bin/python benchmark/train_throughput.py [--tokens N] [--work DIR]

The workload (benchmark/peers/workload.py): a GPT-2 with random weights (seed 0; d_model
128, 4 layers, 4 heads, d_mlp 512, n_ctx 256, vocab 4096), SAEs on
`blocks.1.hook_resid_post` (d_in 128, d_sae 2048 = 16 x d_in), 4096-token training batches, the same token budget
for every library, tokens of the embedded corpus `pydoc-corpus` (train split, tokenized
with the embedded tokenizer, rows of 256 tokens starting with BOS, shuffled).

Steps, one after the other (never in parallel), each library in its own subprocess:
  1. this CPU's fp32 matmul GFLOP/s on the SAE step's matmul shapes (best of several);
  2. each architecture (standard, gated, jumprelu, topk, batchtopk, matryoshka_batchtopk)
     trained end to end with this library's `SAETrainingRunner` (override model and
     dataset, no wandb);
  3. the same with SAELens 6.54.12 (benchmark/peers/saelens6_driver.py, /work/peer-venv);
  4. TopK with sparsify (benchmark/peers/sparsify_driver.py, /work/peer-loaders-venv);
  each job then times the SAE step alone (forward + backward + optimiser) on one fixed
  activation batch;
  5. one evaluation function, applied to every library's trained weights: L0, explained
     variance and CE loss score on held-out activations (test split). BatchTopK-family SAEs
     are evaluated twice: as saved (JumpReLU with each library's running threshold) and
     with the batch top-k of training applied to the held-out tokens (L0 = K exactly on
     both sides, so explained variance compares at equal L0).

With `--repeats N` every job runs N times, the libraries alternating (ours, peer, ours,
peer, ...), so that load on the shared machine hits both sides; speeds are the medians.

Writes benchmark/results/train_throughput.json and train_throughput.md.
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

import workload as wl  # noqa: E402  (benchmark/peers/workload.py)

RESULTS_DIR = HERE / "results"
SAELENS6_PYTHON = "/work/peer-venv/bin/python"
SPARSIFY_PYTHON = "/work/peer-loaders-venv/bin/python"
ARCHITECTURES = ("standard", "gated", "jumprelu", "topk", "batchtopk", "matryoshka_batchtopk")
BATCHTOPK_FAMILY = ("batchtopk", "matryoshka_batchtopk")
K = 32  # TopK's active latents; the sparsity the other architectures are tuned towards
# Matryoshka prefixes: this library's default for d_sae 2048, given to both libraries.
MATRYOSHKA_WIDTHS = [32, 128, 512, 2048]
# The BatchTopK running threshold's rate, both libraries: the default 0.01 averages about
# the last 100 steps, i.e. this whole run, whose early cuts are far from the final one.
THRESHOLD_LR = 0.1
# The BatchTopK family also starts b_dec at zero, as SAELens 6 does (it has no b_dec
# initialisation): with 5.6.0's geometric median, ours reached 0.9146 held-out explained
# variance at the batch top-k where SAELens 6 reached 0.9170; with zeros 0.9174.
BATCHTOPK_RECIPE: dict[str, Any] = dict(
    b_dec_init_method="zeros", activation_fn_kwargs={"k": K}, topk_threshold_lr=THRESHOLD_LR
)
EVAL_ROWS = 32  # held-out rows of CONTEXT tokens for the common evaluation
DEFAULT_TOKENS = 100 * wl.BATCH_TOKENS

# Training options per library and architecture, chosen by calibration runs on this workload
# (benchmark/quality_sweep.py; the runs are listed in benchmark/README.md). Both SAE Lens
# libraries get the same learning rate per architecture (the better of those tried for
# both) and the same recipe: SAELens 6's defaults (Adam beta1 0.9, decoder rows started
# at norm 0.1 with the encoder tied to them, no decoder renormalisation, L1 weighted by
# decoder norms), which this library expresses with 5.6.0 options plus `decoder_init_norm`;
# JumpReLU keeps this library's own defaults apart from beta1 (the recipe measured worse
# for it). Sparsity coefficients (and JumpReLU's thresholds) put L0 near K = 32, since
# explained variance is compared at equal L0. sparsify runs with its defaults (signum
# optimiser, learning rate from the number of latents).
LR = {
    "standard": 3e-3,
    "gated": 3e-3,
    "jumprelu": 3e-3,
    "topk": 1e-2,
    "batchtopk": 1e-2,
    "matryoshka_batchtopk": 1e-2,
}
SAELENS6_RECIPE: dict[str, Any] = dict(
    adam_beta1=0.9, normalize_sae_decoder=False, decoder_init_norm=0.1
)
OURS: dict[str, dict[str, Any]] = {
    "standard": dict(
        SAELENS6_RECIPE, scale_sparsity_penalty_by_decoder_norm=True, l1_coefficient=0.09
    ),
    "gated": dict(SAELENS6_RECIPE, l1_coefficient=0.15),
    "jumprelu": dict(
        adam_beta1=0.9,
        l1_coefficient=0.003,
        jumprelu_init_threshold=0.02,
        jumprelu_bandwidth=0.01,
    ),
    "topk": dict(SAELENS6_RECIPE, activation_fn_kwargs={"k": K}),
    "batchtopk": dict(SAELENS6_RECIPE, **BATCHTOPK_RECIPE),
    "matryoshka_batchtopk": dict(
        SAELENS6_RECIPE, **BATCHTOPK_RECIPE, matryoshka_widths=MATRYOSHKA_WIDTHS
    ),
}
SAELENS6: dict[str, dict[str, Any]] = {
    "standard": dict(sae_options=dict(l1_coefficient=0.09)),
    "gated": dict(sae_options=dict(l1_coefficient=0.15)),
    "jumprelu": dict(sae_options=dict(l0_coefficient=0.0006, jumprelu_init_threshold=0.005)),
    "topk": dict(sae_options=dict(k=K)),
    "batchtopk": dict(sae_options=dict(k=K, topk_threshold_lr=THRESHOLD_LR)),
    "matryoshka_batchtopk": dict(
        sae_options=dict(k=K, topk_threshold_lr=THRESHOLD_LR, matryoshka_widths=MATRYOSHKA_WIDTHS)
    ),
}
SPARSIFY_TOPK: dict[str, Any] = dict(sae_options=dict(k=K), runner_options={})


# ---------------------------------------------------------------- shared inputs


def prepare(work: Path) -> dict[str, str]:
    """Write the model folder, the token datasets and the activation file into `work`
    (kept between runs: delete `work` to rebuild)."""
    paths = {
        "model_dir": str(work / "model"),
        "tokens": str(work / "tokens_train"),
        "tokens_test": str(work / "tokens_test"),
        "acts": str(work / "acts.safetensors"),
    }
    if not (work / "model" / "config.json").is_file():
        _write_model(work / "model")
    if not (work / "tokens_test" / "dataset_info.json").is_file():
        _write_tokens(work)
    if not Path(paths["acts"]).is_file():
        _write_activations(paths)
    return paths


def _write_model(folder: Path, shape: dict[str, int] | None = None) -> None:
    """A GPT-2 with random weights (seed `wl.MODEL_SEED`) of `shape` (GPT2Config fields;
    default the workload's) and the embedded tokenizer, saved as a Hugging Face folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from sae_lens.embedded import load_embedded_tokenizer

    tokenizer = load_embedded_tokenizer()
    config = GPT2Config(
        **(wl.MODEL if shape is None else shape),
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(wl.MODEL_SEED)
    GPT2LMHeadModel(config).eval().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def _write_tokens(work: Path) -> None:
    """Rows of CONTEXT tokens: BOS, then the next CONTEXT - 1 tokens of the split's
    documents joined with BOS separators; shuffled with a fixed seed."""
    from datasets import Dataset

    from sae_lens.embedded import load_embedded_dataset, load_embedded_tokenizer

    tokenizer = load_embedded_tokenizer()
    bos = tokenizer.bos_token_id
    for split in ("train", "test"):
        texts = list(load_embedded_dataset(split=split)["text"])
        stream: list[int] = []
        for ids in tokenizer(texts)["input_ids"]:
            stream.extend(ids)
            stream.append(bos)
        body = wl.CONTEXT - 1
        n_rows = len(stream) // body
        rows = torch.tensor(stream[: n_rows * body]).view(n_rows, body)
        rows = torch.cat([torch.full((n_rows, 1), bos), rows], dim=1)
        rows = rows[torch.randperm(n_rows, generator=torch.Generator().manual_seed(0))]
        Dataset.from_dict({"input_ids": rows.tolist()}).save_to_disk(str(work / f"tokens_{split}"))


@torch.no_grad()
def _write_activations(paths: dict[str, str]) -> None:
    """The fixed step-benchmark batch (BATCH_TOKENS train activations) and the held-out
    evaluation activations, from the TransformerLens model; also checks that the Hugging
    Face model's block output (what sparsify trains on) is the same residual stream."""
    from safetensors.torch import save_file

    model = wl.load_hooked_transformer(paths["model_dir"])
    train = wl.load_tokens(paths["tokens"]).with_format("torch")["input_ids"]
    test = wl.load_tokens(paths["tokens_test"]).with_format("torch")["input_ids"][:EVAL_ROWS]
    step_rows = train[-wl.PROMPTS_PER_BATCH :]  # rows no run trains on at our token budgets
    save_file(
        {
            "step_batch": _hook_acts(model, step_rows).contiguous(),
            "eval_tokens": test.contiguous(),
        },
        paths["acts"],
    )


def _hook_acts(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """[rows * CONTEXT, D_IN] activations at HOOK_NAME."""
    _, cache = model.run_with_cache(
        tokens, names_filter=wl.HOOK_NAME, stop_at_layer=wl.HOOK_LAYER + 1
    )
    return cache[wl.HOOK_NAME].reshape(-1, wl.D_IN)


@torch.no_grad()
def hf_tl_max_abs_diff(paths: dict[str, str]) -> float:
    """Largest |HF block output - TL hook activation| on a few held-out rows."""
    from safetensors.torch import load_file

    tokens = load_file(paths["acts"])["eval_tokens"][:4]
    tl = _hook_acts(wl.load_hooked_transformer(paths["model_dir"]), tokens)
    hf = wl.load_hf_model(paths["model_dir"])(tokens, output_hidden_states=True)
    hf_acts = hf.hidden_states[wl.HOOK_LAYER + 1].reshape(-1, wl.D_IN)
    return (tl - hf_acts).abs().max().item()


# ---------------------------------------------------------------- matmul roofline


def matmul_roofline(repeats: int = 7) -> dict[str, Any]:
    """Best-of-`repeats` time of each matmul shape of a dense SAE step (outputs preallocated,
    operands laid out as the step has them) and the resulting GFLOP/s."""
    n, d, m = wl.BATCH_TOKENS, wl.D_IN, wl.D_SAE
    g = torch.Generator().manual_seed(0)
    x, grad_out = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    acts, grad_pre = torch.randn(n, m, generator=g), torch.randn(n, m, generator=g)
    W_enc, W_dec = torch.randn(d, m, generator=g), torch.randn(m, d, generator=g)
    shapes = {  # name: (a, b) of a @ b
        "x @ W_enc": (x, W_enc),
        "acts @ W_dec": (acts, W_dec),
        "grad_out @ W_dec.T": (grad_out, W_dec.t()),
        "acts.T @ grad_out": (acts.t(), grad_out),
        "x.T @ grad_pre": (x.t(), grad_pre),
        "grad_pre @ W_enc.T": (grad_pre, W_enc.t()),
    }
    flops = 2 * n * d * m
    best: dict[str, float] = {}
    for name, (a, b) in shapes.items():
        out = torch.empty(a.shape[0], b.shape[1])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter() - start)
        best[name] = min(times)
    return {
        "flops_per_matmul": flops,
        "best_ms": {k: v * 1e3 for k, v in best.items()},
        "gflops": {k: flops / v / 1e9 for k, v in best.items()},
        "peak_gflops": max(flops / v / 1e9 for v in best.values()),
    }


# ---------------------------------------------------------------- jobs


# The allocator settings of benchmark/activation_generation.py's --tuned-malloc: glibc then
# keeps large freed blocks instead of unmapping them and page-faulting them back.
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**34)}


def run_job(
    python: str, script: Path, job: dict[str, Any], timeout_s: float, tuned_malloc: bool
) -> dict[str, Any]:
    """Run one job in its own process (from /tmp, so the peers import their own installed
    packages) and return its result.json with the load average around it."""
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(json.dumps(job, indent=2))
    load_before = os.getloadavg()
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) if script == Path(__file__) else ""}
    if tuned_malloc:
        env.update(TUNED_MALLOC)
    proc = subprocess.run(
        [python, str(script), "--job", str(job_file)]
        if script == Path(__file__)
        else [python, str(script), str(job_file)],
        cwd="/tmp",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    (out_dir / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"job {job['name']} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads((out_dir / "result.json").read_text())
    result["process_s"] = time.perf_counter() - started
    result["load_avg_before"] = load_before[0]
    result["load_avg_after"] = os.getloadavg()[0]
    return result


def ours_runner_config(job: dict[str, Any]) -> Any:
    from sae_lens import LanguageModelSAERunnerConfig

    return LanguageModelSAERunnerConfig(
        model_name="benchmark-gpt2",
        hook_name=wl.HOOK_NAME,
        hook_layer=wl.HOOK_LAYER,
        dataset_path=job["tokens"],
        is_dataset_tokenized=True,
        streaming=False,
        context_size=wl.CONTEXT,
        architecture=job["architecture"],
        d_in=wl.D_IN,
        d_sae=wl.D_SAE,
        # a step-only job (no training) still needs a valid run length for the runner
        training_tokens=max(job["training_tokens"], wl.BATCH_TOKENS),
        train_batch_size_tokens=wl.BATCH_TOKENS,
        store_batch_size_prompts=wl.PROMPTS_PER_BATCH,
        n_batches_in_buffer=wl.BUFFER_BATCHES,
        device="cpu",
        seed=wl.SAE_SEED,
        log_to_wandb=False,
        eval_every_n_wandb_logs=10
        ** 9,  # no evals during training (SAELens 6 runs none without wandb)
        checkpoint_path=str(Path(job["out_dir"]) / "runs"),
        verbose=False,
        **job["options"],
    )


def run_our_job(job: dict[str, Any]) -> None:
    """The body of one of this library's jobs (run in a subprocess by `run_job`): train
    (unless the job's token budget is 0), then time the step on the fixed batch."""
    import sae_lens
    from sae_lens import SAETrainingRunner
    from sae_lens.allocator import freed_memory_reused

    # as the command line runs (reuse_freed_memory on), for the step timing below too
    with freed_memory_reused("cpu", enabled=True):
        _run_our_job(job, sae_lens.__version__, SAETrainingRunner)


def _run_our_job(job: dict[str, Any], version: str, runner_class: Any) -> None:
    model = wl.load_hooked_transformer(job["model_dir"])
    dataset = wl.load_tokens(job["tokens"])
    cfg = ours_runner_config(job)
    rss_before = wl.current_rss_mb()
    clock = wl.Clock()
    runner = runner_class(cfg, override_model=model, override_dataset=dataset)
    result: dict[str, Any] = {"library": f"sae_lens {version} (this project)"}
    if job["training_tokens"] > 0:
        result.update(_train_ours(job, runner, clock))
        result["rss_before_mb"] = rss_before
    if job["step_bench_steps"] > 0:
        result.update(_time_our_steps(job, cfg, model, runner.activations_store))
    wl.write_json(Path(job["out_dir"]) / "result.json", result)


def _train_ours(job: dict[str, Any], runner: Any, clock: wl.Clock) -> dict[str, Any]:
    from safetensors.torch import save_file

    setup_wall, _ = clock.read()
    store_wall = _time_calls(runner.activations_store, "next_batch")
    sae = runner.run()
    wall, cpu = clock.read()
    state_dict = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    sae.process_state_dict_for_saving(state_dict)
    save_file(state_dict, Path(job["out_dir"]) / "weights.safetensors")
    return {
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        # where the time went: runner construction (model checks, store, SAE, b_dec init),
        # the store serving batches (model forward, buffer mixing), and the rest of fit()
        "breakdown_s": {
            "runner_init": setup_wall,
            "store_next_batch": store_wall[0],
            "rest_of_run": wall - setup_wall - store_wall[0],
        },
        "peak_rss_mb": wl.max_rss_mb(),
    }


def _time_our_steps(job: dict[str, Any], cfg: Any, model: Any, store: Any) -> dict[str, Any]:
    """The SAE step alone (forward, backward, decoder-norm upkeep, clipping, Adam), then
    the trainer's own step (which adds the feature-firing statistics and the schedules),
    each with a freshly initialised SAE on the fixed batch."""
    from sae_lens.training.optim import make_adam
    from sae_lens.training.sae_trainer import SAETrainer
    from sae_lens.training.training_sae import TrainingSAE

    batch = wl.fixed_activation_batch(job["acts"])
    torch.manual_seed(wl.SAE_SEED)
    sae = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    optimizer = make_adam(sae, cfg.lr, (cfg.adam_beta1, cfg.adam_beta2))  # as the trainer
    no_dead = torch.zeros(wl.D_SAE, dtype=torch.bool)

    def sae_step() -> None:
        output = sae.training_forward_pass(batch, cfg.l1_coefficient, no_dead)
        output.loss.backward()
        sae.before_optimizer_step()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        sae.after_optimizer_step()
        optimizer.zero_grad()

    floor = wl.matmul_floor(job["architecture"])
    result = {"sae_step": wl.time_steps(sae_step, job["step_bench_steps"], floor)}
    torch.manual_seed(wl.SAE_SEED)
    fresh = TrainingSAE.from_dict(cfg.get_training_sae_cfg_dict())
    trainer = SAETrainer(
        model=model, sae=fresh, activation_store=store, save_checkpoint_fn=lambda **_: None, cfg=cfg
    )
    result["trainer_step"] = wl.time_steps(
        lambda: trainer._train_step(trainer.sae, batch), job["step_bench_steps"]
    )
    return result


def _time_calls(obj: Any, method: str) -> list[float]:
    """Wrap `obj.method` (on the instance) to add its wall seconds into the returned
    one-element list."""
    total = [0.0]
    inner = getattr(obj, method)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    setattr(obj, method, timed)
    return total


# ---------------------------------------------------------------- common evaluation


def reference_latents(
    architecture: str, w: dict[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Latents [n, d_sae] of activations x [n, d_in], written out from the inference weights
    of any of the three libraries (all subtract b_dec from the input before encoding)."""
    x = x - w["b_dec"]
    if architecture == "gated":
        gate = (x @ w["W_enc"] + w["b_gate"]) > 0
        magnitude = x @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"]
        return torch.relu(magnitude) * gate
    pre = x @ w["W_enc"] + w["b_enc"]
    if architecture in ("jumprelu", *BATCHTOPK_FAMILY):  # the batchtopk family saves JumpReLU
        return torch.relu(pre) * (pre > w["threshold"])
    if architecture == "topk":
        top = pre.topk(K, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    return torch.relu(pre)


class Downstream:
    """The model's held-out next-token predictions, clean and with the hook zero-ablated,
    against which a spliced-in reconstruction is scored."""

    @torch.no_grad()
    def __init__(self, model: Any, tokens: torch.Tensor) -> None:
        self.model, self.tokens = model, tokens
        self.clean_logprobs = model(tokens).log_softmax(-1)  # [rows, ctx, vocab]
        zero = self._logprobs(lambda acts: torch.zeros_like(acts))
        self.clean_ce, self.zero_ce = self._ce(self.clean_logprobs), self._ce(zero)
        self.zero_kl = self._kl(zero)

    def _logprobs(self, replace: Any) -> torch.Tensor:
        hook = (wl.HOOK_NAME, lambda acts, hook: replace(acts))
        return self.model.run_with_hooks(self.tokens, fwd_hooks=[hook]).log_softmax(-1)

    def _ce(self, logprobs: torch.Tensor) -> float:
        targets = self.tokens[:, 1:, None]
        return -logprobs[:, :-1].gather(-1, targets).mean().item()

    def _kl(self, logprobs: torch.Tensor) -> float:
        """Mean over positions of KL(clean || other)."""
        p = self.clean_logprobs
        return (p.exp() * (p - logprobs)).sum(-1).mean().item()

    @torch.no_grad()
    def score(self, reconstruct: Any) -> dict[str, float]:
        """CE loss score = (CE zero-ablated - CE spliced) / (CE zero-ablated - CE clean);
        KL score = 1 - KL(clean || spliced) / KL(clean || zero-ablated)."""
        logprobs = self._logprobs(lambda acts: reconstruct(acts.reshape(-1, wl.D_IN)).view_as(acts))
        ce, kl = self._ce(logprobs), self._kl(logprobs)
        return {
            "ce_loss_with_sae": ce,
            "ce_loss_score": (self.zero_ce - ce) / (self.zero_ce - self.clean_ce),
            "kl_div_with_sae": kl,
            "kl_score": 1 - kl / self.zero_kl,
        }

    def baseline(self) -> dict[str, float]:
        return {
            "clean_ce": self.clean_ce,
            "zero_ablation_ce": self.zero_ce,
            "zero_ablation_kl": self.zero_kl,
        }


@torch.no_grad()
def evaluate(
    architecture: str, weights_path: Path, eval_acts: torch.Tensor, downstream: Downstream
) -> dict[str, float]:
    """L0, explained variance (1 - total squared error / total variance around the mean),
    and the downstream scores of one trained SAE on the held-out tokens."""
    from safetensors.torch import load_file

    w = {k: v.float() for k, v in load_file(str(weights_path)).items()}

    def reconstruct(acts: torch.Tensor) -> torch.Tensor:
        return reference_latents(architecture, w, acts) @ w["W_dec"] + w["b_dec"]

    latents = reference_latents(architecture, w, eval_acts)
    recon = latents @ w["W_dec"] + w["b_dec"]
    total_variance = (eval_acts - eval_acts.mean(0)).pow(2).sum()
    result = {
        "l0": (latents > 0).float().sum(-1).mean().item(),
        "explained_variance": 1 - ((eval_acts - recon).pow(2).sum() / total_variance).item(),
        "mse_per_token": (eval_acts - recon).pow(2).sum(-1).mean().item(),
        "dead_latents_on_eval": int(((latents > 0).sum(0) == 0).sum().item()),
        **downstream.score(reconstruct),
    }
    if architecture in BATCHTOPK_FAMILY:
        # the training-time rule on the held-out tokens: the K * n entries of ReLU(pre) with
        # the largest score ReLU(pre) * ||W_dec row|| (both libraries rank so; SAELens 6's
        # exported decoder rows have unit norm)
        pre = torch.relu((eval_acts - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
        top = (pre * w["W_dec"].norm(dim=1)).flatten().topk(K * eval_acts.shape[0])
        pre = pre.flatten()
        batch_latents = torch.zeros_like(pre).scatter(0, top.indices, pre[top.indices])
        batch_recon = batch_latents.view(eval_acts.shape[0], -1) @ w["W_dec"] + w["b_dec"]
        error = (eval_acts - batch_recon).pow(2).sum()
        result["batch_topk_l0"] = (batch_latents > 0).float().sum().item() / eval_acts.shape[0]
        result["batch_topk_explained_variance"] = 1 - (error / total_variance).item()
    return result


# ---------------------------------------------------------------- orchestration


def job_specs(
    paths: dict[str, str],
    work: Path,
    tokens: int,
    step_steps: int,
    architectures: list[str],
    libraries: list[str],
) -> list[tuple[str, str, Path, dict[str, Any]]]:
    """(library, architecture, script to run, job) for every run, in the order they run."""
    common = dict(paths, training_tokens=tokens, step_bench_steps=step_steps)
    specs = []
    for arch in architectures:
        if "ours" in libraries:
            options = {"lr": LR[arch], **OURS[arch]}
            job = dict(
                common,
                name=f"ours/{arch}",
                architecture=arch,
                options=options,
                out_dir=str(work / "jobs" / f"ours_{arch}"),
            )
            specs.append(("ours", arch, Path(__file__), job))
        if "saelens6" in libraries:
            job = dict(
                common,
                name=f"saelens6/{arch}",
                architecture=arch,
                runner_options={"lr": LR[arch]},
                **SAELENS6[arch],
                out_dir=str(work / "jobs" / f"saelens6_{arch}"),
            )
            specs.append(("saelens6", arch, HERE / "peers" / "saelens6_driver.py", job))
    if "sparsify" in libraries and "topk" in architectures:
        job = dict(
            common,
            name="sparsify/topk",
            architecture="topk",
            **SPARSIFY_TOPK,
            out_dir=str(work / "jobs" / "sparsify_topk"),
        )
        specs.append(("sparsify", "topk", HERE / "peers" / "sparsify_driver.py", job))
    return specs


PYTHONS = {"ours": sys.executable, "saelens6": SAELENS6_PYTHON, "sparsify": SPARSIFY_PYTHON}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per architecture: our figures, each peer's, and ours / peer ratios."""
    by_key = {(r["library_key"], r["architecture"]): r for r in runs}
    rows = []
    for arch in ARCHITECTURES:
        ours = by_key.get(("ours", arch))
        if ours is None:
            continue
        for peer in ("saelens6", "sparsify"):
            other = by_key.get((peer, arch))
            if other is None:
                continue
            rows.append(
                {
                    "architecture": arch,
                    "peer": peer,
                    "end_to_end_speedup": ours["tokens_per_s"] / other["tokens_per_s"],
                    "end_to_end_cpu_speedup": other["train_cpu_s"] / ours["train_cpu_s"],
                    "sae_step_speedup": other["sae_step"]["best_ms"] / ours["sae_step"]["best_ms"],
                    "peak_rss_ratio": ours["peak_rss_mb"] / other["peak_rss_mb"],
                    "explained_variance_diff": ours["eval"]["explained_variance"]
                    - other["eval"]["explained_variance"],
                    "l0_ratio": ours["eval"]["l0"] / max(other["eval"]["l0"], 1e-9),
                    "batch_topk_explained_variance_diff": ours["eval"].get(
                        "batch_topk_explained_variance", float("nan")
                    )
                    - other["eval"].get("batch_topk_explained_variance", float("nan")),
                }
            )
    return rows


def paired_speedups(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per architecture and peer, '<arch>/<peer>': ours / peer end-to-end tokens/s of each
    repeat, each ratio from two runs next to each other in time (less exposed to the
    machine's load drifting over the session than a ratio of medians)."""
    by_repeat: dict[tuple[str, str, int], float] = {}
    for run in runs:
        key = (run["library_key"], run["architecture"], run.get("repeat", 0))
        by_repeat[key] = run["tokens_per_s"]
    pairs: dict[str, list[float]] = {}
    for (library, arch, repeat), ours in sorted(by_repeat.items()):
        if library != "ours":
            continue
        for peer in ("saelens6", "sparsify"):
            other = by_repeat.get((peer, arch, repeat))
            if other is not None:
                pairs.setdefault(f"{arch}/{peer}", []).append(ours / other)
    return pairs


def median_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (library, architecture) from repeated runs: the median end-to-end
    tokens/s and CPU seconds, the best SAE and trainer step, the first run's evaluation
    (training is deterministic, so every repeat trains the same SAE)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["library_key"], run["architecture"]), []).append(run)
    merged = []
    for group in groups.values():
        record = dict(group[0], repeats=len(group))
        for key in ("tokens_per_s", "train_cpu_s", "train_wall_s"):
            if key in record:
                record[key] = statistics.median(r[key] for r in group)
        for key in ("sae_step", "trainer_step"):
            if record.get(key):
                record[key] = min((r[key] for r in group), key=lambda t: t["best_ms"])
        record["step_over_matmul_min"] = record["sae_step"]["over_matmul_floor"]
        merged.append(record)
    return merged


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """The report's tables: every run, then (after training) ours / peer ratios."""
    machine, workload = report["machine"], report["workload"]
    tokens = workload["training_tokens"]
    lines = [
        "# SAE training benchmark (CPU)",
        "",
        f"{machine['cpu']}, {machine['threads']} torch threads, torch {machine['torch']}, "
        f"allocator: {machine['allocator']}; load average {machine['load_avg_start']:.1f} at "
        f"start, {machine['load_avg_end']:.1f} at end (shared machine); peak fp32 matmul "
        f"{report['matmul_roofline']['peak_gflops']:.0f} GFLOP/s.",
        f"Training: {tokens:,} tokens per run ({tokens // wl.BATCH_TOKENS} steps of "
        f"{wl.BATCH_TOKENS} tokens)."
        if tokens
        else "Steps only (no training).",
        "",
    ]
    head = "| library | arch | SAE step ms best / median | / matmul floor | trainer step ms |"
    rule = "|---|---|---:|---:|---:|"
    if tokens:
        head += (
            " tokens/s | CPU s | peak RSS MiB (before) | L0 | expl. var. | CE score | KL score |"
        )
        rule += "---:|---:|---:|---:|---:|---:|---:|"
    lines += [head, rule]
    for r in report["runs"]:
        step, trainer = r["sae_step"], r.get("trainer_step")
        trainer_ms = f"{trainer['best_ms']:.0f}" if trainer else "-"
        row = (
            f"| {r['library_key']} | {r['architecture']} | {step['best_ms']:.0f} / "
            f"{step['median_ms']:.0f} | {r['step_over_matmul_min']:.2f} | {trainer_ms} |"
        )
        if tokens:
            e = r["eval"]
            row += (
                f" {r['tokens_per_s']:,.0f} | {r['train_cpu_s']:.0f} | {r['peak_rss_mb']:.0f} "
                f"({r['rss_before_mb']:.0f}) | {e['l0']:.1f} | {e['explained_variance']:.3f} | "
                f"{e['ce_loss_score']:.3f} | {e['kl_score']:.3f} |"
            )
        lines.append(row)
    batch_rows = [r for r in report["runs"] if "batch_topk_explained_variance" in r.get("eval", {})]
    if batch_rows:
        lines += [
            "",
            "BatchTopK family with the batch top-k of training on the held-out tokens:",
            "",
        ]
        lines += ["| library | arch | L0 | expl. var. |", "|---|---|---:|---:|"]
        for r in batch_rows:
            e = r["eval"]
            lines.append(
                f"| {r['library_key']} | {r['architecture']} | {e['batch_topk_l0']:.1f} | "
                f"{e['batch_topk_explained_variance']:.4f} |"
            )
    if tokens:
        lines += _ratio_lines(report)
    path.write_text("\n".join(lines) + "\n")


def _ratio_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Ours / peer (speed-ups > 1: we are faster; EV diff > 0: we reconstruct better):",
        "",
        "| arch | peer | end-to-end (wall) | paired runs (median) | end-to-end (CPU) | SAE step "
        "| peak RSS | EV diff | L0 ours / peer | EV diff at batch top-k (L0 = K) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["ratios"]:
        batch_diff = s.get("batch_topk_explained_variance_diff", float("nan"))
        pairs = s.get("end_to_end_speedup_pairs") or []
        paired = ", ".join(f"{p:.2f}" for p in pairs)
        if len(pairs) > 1:
            paired += f" ({s['end_to_end_speedup_pairs_median']:.2f}x)"
        lines.append(
            f"| {s['architecture']} | {s['peer']} | {s['end_to_end_speedup']:.2f}x | "
            f"{paired or '-'} | "
            f"{s['end_to_end_cpu_speedup']:.2f}x | {s['sae_step_speedup']:.2f}x | "
            f"{s['peak_rss_ratio']:.2f} | {s['explained_variance_diff']:+.3f} | {s['l0_ratio']:.2f} "
            f"| {'-' if batch_diff != batch_diff else f'{batch_diff:+.4f}'} |"
        )
    base = report["downstream_baseline"]
    lines += [
        "",
        f"Held-out CE: clean {base['clean_ce']:.3f}, hook zero-ablated "
        f"{base['zero_ablation_ce']:.3f} nats (KL to clean {base['zero_ablation_kl']:.4f}); "
        f"HF vs TransformerLens activations max |diff| "
        f"{report['workload']['hf_tl_max_abs_diff']:.1e}.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tokens", type=int, default=DEFAULT_TOKENS, help="training tokens per run"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/sae_lens_train_bench"),
        help="folder for the model, tokens and run outputs (reused between runs)",
    )
    parser.add_argument("--step-steps", type=int, default=15, help="timed SAE steps per job")
    parser.add_argument(
        "--architectures", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES
    )
    parser.add_argument(
        "--libraries",
        nargs="+",
        default=["ours", "saelens6", "sparsify"],
        choices=["ours", "saelens6", "sparsify"],
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="where to write the report"
    )
    parser.add_argument(
        "--step-only",
        action="store_true",
        help="only time the SAE step on the fixed batch (no training, no evaluation)",
    )
    parser.add_argument(
        "--tuned-malloc",
        action="store_true",
        help=f"run every job with {TUNED_MALLOC} (results in files named *_tuned_malloc)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every job this many times, libraries alternating; speeds are medians",
    )
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # internal: one of our jobs
    args = parser.parse_args()
    if args.job is not None:
        run_our_job(json.loads(args.job.read_text()))
        return
    if args.tokens % wl.BATCH_TOKENS:
        raise SystemExit(f"--tokens must be a multiple of {wl.BATCH_TOKENS}, got {args.tokens}")

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    paths = prepare(args.work)
    print(f"prepared {args.work} in {time.perf_counter() - started:.0f} s", flush=True)
    roofline = matmul_roofline()
    print(f"matmul peak {roofline['peak_gflops']:.0f} GFLOP/s", flush=True)

    from safetensors.torch import load_file

    model = wl.load_hooked_transformer(paths["model_dir"])
    eval_tokens = load_file(paths["acts"])["eval_tokens"]
    eval_acts = _hook_acts(model, eval_tokens)
    downstream = Downstream(model, eval_tokens)

    tokens = 0 if args.step_only else args.tokens
    all_runs = []
    specs = job_specs(paths, args.work, tokens, args.step_steps, args.architectures, args.libraries)
    for repeat in range(args.repeats):
        for library, arch, script, job in specs:
            if args.repeats > 1:
                job = dict(
                    job, name=f"{job['name']} #{repeat + 1}", out_dir=f"{job['out_dir']}_r{repeat}"
                )
            result = run_and_evaluate(
                library, arch, script, job, args.tuned_malloc, eval_acts, downstream
            )
            all_runs.append(dict(result, repeat=repeat))
    runs = median_runs(all_runs)

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "allocator": TUNED_MALLOC if args.tuned_malloc else "glibc defaults",
            "load_avg_start": load_start,
            "load_avg_end": os.getloadavg()[0],
            "total_wall_s": time.perf_counter() - started,
        },
        "workload": {
            "model": wl.MODEL,
            "hook_name": wl.HOOK_NAME,
            "d_in": wl.D_IN,
            "d_sae": wl.D_SAE,
            "k": K,
            "batch_tokens": wl.BATCH_TOKENS,
            "training_tokens": tokens,
            "context": wl.CONTEXT,
            "eval_tokens": int(eval_tokens.numel()),
            "hf_tl_max_abs_diff": hf_tl_max_abs_diff(paths),
        },
        "matmul_roofline": roofline,
        "repeats": args.repeats,
        "runs": runs,
        "all_runs": all_runs,
    }
    if tokens:
        report["downstream_baseline"] = downstream.baseline()
        report["ratios"] = summarise(runs)
        for row in report["ratios"]:
            pairs = paired_speedups(all_runs).get(f"{row['architecture']}/{row['peer']}", [])
            row["end_to_end_speedup_pairs"] = pairs
            if pairs:
                row["end_to_end_speedup_pairs_median"] = statistics.median(pairs)
    name = "train_throughput" + ("_steps" if args.step_only else "")
    name += "_tuned_malloc" if args.tuned_malloc else ""
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, args.results / f"{name}.md")
    print((args.results / f"{name}.md").read_text())


def run_and_evaluate(
    library: str,
    arch: str,
    script: Path,
    job: dict[str, Any],
    tuned_malloc: bool,
    eval_acts: torch.Tensor,
    downstream: Downstream,
) -> dict[str, Any]:
    """Run one job, then (when it trained) evaluate its weights on the held-out tokens."""
    print(f"running {job['name']} ...", flush=True)
    result = run_job(PYTHONS[library], script, job, 1800, tuned_malloc)
    tokens = job["training_tokens"]
    result.update(
        library_key=library,
        architecture=arch,
        training_tokens=tokens,
        options=job.get("options") or {k: job[k] for k in ("sae_options", "runner_options")},
        step_over_matmul_min=result["sae_step"]["over_matmul_floor"],
    )
    if tokens:
        result["tokens_per_s"] = tokens / result["train_wall_s"]
        weights = Path(job["out_dir"]) / "weights.safetensors"
        result["eval"] = evaluate(arch, weights, eval_acts, downstream)
    print(f"  {_one_line(result)}", flush=True)
    return result


def _one_line(result: dict[str, Any]) -> str:
    step = result["sae_step"]
    line = f"step {step['best_ms']:.0f} ms ({step['over_matmul_floor']:.2f}x matmul floor)"
    if "eval" in result:
        line += (
            f", {result['tokens_per_s']:,.0f} tok/s, L0 {result['eval']['l0']:.1f}, "
            f"EV {result['eval']['explained_variance']:.3f}"
        )
    return line


if __name__ == "__main__":
    main()
