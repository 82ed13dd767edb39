"""Parity's runs of an input, kept for a repeat of the same input.

Hypothesis draws the same input more than once: a zeros case at any seed, or a family's first
case at each pinned batch, again and again across the four parity tests. The same feeds on the
same two runtimes give the same outputs (the determinism check holds ONNX Runtime to that, bit for
bit), so a repeat is judged and counted again from the runs it already had, instead of running both
frameworks again. The key is the feeds themselves, byte for byte: what is judged does not change.
The memo is bounded for models whose inputs and outputs are large.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import numpy as np

    from harness.runtime.case_runs import CaseRuns

# Past this many bytes of feeds and outputs, new inputs are no longer kept (earlier ones stay).
RUNS_MEMO_BYTES = 64 << 20


def feeds_key(feeds: Mapping[str, np.ndarray]) -> bytes:
    """A digest of every input's name, dtype, shape and bytes."""
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(feeds):
        array = feeds[name]
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(memoryview(array if array.flags.c_contiguous else array.copy()).cast("B"))
    return digest.digest()


def _nbytes(runs: CaseRuns) -> int:
    held: list[Any] = [runs.feeds, runs.torch32, runs.onnxruntime or {}, runs.torch64 or {}]
    return sum(int(getattr(array, "nbytes", 0)) for outputs in held for array in outputs.values())


class RunsMemo:
    """The runs of each input seen, by ``feeds_key``, up to ``max_bytes`` in all."""

    def __init__(self, max_bytes: int = RUNS_MEMO_BYTES) -> None:
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self._runs: dict[bytes, CaseRuns] = {}

    def get(self, key: bytes) -> CaseRuns | None:
        return self._runs.get(key)

    def keep(self, key: bytes, runs: CaseRuns) -> None:
        """``key``: the feeds' key taken before the runs (a model may write into its inputs)."""
        size = _nbytes(runs)
        if self.held_bytes + size <= self.max_bytes:
            self._runs[key] = runs
            self.held_bytes += size

    def clear(self) -> None:
        """The runners changed (a fresh session, released runners): earlier runs are not theirs."""
        self._runs.clear()
        self.held_bytes = 0
