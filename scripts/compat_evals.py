"""Compare our `run_evals` with SAELens 5.6.0's on the same model, SAE and tokens.

Builds a tiny random HookedTransformer and a few SAEs (standard on the residual stream, with
and without ignored tokens; standard on hook_z; topk), saves them to a temporary folder, runs
the oracle (the published sae-lens 5.6.0 in /work/oracle-venv) in a subprocess and this
project in-process, and prints every metric side by side. Metrics whose definition we
changed on purpose (see the `sae_lens.evals` docstring) are marked "by design".

    .venv/bin/python scripts/compat_evals.py [--oracle-python PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from sae_lens.evals import get_eval_everything_config, run_evals
from sae_lens.sae import SAE, SAEConfig

MODEL_CFG = dict(
    n_layers=2,
    d_model=16,
    d_head=4,
    n_heads=4,
    d_mlp=32,
    n_ctx=32,
    d_vocab=50,
    act_fn="gelu",
    normalization_type="LN",
    seed=0,
)
N_BATCHES = 2
IGNORED = [7, 13]

# name, hook, d_in, activation, kwargs, ignore tokens
CASES: list[tuple[str, str, int, str, dict[str, Any], list[int]]] = [
    ("resid", "blocks.1.hook_resid_pre", 16, "relu", {}, []),
    ("resid+ignore", "blocks.1.hook_resid_pre", 16, "relu", {}, IGNORED),
    ("hook_z", "blocks.0.attn.hook_z", 16, "relu", {}, []),
    ("topk", "blocks.1.hook_resid_pre", 16, "topk", {"k": 4}, []),
]

# Metrics we define differently from 5.6.0 (documented in sae_lens/evals.py).
BY_DESIGN = {"mse", "explained_variance"}
BY_DESIGN_WITH_IGNORED = {
    "ce_loss_with_ablation",
    "ce_loss_score",
    "kl_div_with_ablation",
    "kl_div_score",
}
# Ours is 5.6.0's explained_variance under another name.
RENAMED = {"explained_variance_legacy": "explained_variance"}

ORACLE_PROGRAM = r"""
import json, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from sae_lens.evals import get_eval_everything_config, run_evals
from sae_lens.sae import SAE

work = Path(sys.argv[1])
spec = json.loads((work / "spec.json").read_text())

class Store:
    def __init__(self, batches):
        self.batches, self.position = batches, 0
        self.context_size = batches[0].shape[1]
        self.store_batch_size_prompts = batches[0].shape[0]
        self.normalize_activations = "none"
    def get_batch_tokens(self, batch_size=None):
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch
    def reset_input_dataset(self):
        pass  # as in 5.6.0's store, where this did not rewind the token stream

model = HookedTransformer(HookedTransformerConfig(**spec["model_cfg"]))
params = load_file(str(work / "model.safetensors"))
model.load_state_dict(params, strict=False)
assert set(params) == {name for name, _ in model.named_parameters()}
model.eval()
batches = [torch.tensor(b) for b in spec["batches"]]
out = {}
for name, ignore in spec["cases"]:
    sae = SAE.load_from_pretrained(str(work / name))
    config = get_eval_everything_config(
        n_eval_reconstruction_batches=spec["n_batches"],
        n_eval_sparsity_variance_batches=spec["n_batches"],
    )
    metrics, features = run_evals(sae, Store(batches), model, config, ignore_tokens=set(ignore))
    out[name] = {"metrics": metrics, "features": {k: list(v) for k, v in features.items()}}
