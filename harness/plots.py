"""One place that knows how the reports' PNGs are made (headless, closed after saving)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def saved_figure(path: Path, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``plt.subplots(**subplots)``, saved to ``path`` when the block finishes without error."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(**subplots)
    try:
        yield figure, axes
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
