"""GPU benchmark of the selective scan: loop, PyTorch scans, our Triton kernels, mamba_ssm.

Setting (issue 6): float32, batch 8, D 1024, N 16, L in {512, 2048, 8192}, B and C per time
step (batch, N, L), softplus on Delta, no z. For every L and method it measures forward and
forward + backward with CUDA events (median of ``--repeats`` after warm-up), checks the
output against the chunked PyTorch scan, and reports the Triton forward's effective HBM
bandwidth ``fused_scan_bytes / time`` as a fraction of the GPU's datasheet peak. The Triton
tile sizes are first tuned at L = 2048 over a small grid and the best is used everywhere.

Run by ``benchmarks/gpu.sh`` on a CUDA machine; writes ``gpu_scan.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

import ssm
from ssm.triton_scan import fused_scan_bytes, materialised_scan_bytes, selective_scan_triton

BATCH, DIM, N = 8, 1024, 16
LENGTHS = (512, 2048, 8192)
TORCH_METHODS = ("sequential", "hillis_steele", "blelloch", "chunked")
TILES = [(chunk, block_d) for chunk in (32, 64, 128) for block_d in (1, 2, 4)]
# HBM bandwidth from NVIDIA's datasheets (nvidia2022h100, nvidia2024h200), bytes/s
PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 SXM": 3.35e12,
    "H100 PCIe": 2.0e12,
    "H100 NVL": 3.9e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100 80GB PCIe": 1.935e12,
    "A100-SXM4-40GB": 1.555e12,
}
RESULTS = Path(__file__).parent / "results" / "gpu_scan.json"


def peak_bandwidth(name: str) -> float | None:
    """Datasheet HBM bandwidth of the GPU called ``name``, or None if it is not in the table."""
    for key, value in PEAK_BANDWIDTH.items():
        if all(part in name for part in key.split()):
            return value
    return None


def make_inputs(length: int, seed: int = 0) -> list[torch.Tensor]:
    """u, delta (batch, D, L); A (D, N) = -(1..N) (Mamba's init); B, C (batch, N, L)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    u = torch.randn(BATCH, DIM, length, device="cuda", generator=g)
    delta = torch.randn(BATCH, DIM, length, device="cuda", generator=g) - 2.0
    A = -torch.arange(1, N + 1, dtype=torch.float32, device="cuda").repeat(DIM, 1)
    B = torch.randn(BATCH, N, length, device="cuda", generator=g)
    C = torch.randn(BATCH, N, length, device="cuda", generator=g)
    return [x.requires_grad_(True) for x in (u, delta, A, B, C)]


def mamba_fn():
    """mamba_ssm's CUDA ``selective_scan_fn`` if it is installed, else None."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - any import failure means "not available here"
        return None
    return selective_scan_fn


def runner(method: str, tiles: tuple[int, int] | None = None):
    """A function of the inputs that runs ``method`` (softplus on Delta) and returns y."""
    if method == "triton":
        chunk, block_d = tiles
        return lambda *x: selective_scan_triton(
            *x, delta_softplus=True, chunk_size=chunk, block_d=block_d
        )
    if method == "mamba_ssm":
        fn = mamba_fn()
        return lambda *x: fn(*x, delta_softplus=True)
    return lambda *x: ssm.selective_scan(*x, delta_softplus=True, method=method)


def cuda_time(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, timed with CUDA events after 2 warm-ups."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return sorted(times)[len(times) // 2]


def measure(run, inputs: list[torch.Tensor], repeats: int) -> dict:
    """Forward and forward+backward times of ``run`` on ``inputs``."""

    def forward():
        with torch.no_grad():
            run(*inputs)

    def forward_backward():
        for x in inputs:
            x.grad = None
        y = run(*inputs)
        y.backward(torch.ones_like(y))

    return {
        "forward_s": cuda_time(forward, repeats),
        "forward_backward_s": cuda_time(forward_backward, repeats),
    }


def tune_tiles(repeats: int) -> tuple[tuple[int, int], dict]:
    """Best (chunk_size, block_d) for forward + backward at L = 2048."""
    inputs = make_inputs(2048)
    timings = {}
    for tiles in TILES:
        timings[f"{tiles[0]}x{tiles[1]}"] = measure(runner("triton", tiles), inputs, repeats)
    best = min(TILES, key=lambda t: timings[f"{t[0]}x{t[1]}"]["forward_backward_s"])
    return best, timings


def max_error(run, reference: torch.Tensor, inputs: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return (run(*inputs) - reference).abs().max().item()


def guarded(fn):
    """Run ``fn``; an out-of-memory error or a failure becomes a recorded string."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "out of memory"
    except Exception as err:  # noqa: BLE001 - the benchmark records failures and goes on
        torch.cuda.empty_cache()
        return f"failed: {type(err).__name__}: {err}"


def goals(results: dict, length: str = "2048") -> dict:
    """The issue's targets: Triton fwd+bwd <= 1.5x mamba_ssm, >= 50 % of peak bandwidth on the
    forward, >= 20x faster than the PyTorch Blelloch scan (fwd+bwd)."""

    def time_of(method: str, key: str):
        entry = results.get(method, {}).get(length)
        return entry[key] if isinstance(entry, dict) else None

    ours = time_of("triton", "forward_backward_s")
    mamba, blelloch = (
        time_of("mamba_ssm", "forward_backward_s"),
        time_of("blelloch", "forward_backward_s"),
    )
    entry = results.get("triton", {}).get(length)
    fraction = entry.get("fraction_of_peak_bandwidth_forward") if isinstance(entry, dict) else None
    return {
        "triton_over_mamba_forward_backward": ours / mamba if ours and mamba else None,
        "fraction_of_peak_bandwidth_forward": fraction,
        "speedup_over_blelloch_forward_backward": blelloch / ours if ours and blelloch else None,
    }


def provenance(argv: list[str]) -> dict:
    """GPU model, driver, versions, date and command of this run."""
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        driver = "unknown"
    import triton

    mamba = None
    if mamba_fn() is not None:
        import mamba_ssm

        mamba = mamba_ssm.__version__
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "multiprocessors": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "mamba_ssm": mamba,
        "python": platform.python_version(),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", "-m", "benchmarks.scan_gpu", *argv]),
    }


