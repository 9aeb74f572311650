"""Sphinx extension: a notebook whose stored outputs contain an error fails the book build.

The book renders stored outputs (execution is off), so a chapter that raised when it was last
executed would otherwise be published with a traceback. This turns that into a warning, which
``jupyter-book build -W`` makes an error.
"""

from __future__ import annotations

import json

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)


def warn_on_stored_errors(app: Sphinx, docname: str, source: list[str]) -> None:
    """Warn for every code cell of notebook ``docname`` that stored an error output."""
    path = app.env.doc2path(docname)
    if not str(path).endswith(".ipynb"):
        return
    cells = json.loads(source[0]).get("cells", [])
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                logger.warning(
                    "cell %d raised %s: %s (re-run 'make execute' after fixing it)",
                    index,
                    output.get("ename"),
                    output.get("evalue"),
                    location=docname,
                )


def setup(app: Sphinx) -> dict[str, bool]:
    app.connect("source-read", warn_on_stored_errors)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
