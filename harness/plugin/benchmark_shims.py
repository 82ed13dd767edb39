"""What the gate needs of pytest-benchmark across its versions: where benchmark.json goes, and a
one-line refusal of a version that does not work with this pytest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pytest

if TYPE_CHECKING:
    pass


class BenchmarkJson(os.PathLike[str]):
    """benchmark.json's target in the form every pytest-benchmark version takes: 5.3 calls
    ``open()`` on a path, 5.1 and 5.2 expect an open file (argparse.FileType) and write in ``with
    target as fh``. A plain Path crashes 5.2 at session end. The file opens only when written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:  # pytest-benchmark logs "Wrote benchmark data in: <target>"
        return str(self.path)

    def __enter__(self) -> BinaryIO:
        self._file = self.path.open("wb")
        return self._file

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()


def check_benchmark_plugin() -> None:
    """One clear line instead of a traceback per benchmark: pytest-benchmark before 5.3 reads
    ``Node._nodeid``, which newer pytest (9.2) no longer has."""
    import pytest_benchmark
    from _pytest.nodes import Node

    version = pytest_benchmark.__version__
    if not hasattr(Node, "_nodeid") and tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (5, 3):
        raise pytest.UsageError(
            f"onnx-gate: pytest-benchmark {version} does not work with pytest {pytest.__version__} "
            "(it reads a node attribute this pytest dropped); install pytest-benchmark>=5.3 or pytest<9.2"
        )
