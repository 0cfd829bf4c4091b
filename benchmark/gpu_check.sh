#!/usr/bin/env bash
# The checks to run first whenever a CUDA machine is lent (its minutes are few):
#   1. the CUDA tests (tests/gpu, marker `gpu`: skipped on CPU-only machines),
#   2. the whole suite on the CUDA machine (the CPU paths must still pass there),
#   3. the SAE training-step throughput on CUDA per architecture (benchmark/cuda_step_speed.py),
#   4. 12 same-shape SAEs stepped together against one by one (benchmark/stacked_step_speed.py).
# Each stage's output goes to $OUT (or ./gpu_check_out) so the figures come back even when
# a later stage runs out of time. Usage, from the repository root:
#   bash benchmark/gpu_check.sh            # all stages
#   bash benchmark/gpu_check.sh gpu        # only the CUDA tests
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
stage="${1:-all}"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv && .venv/bin/pip install --quiet torch==2.13.0 && .venv/bin/pip install --quiet -e ".[dev]"
fi
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
.venv/bin/python -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.version.cuda)" | tee "$out/torch.txt"

.venv/bin/python -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/gpu_tests.txt" | tail -5
[ "$stage" = "gpu" ] && exit 0

.venv/bin/python -m pytest -q -p no:cacheprovider -x 2>&1 | tee "$out/suite.txt" | tail -5
PYTHONPATH=. .venv/bin/python benchmark/cuda_step_speed.py --out "$out" 2>&1 | tee "$out/cuda_step_speed.txt"
PYTHONPATH=. .venv/bin/python benchmark/stacked_step_speed.py --out "$out" 2>&1 | tee "$out/stacked_step_speed.txt"
