"""Notebook hygiene: the book's pages exist, and stored outputs are honest and reproducible.

nbval (``make nbval``) re-executes every chapter and compares; these checks catch what
nbval cannot: a notebook saved without outputs, out of order, with an error, with
machine-specific text, or edited apart from its source in ``book/src``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tools.nbbuild import cells_from_source

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(/tmp/|/root\b|/home/|/Users/|/work/)")
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]{6,}")


def toc_entries() -> list[str]:
    """Every ``file:`` entry of ``_toc.yml`` (and the root), without extension."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"]]
    for part in toc.get("parts", []):
        entries += [chapter["file"] for chapter in part.get("chapters", [])]
    return entries


NOTEBOOKS = sorted(p for p in (ROOT / "book").glob("*.ipynb"))


def code_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]


@pytest.mark.parametrize("entry", toc_entries())
def test_toc_entry_exists_once(entry: str) -> None:
    found = [
        ROOT / f"{entry}{ext}" for ext in (".md", ".ipynb") if (ROOT / f"{entry}{ext}").exists()
    ]
    assert len(found) == 1, f"_toc.yml entry {entry!r}: expected one .md or .ipynb, found {found}"


def test_every_notebook_is_in_the_toc() -> None:
    entries = set(toc_entries())
    orphans = [p.name for p in NOTEBOOKS if str(p.relative_to(ROOT).with_suffix("")) not in entries]
    assert not orphans, f"notebooks missing from _toc.yml: {orphans}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_ordered_stored_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3", f"{path.name}: kernelspec"
    cells = code_cells(path)
    assert cells, f"{path.name}: no code cells"
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts[:10]}, expected 1..{len(cells)}: make execute"
    )
    assert any(c["outputs"] for c in cells), f"{path.name}: no stored outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_outputs_are_clean(path: Path) -> None:
    for i, cell in enumerate(code_cells(path)):
        for out in cell["outputs"]:
            assert out["output_type"] != "error", (
                f"{path.name} cell {i}: stored error {out.get('ename')}"
            )
            text = json.dumps(out.get("text", "")) + json.dumps(
                out.get("data", {}).get("text/plain", "")
            )
            assert not MACHINE_PATH.search(text), f"{path.name} cell {i}: machine path in output"
            assert not ADDRESS.search(text), f"{path.name} cell {i}: object address in output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_matches_its_source(path: Path) -> None:
    source = ROOT / "book" / "src" / f"{path.stem}.py"
    assert source.exists(), f"{path.name}: no source {source.relative_to(ROOT)}"
    expected = [(c.cell_type, c.source) for c in cells_from_source(source.read_text())]
    stored = [(c["cell_type"], "".join(c["source"])) for c in json.loads(path.read_text())["cells"]]
    assert stored == expected, (
        f"{path.name} differs from {source.name}: regenerate with tools/nbbuild.py"
    )