def measure_length(length: int, methods: list[str], tiles: tuple[int, int], args) -> dict:
    """{method: timings and max error vs the chunked scan, or why it was not measured}."""
    inputs = make_inputs(length)
    with torch.no_grad():
        reference = runner("chunked")(*inputs)
    out = {}
    for method in methods:
        if method == "sequential" and length > args.sequential_max_length:
            out[method] = "skipped: Python loop of L steps"
            continue
        run = runner(method, tiles)
        repeats = 2 if method == "sequential" else args.repeats
        entry = guarded(lambda: measure(run, inputs, repeats))  # noqa: B023 - called at once
        if isinstance(entry, dict):
            entry["max_abs_error_vs_chunked"] = guarded(lambda: max_error(run, reference, inputs))  # noqa: B023
        out[method] = entry
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sequential-max-length", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks.scan_gpu: no CUDA GPU visible to PyTorch; run it on a GPU machine")
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_properties(0).name
    peak = peak_bandwidth(name)
    tiles, tuning = tune_tiles(args.repeats)
    methods = list(TORCH_METHODS) + ["triton"] + (["mamba_ssm"] if mamba_fn() is not None else [])
    results: dict = {}
    for length in args.lengths:
        for method, entry in measure_length(length, methods, tiles, args).items():
            results.setdefault(method, {})[str(length)] = entry
        triton_entry = results["triton"][str(length)]
        if isinstance(triton_entry, dict):
            moved = fused_scan_bytes(BATCH, DIM, length, N, chunk_size=tiles[0])
            triton_entry["hbm_bytes_forward"] = moved
            triton_entry["bandwidth_forward_Bps"] = moved / triton_entry["forward_s"]
            if peak is not None:
                triton_entry["fraction_of_peak_bandwidth_forward"] = (
                    moved / triton_entry["forward_s"] / peak
                )
        torch.cuda.empty_cache()
        print(f"L={length}: done", file=sys.stderr, flush=True)
    report = {
        "goals_at_L2048": goals(results),
        "setting": {
            "dtype": "float32",
            "batch": BATCH,
            "D": DIM,
            "N": N,
            "B_C": "selective (batch, N, L)",
            "delta_softplus": True,
            "z": None,
            "timing": f"CUDA events, median of {args.repeats} after 2 warm-ups",
        },
        "machine": provenance(argv),
        "peak_bandwidth_Bps": peak,
        "peak_bandwidth_source": "NVIDIA datasheets (nvidia2022h100, nvidia2024h200)",
        "triton_tiles": {"chunk_size": tiles[0], "block_d": tiles[1], "tuning_at_L2048": tuning},
        "materialised_bytes_forward": {
            str(L): materialised_scan_bytes(BATCH, DIM, L, N) for L in args.lengths
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
