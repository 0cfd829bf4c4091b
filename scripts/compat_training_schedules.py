"""Compare our learning-rate and L1 schedules with SAELens 5.6.0's, step by step.

Runs the oracle (the published sae-lens 5.6.0 in /work/oracle-venv) in a subprocess on the
same schedule settings and prints the largest relative difference per setting.

    .venv/bin/python scripts/compat_training_schedules.py [--oracle-python PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import torch

from sae_lens.training.optim import L1Scheduler, get_lr_scheduler

CASES = [
    # name, training_steps, lr, warm_up, decay, lr_end, cycles
    ("constant", 50, 1e-3, 0, 0, 1e-4, 1),
    ("constant", 50, 1e-3, 10, 0, 1e-4, 1),
    ("constant", 50, 1e-3, 10, 15, 1e-4, 1),
    ("constant", 50, 1e-3, 1, 1, 1e-4, 1),
    ("cosineannealing", 60, 3e-4, 0, 0, 3e-5, 1),
    ("cosineannealing", 60, 3e-4, 7, 0, 3e-5, 1),
    ("cosineannealing", 60, 3e-4, 7, 11, 3e-5, 1),
    ("CosineAnnealing", 60, 3e-4, 0, 11, 1e-6, 1),
    ("cosineannealingwarmrestarts", 80, 1e-3, 0, 0, 1e-4, 3),
    ("cosineannealingwarmrestarts", 80, 1e-3, 5, 9, 1e-4, 4),
]
L1_CASES = [(0, 30, 5.0), (10, 30, 5.0), (1, 30, 0.5), (7, 30, 2)]
EXTRA_STEPS = 3  # steps past training_steps (a run whose tokens are not a batch multiple)

ORACLE_PROGRAM = """
import json, sys, warnings
import torch
warnings.filterwarnings("ignore")
from sae_lens.training.optim import L1Scheduler, get_lr_scheduler
cases, l1_cases, extra = json.loads(sys.stdin.read())
lrs = []
for name, steps, lr, warm, decay, lr_end, cycles in cases:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = get_lr_scheduler(name, opt, steps, lr, warm, decay, lr_end, cycles)
    values = []
    for _ in range(steps + extra):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(values)
l1s = []
for warm, steps, final in l1_cases:
    sched = L1Scheduler(warm, steps, final)
    values = []
    for _ in range(steps):
        values.append(sched.current_l1_coefficient)
        sched.step()
    l1s.append(values)
print(json.dumps([lrs, l1s]))
"""


def ours() -> tuple[list[list[float]], list[list[float]]]:
    lrs = []
    for name, steps, lr, warm, decay, lr_end, cycles in CASES:
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        sched = get_lr_scheduler(name, opt, steps, lr, warm, decay, lr_end, cycles)
        values = []
        for _ in range(steps + EXTRA_STEPS):
            values.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        lrs.append(values)
    l1s = []
    for warm, steps, final in L1_CASES:
        l1 = L1Scheduler(warm, steps, final)
        values = []
        for _ in range(steps):
            values.append(l1.current_l1_coefficient)
            l1.step()
        l1s.append(values)
    return lrs, l1s


def max_rel_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-30) for x, y in zip(a, b, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle-python", default="/work/oracle-venv/bin/python")
    args = parser.parse_args()
    payload = json.dumps([CASES, L1_CASES, EXTRA_STEPS])
    result = subprocess.run(
        [args.oracle_python, "-c", ORACLE_PROGRAM],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
    )
    oracle_lrs, oracle_l1s = json.loads(result.stdout.strip().splitlines()[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        our_lrs, our_l1s = ours()
    worst = 0.0
    print(f"{'lr schedule (name, steps, lr, warm, decay, lr_end, cycles)':<72} max rel diff")
    for case, a, b in zip(CASES, our_lrs, oracle_lrs, strict=True):
        diff = max_rel_diff(a, b)
        worst = max(worst, diff)
        print(f"{str(case):<72} {diff:.2e}")
    print(f"{'l1 schedule (warm, steps, final)':<72} max rel diff")
    for case, a, b in zip(L1_CASES, our_l1s, oracle_l1s, strict=True):
        diff = max_rel_diff(a, b)
        worst = max(worst, diff)
        print(f"{str(case):<72} {diff:.2e}")
    ok = worst < 1e-9
    print(f"worst relative difference {worst:.2e}: {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
