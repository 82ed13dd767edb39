"""One place that knows how the reports' PNGs are made (headless, closed after saving)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def saved_figure(path: Path, *, figsize: tuple[float, float], **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """A figure with ``figure.subplots(**subplots)``, saved to ``path`` when the block finishes
    without error. Built on the Agg canvas directly: pyplot's global state and its import (a
    quarter of a second in every gate that draws a plot) buy nothing in a headless report."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.subplots(**subplots)
    yield figure, axes
    figure.savefig(path, dpi=100)
