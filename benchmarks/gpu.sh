#!/usr/bin/env bash
# Prepared GPU run for chapter 7 (issue 6). On a machine with a CUDA GPU:
#   bash benchmarks/gpu.sh            # results in $OUT if set, else benchmarks/results/
# 1. finds a python3 whose torch sees the GPU (else tries to install requirements.lock into
#    .venv-gpu, which needs network access);
# 2. runs the Triton tests COMPILED on the GPU (no interpreter): tests/test_triton_scan.py;
# 3. runs the benchmark grid (batch 8, D 1024, N 16, L 512/2048/8192, float32, forward and
#    forward+backward) with benchmarks/scan_gpu.py and writes gpu_scan.json with provenance.
# mamba_ssm's CUDA selective_scan_fn is compared when it imports; set MAMBA_WHEELS to a folder
# of wheels to install it offline, or MAMBA_FROM_INDEX=1 to let pip build it from the package
# index (needs network; it compiles CUDA code, which takes many minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
RESULTS="${OUT:-benchmarks/results}"
mkdir -p "$RESULTS"

has_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

PY="${PYTHON:-python3}"
if ! has_cuda "$PY"; then
  echo "gpu.sh: $PY has no CUDA torch; installing requirements.lock into .venv-gpu" >&2
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install --quiet -r requirements.lock
  PY=.venv-gpu/bin/python
  has_cuda "$PY" || { echo "gpu.sh: no CUDA GPU visible to PyTorch; stopping" >&2; exit 1; }
fi
"$PY" -c 'import triton' 2>/dev/null || "$PY" -m pip install --quiet "triton>=3.0"
"$PY" -m pytest --version >/dev/null 2>&1 || "$PY" -m pip install --quiet pytest

if ! "$PY" -c 'import mamba_ssm' 2>/dev/null; then
  if [ -n "${MAMBA_WHEELS:-}" ]; then
    "$PY" -m pip install --quiet --no-index --find-links "$MAMBA_WHEELS" mamba-ssm || true
  elif [ "${MAMBA_FROM_INDEX:-0}" = 1 ]; then
    timeout 1800 "$PY" -m pip install --quiet --no-build-isolation mamba-ssm || true
  else
    echo "gpu.sh: mamba_ssm not installed; benchmarking without it" >&2
  fi
fi

nvidia-smi | tee "$RESULTS/gpu_nvidia_smi.txt" || true
echo "::: compiled Triton tests on the GPU" >&2
set +e
"$PY" -m pytest -q -p no:cacheprovider tests/test_triton_scan.py 2>&1 | tee "$RESULTS/gpu_tests.log"
tests_status=${PIPESTATUS[0]}
set -e
echo "::: benchmark grid" >&2
"$PY" -m benchmarks.scan_gpu --out "$RESULTS/gpu_scan.json" 2>&1 | tee "$RESULTS/gpu_bench.log"
echo "gpu.sh: tests exit status $tests_status; results in $RESULTS" >&2
exit "$tests_status"
