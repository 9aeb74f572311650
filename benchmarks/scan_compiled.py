"""CPU benchmark of the fused path: ``selective_scan(..., method="compiled")``.

The blocked chunked scan with its per-block forward and backward functions compiled by
``torch.compile`` (Inductor generates C++ loops that fuse the elementwise work of a block).
Same setting and timing rules as ``benchmarks.scan_cpu`` (CPU time, one intra-op thread,
minimum over repetitions with the methods interleaved in one process), plus the one-off
compile time, measured as the wall time of the first forward + backward in a fresh process
with an empty Inductor cache (so that nothing compiled earlier is reused).

Run by ``python -m benchmarks``; results go to ``benchmarks/results/cpu_scan_compiled.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.scan_cpu import make_inputs, time_once

LENGTHS = (1024, 4096)
METHODS = ("sequential", "chunked", "compiled")
RESULTS = Path(__file__).parent / "results" / "cpu_scan_compiled.json"


def measure(lengths: tuple[int, ...] = LENGTHS, repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    start = time.perf_counter()
    time_once("compiled", make_inputs(lengths[0], seed=1), backward=True)  # compiles
    compile_s = time.perf_counter() - start
    results: dict = {}
    for length in lengths:
        inputs = make_inputs(length)
        best = {m: {"forward_s": float("inf"), "forward_backward_s": float("inf")} for m in METHODS}
        for m in METHODS:
            time_once(m, inputs, backward=True)  # warm-up
        for _ in range(repeats):
            for m in METHODS:
                for backward, key in ((False, "forward_s"), (True, "forward_backward_s")):
                    best[m][key] = min(best[m][key], time_once(m, inputs, backward)[0])
        ref = best["sequential"]
        for m in METHODS:
            best[m]["speedup_forward_backward"] = (
                ref["forward_backward_s"] / best[m]["forward_backward_s"]
            )
            results.setdefault(m, {})[str(length)] = best[m]
    return {"compile_s": compile_s, "results": results}


def main() -> None:
    if "--worker" in sys.argv:
        print(json.dumps(measure()))
        return
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.scan_compiled", "--worker"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
    report = {
        "setting": "as cpu_scan.json: float32, batch 2, D 64, N 16, selective B and C",
        "note": (
            "CPU times (time.process_time, 1 intra-op thread), minimum over 3 repetitions with "
            "the methods interleaved; compile_s is the wall time of the first forward+backward "
            "of method='compiled' (forward and backward block functions compiled once for "
            "blocks of 64 steps) with an empty Inductor cache, on a shared machine."
        ),
        "command": "python -m benchmarks",
        **json.loads(out.stdout.strip().splitlines()[-1]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
