"""Stacked steps against one-by-one steps: n same-shape SAEs (TopK k 32, and standard) each
take a training step on its own batch of 4,096 tokens (forward, backward, Adam), either one
after another (each SAE's `training_forward_pass`) or together (`stacked_training_forward`,
one backward of the summed losses), as a multi-SAE run with `stack_saes` on or off does.
Run on CUDA by `benchmark/gpu_check.sh`; `--device cpu` measures the CPU side (where
`stack_saes: "auto"` does not stack). Prints one line per job and writes
`<out>/stacked_step_speed.json`.

    .venv/bin/python benchmark/stacked_step_speed.py --out gpu_check_out
    .venv/bin/python benchmark/stacked_step_speed.py --device cpu --n-saes 12 --d-in 256 --d-sae 1024
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sae_lens.training.training_sae import TrainingSAE
from tests.sae_configs import training_sae_cfg_dict

BATCH = 4096


def make_saes(architecture: str, n: int, d_in: int, d_sae: int, device: str) -> list[TrainingSAE]:
    cfg = training_sae_cfg_dict(
        architecture, d_in=d_in, d_sae=d_sae, k=32, l1_coefficient=1.0, device=device
    )
    torch.manual_seed(0)
    return [TrainingSAE.from_dict(cfg).train() for _ in range(n)]


def one_by_one(saes: list[TrainingSAE], xs: list[torch.Tensor]) -> None:
    for sae, x in zip(saes, xs, strict=True):
        sae.training_forward_pass(sae_in=x, current_l1_coefficient=1.0).loss.backward()


def together(saes: list[TrainingSAE], xs: list[torch.Tensor]) -> None:
    inputs = [sae.process_sae_in(x) for sae, x in zip(saes, xs, strict=True)]
    forwards = saes[0].architecture.stacked_training_forward(saes, torch.stack(inputs))
    losses = [
        sae.training_step_output(x, x_in, forward, 1.0).loss
        for sae, x, x_in, forward in zip(saes, xs, inputs, forwards, strict=True)
    ]
    torch.stack(losses).sum().backward()


def steps_per_second(
    forward_backward: Callable[[list[TrainingSAE], list[torch.Tensor]], None],
    saes: list[TrainingSAE],
    xs: list[torch.Tensor],
    steps: int,
) -> float:
    """Steps (of all n SAEs) per second, after 3 warm-up steps."""
    optimizers = [torch.optim.Adam(sae.parameters(), lr=1e-4) for sae in saes]

    def step() -> None:
        forward_backward(saes, xs)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()

    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if xs[0].is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n-saes", type=int, default=12)
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--d-sae", type=int, default=3072)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: pass --device cpu to measure the CPU side")
    results = []
    for architecture in ("topk", "standard"):
        saes = make_saes(architecture, args.n_saes, args.d_in, args.d_sae, args.device)
        xs = [torch.randn(BATCH, args.d_in, device=args.device) for _ in saes]
        rates = {
            mode: steps_per_second(fn, saes, xs, args.steps)
            for mode, fn in (("one_by_one", one_by_one), ("stacked", together))
        }
        row = {
            "architecture": architecture,
            **rates,
            "speedup": rates["stacked"] / rates["one_by_one"],
        }
        print(
            f"{architecture}: {args.n_saes} SAEs [{args.d_in} -> {args.d_sae}] one by one "
            f"{rates['one_by_one']:.2f} steps/s, stacked {rates['stacked']:.2f} steps/s "
            f"({row['speedup']:.2f}x)",
            flush=True,
        )
        results.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": args.device, "args": {k: str(v) for k, v in vars(args).items()}}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name()
    report["results"] = results
    (args.out / "stacked_step_speed.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
