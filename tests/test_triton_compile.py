"""Compile every Triton kernel for real NVIDIA targets, on a machine without a GPU.

The interpreter (``TRITON_INTERPRET=1``, used by ``test_triton_scan.py`` on CPU) executes the
kernel body as NumPy code and accepts things the GPU compiler rejects (shapes that are not
powers of two, unsupported reductions, dtype mismatches in loop-carried values). This test
runs Triton's whole compiler — Triton IR, GPU IR, LLVM, PTX and ``ptxas`` to a cubin — for an
A100 (sm_80) and an H100/H200 (sm_90). It needs a separate Python process: the kernels of a
process are either interpreted or compiled, fixed when triton is first imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]  # run the workers against this checkout
BARE = {k: False for k in ("HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS", "VAR_B", "VAR_C")}
# (capability, dtype, flags): every flag on and every flag off for both targets, plus float64
CONFIGS = [
    (80, "float32", None),
    (90, "float32", None),
    (90, "float32", BARE),
    (90, "float64", None),
]

WORKER = """
import json, sys, torch
from ssm.triton_scan import compile_kernels
configs = json.loads(sys.argv[1])
results = [compile_kernels(cap, getattr(torch, dtype), flags) for cap, dtype, flags in configs]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """PTX of both kernels for every config, from one compiled-mode worker process."""
    cache = tmp_path_factory.mktemp("triton-cache")  # empty cache: every kernel really compiles
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(cache))
    result = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(CONFIGS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "index", range(len(CONFIGS)), ids=["sm80", "sm90", "sm90-bare", "sm90-fp64"]
)
def test_kernels_compile_to_ptx_for_gpu(compiled, index):
    capability, dtype, flags = CONFIGS[index]
    ptx = compiled[index]
    assert set(ptx) == {"_selective_scan_fwd_kernel", "_selective_scan_bwd_kernel"}
    for name, text in ptx.items():
        assert f".target sm_{capability}" in text, name
        assert f".entry {name}" in text, name
        assert "st.local" not in text, f"{name} spills registers to local memory"
        if flags is None and name == "_selective_scan_bwd_kernel":
            assert "atom.global" in text or "red.global" in text, "dB/dC atomics missing"


def test_compile_refuses_in_the_interpreter():
    code = (
        "import os; os.environ['TRITON_INTERPRET'] = '1'\n"
        "from ssm.triton_scan import compile_kernels\n"
        "compile_kernels(90)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode != 0
    assert "compile_kernels: the kernels were defined for the interpreter" in result.stderr
