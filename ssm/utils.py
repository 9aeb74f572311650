"""Helpers every chapter uses: seeding, device choice and the book's plotting style."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["seed_everything", "default_device", "set_plot_style", "best_time"]


def seed_everything(seed: int = 0, deterministic: bool = True) -> None:
    """Seed Python, NumPy and PyTorch so that a chapter prints the same numbers every run.

    Args:
        seed: a non-negative integer.
        deterministic: also ask PyTorch for deterministic kernels (``warn_only``, so an
            operation without a deterministic variant warns instead of failing).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def default_device() -> torch.device:
    """The device the book runs on: the first CUDA GPU if there is one, else the CPU.

    Set ``SSM_DEVICE`` (e.g. ``cpu``) to override.
    """
    requested = os.environ.get("SSM_DEVICE")
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_plot_style() -> None:
    """The book's matplotlib style: readable sizes, light grid, no top/right spines."""
    import matplotlib as mpl

    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "lines.linewidth": 1.6,
            "image.cmap": "viridis",
        }
    )


def best_time(f: Callable[[], object], repeats: int = 5) -> float:
    """Wall time in seconds of the fastest of ``repeats`` calls of ``f()``.

    The minimum is the least noisy estimate on a shared machine: other jobs only ever add time.
    The chapters report ratios of such times, measured in one process.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected a positive int, got {repeats!r}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)
