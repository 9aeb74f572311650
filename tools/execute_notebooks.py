"""Re-execute chapter notebooks in place, in the pinned environment (``make execute``).

Stored outputs are part of the book: nbval compares them with a fresh run. This script is
the only way they are written: each notebook is run top to bottom in a fresh kernel of the
current interpreter, with its own folder as working directory, and saved without timing
metadata so that two runs give the same file.

Usage: python tools/execute_notebooks.py book/01_state_spaces.ipynb [...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 900) -> float:
    """Execute one notebook in place and return its wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return elapsed


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: execute_notebooks.py NOTEBOOK [...]", file=sys.stderr)
        return 2
    for name in paths:
        path = Path(name)
        print(f"executing {path} ...", flush=True)
        print(f"  done in {execute(path):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
