"""CPU benchmark of the selective scan methods against a well-written sequential loop.

Setting (issue 5): float32, batch 2, D 64, N 16, B and C selective (batch, N, L), softplus
on Delta. For every L it measures

* time of the forward and of forward + backward, for every method, in ONE process with the
  methods interleaved round-robin and the minimum over repetitions kept. The machine this
  was written on is shared (load ~8 on 2 cores), which made wall-clock times vary tenfold;
  the reported times are therefore the CPU time of the process (``time.process_time``) with
  one intra-op thread, which other processes barely disturb. Wall-clock times of the same
  runs are stored too. One thread is conservative for the parallel methods: only their large
  tensor operations could use a second core, the loop's small ones cannot;
* peak memory of forward + backward, each (method, L) in its OWN process: the growth of
  ``ru_maxrss`` over the process's high-water mark after imports and inputs.

Hillis–Steele over materialised tensors does O(L log L) work on (batch, D, N, L) tensors and
is skipped at L = 16 384 to keep the benchmark within about three minutes. The indexed loop
(``h[..., t]`` written into a preallocated tensor) is the trap chapter 6 warns about; it is
measured at the shortest length only, because its backward is quadratic.

Run ``python -m benchmarks`` (or ``make bench``); results go to
``benchmarks/results/cpu_scan.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import ssm
from ssm.scan import _auto_method

BATCH, DIM, N = 2, 64, 16
LENGTHS = (256, 1024, 4096, 16384)
METHODS = ("sequential", "hillis_steele", "blelloch", "chunked")
INDEXED_LENGTHS = (256,)
THREADS = 2
RESULTS = Path(__file__).parent / "results" / "cpu_scan.json"


def make_inputs(length: int, seed: int = 0) -> list[torch.Tensor]:
    """u, delta (batch, D, L); A (D, N) = -(1..N) as Mamba's init; B, C (batch, N, L)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(BATCH, DIM, length, generator=g)
    delta = torch.randn(BATCH, DIM, length, generator=g) - 2.0
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(DIM, 1)
    B = torch.randn(BATCH, N, length, generator=g)
    C = torch.randn(BATCH, N, length, generator=g)
    return [x.requires_grad_(True) for x in (u, delta, A, B, C)]


def indexed_loop(u, delta, A, B, C):
    """The trap: states written into a preallocated tensor with ``h[..., t] = ...``. Each
    in-place write makes autograd's backward copy the whole tensor, so it is O(L^2)."""
    delta = F.softplus(delta)
    hs = u.new_zeros(BATCH, DIM, N, u.shape[-1])
    h = u.new_zeros(BATCH, DIM, N)
    for t in range(u.shape[-1]):
        d = delta[:, :, t, None]
        h = torch.exp(d * A) * h + (d * u[:, :, t, None]) * B[:, None, :, t]
        hs[..., t] = h
    return (hs * C[:, None]).sum(2)


def run_method(name: str, inputs: list[torch.Tensor]) -> torch.Tensor:
    if name == "indexed_loop":
        return indexed_loop(*inputs)
    return ssm.selective_scan(*inputs, delta_softplus=True, method=name)


def time_once(name: str, inputs: list[torch.Tensor], backward: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one forward or forward + backward."""
    for x in inputs:
        x.grad = None
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    if backward:
        y = run_method(name, inputs)
        y.backward(torch.ones_like(y))
    else:
        with torch.no_grad():
            run_method(name, inputs)
    return time.process_time() - start_cpu, time.perf_counter() - start_wall


def worker_time(length: int, methods: list[str], repeats: int) -> dict:
    """Min over ``repeats`` of forward and forward+backward times, methods interleaved."""
    torch.set_num_threads(1)
    inputs = make_inputs(length)
    keys = ("forward_s", "forward_backward_s", "wall_forward_s", "wall_forward_backward_s")
    best = {m: dict.fromkeys(keys, float("inf")) for m in methods}
    warm = make_inputs(256, seed=1)
    for m in methods:  # warm-up: first calls allocate and load kernels
        time_once(m, warm, backward=True)
    for _ in range(repeats):
        for m in methods:
            for backward, cpu_key, wall_key in (
                (False, keys[0], keys[2]),
                (True, keys[1], keys[3]),
            ):
                cpu, wall = time_once(m, inputs, backward)
                best[m][cpu_key] = min(best[m][cpu_key], cpu)
                best[m][wall_key] = min(best[m][wall_key], wall)
    return best


def worker_memory(length: int, method: str) -> dict:
    """Peak RSS growth (MiB) of one forward + backward, in a fresh process, after a short
    warm-up run of the same method (so that loading kernels and thread pools is not counted)."""
    time_once(method, make_inputs(64, seed=1), backward=True)
    inputs = make_inputs(length)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    time_once(method, inputs, backward=True)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": (after - before) / 1024}  # ru_maxrss is in KiB on Linux


def spawn(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.scan_cpu", *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(lengths: tuple[int, ...]) -> dict:
    results: dict = {}
    for length in lengths:
        methods = [m for m in METHODS if length <= 4096 or m != "hillis_steele"]
        methods += ["indexed_loop"] if length in INDEXED_LENGTHS else []
        repeats = 3 if length <= 4096 else 1
        times = spawn(
            [
                "--worker",
                "time",
                "--length",
                str(length),
                "--methods",
                *methods,
                "--repeats",
                str(repeats),
            ]
        )
        for m in methods:
            mem = spawn(["--worker", "memory", "--length", str(length), "--methods", m])
            results.setdefault(m, {})[str(length)] = {**times[m], **mem}
        print(f"L={length}: done", file=sys.stderr, flush=True)
    return results


def ratios(results: dict) -> dict:
    """Speed-up of every method over the sequential loop, and memory as a fraction of it."""
    out: dict = {}
    for m, per_length in results.items():
        for length, r in per_length.items():
            ref = results["sequential"][length]  # measured at every length
            out.setdefault(m, {})[length] = {
                "speedup_forward": ref["forward_s"] / r["forward_s"],
                "speedup_forward_backward": ref["forward_backward_s"] / r["forward_backward_s"],
                "memory_fraction": r["peak_mib"] / ref["peak_mib"],
            }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["time", "memory"])
    parser.add_argument("--length", type=int)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    if args.worker == "time":
        print(json.dumps(worker_time(args.length, args.methods, args.repeats)))
        return
    if args.worker == "memory":
        print(json.dumps(worker_memory(args.length, args.methods[0])))
        return
    start = time.perf_counter()
    results = measure(tuple(args.lengths))
    report = {
        "setting": {
            "dtype": "float32",
            "batch": BATCH,
            "D": DIM,
            "N": N,
            "timing_threads": 1,
            "memory_threads": THREADS,
            "B_C": "selective (batch, N, L)",
            "delta_softplus": True,
        },
        "auto_on_cpu": _auto_method(torch.device("cpu"), False, BATCH * DIM * N),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
        },
        "note": (
            "Shared, noisy machine (load ~8 on 2 cores while this ran): forward_s and "
            "forward_backward_s are CPU times (time.process_time, 1 intra-op thread), the "
            "minimum over repetitions with all methods interleaved in one process; wall_* are "
            "the wall-clock times of the same runs, inflated by other processes. Compare "
            "ratios, not absolute times. Memory (peak_mib, 2 threads) is the growth of "
            "ru_maxrss during one forward+backward after a short warm-up, each (method, L) in "
            "its own process."
        ),
        "command": "python -m benchmarks",
        "results": results,
        "ratios_vs_sequential": ratios(results),
        "wall_s": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {report['wall_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
