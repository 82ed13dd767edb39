"""``latest``: the link beside a run's or a comparison's folder that names the newest one (CI posts
``reports/compare/latest/compare.md``), replaced atomically so that readers never see it missing."""

from __future__ import annotations

from pathlib import Path


def point_latest(directory: Path) -> None:
    """``directory.parent / "latest"`` -> ``directory``."""
    link = directory.parent / "latest"
    temporary = directory.parent / f".latest-{directory.name}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(directory.name, target_is_directory=True)
    temporary.replace(link)
