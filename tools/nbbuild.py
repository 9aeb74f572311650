"""Write a notebook from its source: cells separated by ``# %% [markdown]`` and ``# %%`` lines.

Authors keep a chapter's source readable in review; ``make execute`` then stores the outputs.
Usage: python tools/nbbuild.py book/src/intro.py book/intro.ipynb
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import nbformat


def cells_from_source(text: str) -> list[nbformat.NotebookNode]:
    """Split ``text`` at ``# %%`` markers into markdown and code cells."""
    cells, kind, lines = [], None, []

    def flush() -> None:
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(
                line[2:] if line.startswith("# ") else line.lstrip("#")
                for line in body.splitlines()
            )
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and body.strip():
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def stable_id(index: int, source: str) -> str:
    """A cell id that depends only on the cell's place and text, so regenerating is diff-free."""
    return hashlib.sha1(f"{index}:{source}".encode()).hexdigest()[:12]


def main(src: str, dst: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells_from_source(Path(src).read_text())
    for index, cell in enumerate(nb.cells):
        cell.id = stable_id(index, cell.source)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.write(nb, dst)


if __name__ == "__main__":
    main(*sys.argv[1:3])