print(json.dumps(out))
"""


class _Store:
    """The part of ActivationsStore that run_evals uses, serving fixed batches."""

    def __init__(self, batches: list[torch.Tensor]):
        self.batches, self.position = batches, 0
        self.context_size = batches[0].shape[1]
        self.store_batch_size_prompts = batches[0].shape[0]
        self.normalize_activations = "none"

    def get_batch_tokens(self, batch_size: int | None = None) -> torch.Tensor:
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch


def _make_sae(hook: str, d_in: int, activation: str, kwargs: dict[str, Any], seed: int) -> SAE:
    cfg = SAEConfig(
        architecture="topk" if activation == "topk" else "standard",
        d_in=d_in,
        d_sae=24,
        activation_fn_str=activation,
        activation_fn_kwargs=kwargs,
        apply_b_dec_to_input=True,
        finetuning_scaling_factor=False,
        context_size=8,
        model_name="tiny",
        hook_name=hook,
        hook_layer=int(hook.split(".")[1]),
        hook_head_index=None,
        prepend_bos=True,
        dataset_path="",
        dataset_trust_remote_code=False,
        normalize_activations="none",
        dtype="float32",
        device="cpu",
        sae_lens_training_version=None,
    )
    sae = SAE(cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return sae


def _prepare(work: Path) -> tuple[HookedTransformer, list[torch.Tensor]]:
    model = HookedTransformer(HookedTransformerConfig(**MODEL_CFG))  # type: ignore[arg-type]
    model.eval()
    # parameters only: the two TransformerLens versions hold different buffers
    params = {k: v.detach().contiguous() for k, v in model.named_parameters()}
    save_file(params, work / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(1, 50, (3, 8), generator=generator) for _ in range(N_BATCHES)]
    for batch in batches:
        batch[:, 0] = IGNORED[0]
        batch[1, 4] = IGNORED[1]
    for seed, (name, hook, d_in, activation, kwargs, _) in enumerate(CASES):
        _make_sae(hook, d_in, activation, kwargs, seed).save_model(work / name)
    spec = {
        "model_cfg": MODEL_CFG,
        "batches": [b.tolist() for b in batches],
        "cases": [[name, ignore] for name, *_, ignore in CASES],
        "n_batches": N_BATCHES,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    return model, batches


def _ours(work: Path, batches: list[torch.Tensor]) -> dict[str, Any]:
    model = HookedTransformer(HookedTransformerConfig(**MODEL_CFG))  # type: ignore[arg-type]
    model.load_state_dict(load_file(str(work / "model.safetensors")), strict=False)
    model.eval()
    out = {}
    for name, *_, ignore in CASES:
        sae = SAE.load_from_pretrained(str(work / name))
        config = get_eval_everything_config(
            n_eval_reconstruction_batches=N_BATCHES, n_eval_sparsity_variance_batches=N_BATCHES
        )
        metrics, features = run_evals(
            sae, _Store(batches), model, config, ignore_tokens=set(ignore)
        )
        out[name] = {"metrics": metrics, "features": features}
    return out


def _flat(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {k: v for group, values in metrics.items() for k, v in values.items()}


def _rel_diff(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _max_abs_diff(a: list[float], b: list[float]) -> float:
    diffs = [
        0.0 if math.isnan(x) and math.isnan(y) else abs(x - y) for x, y in zip(a, b, strict=True)
    ]
    return max(diffs, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle-python", default="/work/oracle-venv/bin/python")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _, batches = _prepare(work)
        oracle_run = subprocess.run(
            [args.oracle_python, "-c", ORACLE_PROGRAM, str(work)],
            capture_output=True,
            text=True,
            cwd=work,  # so that the oracle imports its own sae_lens, not this checkout's
        )
        if oracle_run.returncode != 0:
            sys.exit(f"oracle failed:\n{oracle_run.stderr[-3000:]}")
        oracle = json.loads(oracle_run.stdout.strip().splitlines()[-1])
        ours = _ours(work, batches)

    worst = worst_feature = 0.0
    for name, *_, ignore in CASES:
        print(f"\n== {name} ==")
        print(f"{'metric':34s} {'ours':>12s} {'5.6.0':>12s} {'rel diff':>9s}")
        mine, theirs = _flat(ours[name]["metrics"]), _flat(oracle[name]["metrics"])
        for key, value in mine.items():
            other = theirs.get(RENAMED.get(key, key), math.nan)
            diff = _rel_diff(float(value), float(other))
            by_design = key in BY_DESIGN or (ignore and key in BY_DESIGN_WITH_IGNORED)
            note = "by design" if by_design else ""
            if key in RENAMED:
                note = f"= 5.6.0 {RENAMED[key]}"
            if not by_design:
                worst = max(worst, diff)
            print(f"{key:34s} {value:12.6g} {other:12.6g} {diff:9.2e} {note}")
        for key, values in ours[name]["features"].items():
            diff = _max_abs_diff(values, oracle[name]["features"][key])
            worst_feature = max(worst_feature, diff)
            print(f"{key:34s} {'[d_sae]':>12s} {'[d_sae]':>12s} {diff:9.2e} (max abs)")
    print(f"\nlargest relative difference of a scalar metric outside 'by design': {worst:.2e}")
    print(f"largest absolute difference of a per-latent metric: {worst_feature:.2e}")


if __name__ == "__main__":
    main()
