"""SAE training-step throughput on a CUDA device, per architecture, on the issue shapes
(d_in 128 / d_sae 2,048 and d_in 256 / d_sae 4,096; batches of 4,096 tokens), with the
trainer's own step (`SAETrainer._train_step`: forward, backward, Adam, decoder
renormalisation where configured). Run by `benchmark/gpu_check.sh`; prints one line per
job and writes `<out>/cuda_step_speed.json`.

    .venv/bin/python benchmark/cuda_step_speed.py --out gpu_check_out
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sae_lens.saes.registry import architecture_names
from sae_lens.training.training_sae import TrainingSAE
from tests.sae_configs import training_sae_cfg_dict

SHAPES = ((128, 2048), (256, 4096))
BATCH = 4096


def step_throughput(architecture: str, d_in: int, d_sae: int, steps: int) -> float:
    """Tokens per second of `steps` optimizer steps, after 5 warm-up steps."""
    cfg = training_sae_cfg_dict(
        architecture, d_in=d_in, d_sae=d_sae, k=32, l1_coefficient=1.0, device="cuda"
    )
    sae = TrainingSAE.from_dict(cfg)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(BATCH, d_in, device="cuda")

    def step() -> None:
        out = sae.training_forward_pass(sae_in=x, current_l1_coefficient=1.0)
        out.loss.backward()
        sae.before_optimizer_step()
        optimizer.step()
        sae.after_optimizer_step()
        optimizer.zero_grad()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures the CUDA path only")
    results = []
    for d_in, d_sae in SHAPES:
        for architecture in architecture_names():
            tok_s = step_throughput(architecture, d_in, d_sae, args.steps)
            results.append(dict(architecture=architecture, d_in=d_in, d_sae=d_sae, tok_s=tok_s))
            print(f"{architecture:>22} d_in {d_in:>4} d_sae {d_sae:>5}: {tok_s:,.0f} tok/s")
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name()
    report = {"device": device, "torch": torch.__version__, "results": results}
    (args.out / "cuda_step_speed.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
