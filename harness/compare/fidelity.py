"""The exact rule of graph fidelity: the exported graph's float64 value against PyTorch's float64
value on one input, as pure functions on arrays. A faithful graph stays within what float64 rounding
and the float32 storage of its constants explain (harness/checks/fidelity.py says why these bounds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FP32_EPS = 2.0**-23
FLOOR_ULPS = 2
FP64_SHARE = 2.0**-9  # float64 rounding: 2**20 x (2**-52 / 2**-23) of fp32's own error
STORAGE_FACTOR = 16.0  # a faithful graph's error, in units of one random float32 storage of its constants


def fidelity_bound(noise32: float, scale: float, storage: float) -> float:
    """How far a faithful graph's float64 value may be from PyTorch's float64 value, given PyTorch
    fp32's max error on it (``noise32``), its largest magnitude and the storage effect."""
    floor = max(noise32, FLOOR_ULPS * FP32_EPS * scale, float(np.finfo(np.float64).tiny))
    return STORAGE_FACTOR * storage + FP64_SHARE * floor


@dataclass(frozen=True)
class FidelityComparison:
    """One value (an output, or the logits behind a discrete op) on one input case."""

    value: str
    case: str
    error: float  # max |graph fp64 - PyTorch fp64|
    bound: float
    noise32: float  # max |PyTorch fp32 - PyTorch fp64|
    storage: float  # max effect of float32 storage of the graph's derived constants
    nonfinite: int = 0  # values NaN/Inf on one side only

    @property
    def passed(self) -> bool:
        return not self.nonfinite and self.error <= self.bound

    @property
    def ratio(self) -> float:
        if self.nonfinite:
            return float("inf")
        return self.error / self.bound if self.bound > 0 else float("inf") if self.error else 0.0

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.nonfinite:
            return (
                f"FAILED | the graph is not the model: {self.value} is NaN/Inf in {self.nonfinite} values where "
                "the other side is finite"
            )
        head = "PASSED | the graph is the model" if self.passed else "FAILED | the graph is not the model"
        return (
            f"{head}: {self.value} (graph fp64 vs PyTorch fp64 {self.error:.2g}; a faithful graph stays below "
            f"{self.bound:.2g}: {self.ratio:.3g}x)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "case": self.case, "error": self.error, "bound": self.bound,
                "ratio": finite_or_name(self.ratio), "noise32": self.noise32, "storage": self.storage,
                "nonfinite": self.nonfinite}  # fmt: skip


def compare_fidelity(
    value: str, case: str, graph64: np.ndarray, torch64: np.ndarray, torch32: np.ndarray, storage: float
) -> FidelityComparison:
    """The rule on one float value: arrays in, a comparison out."""
    graph64, torch64, torch32 = (np.asarray(a, np.float64) for a in (graph64, torch64, torch32))
    one_sided = np.isfinite(graph64) != np.isfinite(torch64)
    same_nonfinite = ~np.isfinite(graph64) & ~np.isfinite(torch64)
    disagreeing = same_nonfinite & ~((np.isnan(graph64) & np.isnan(torch64)) | (graph64 == torch64))
    finite = np.isfinite(graph64) & np.isfinite(torch64)
    error = float(np.abs(graph64 - torch64)[finite].max(initial=0.0))
    noisy = finite & np.isfinite(torch32)
    noise32 = float(np.abs(torch32 - torch64)[noisy].max(initial=0.0))
    scale = float(np.abs(torch64[finite]).max(initial=0.0))
    nonfinite = int(np.count_nonzero(one_sided | disagreeing))
    return FidelityComparison(value, case, error, fidelity_bound(noise32, scale, storage), noise32, storage, nonfinite)


def finite_or_name(value: float) -> float | str:
    return value if np.isfinite(value) else str(value)
