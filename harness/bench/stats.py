"""Whether a benchmark changed between two runs: a bootstrap confidence interval for the change,
and an effect-size floor.

The change is a ratio of medians: head median / base median for one benchmark's latency, and
head speedup / base speedup for a speedup ratio (itself PyTorch median / ONNX Runtime median,
within one run). The interval comes from resampling each run's per-round samples with replacement
(percentile bootstrap, a fixed seed so that a report reproduces). One rule gives every verdict:

- ``regressed`` when the whole interval lies on the worse side of "no change" and the point
  estimate is worse by at least the floor;
- ``improved`` likewise on the better side;
- ``no detectable change`` otherwise: the interval includes no change, or the change is real
  but smaller than the floor;
- ``noisy: runs not comparable`` for a speedup that would count as a change while a run's own
  speedup interval (from its own rounds) reaches further from its median than the floor, and the
  two runs' reaches together (on a log scale) are as wide as the change: rounds that disagree
  that much within a run cannot support that verdict, so none is called.

Medians, not means: a few rounds interrupted by another process on a shared runner move a mean
far and a median little. The interval says how far the median itself could move from the rounds
alone; a run-wide slowdown of the machine (another job on the same cores) is not in the rounds,
so absolute latencies of two runs are judged only when the caller says they are comparable,
while the speedup ratio, measured within one run, mostly cancels it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

REGRESSED = "regressed"
IMPROVED = "improved"
NO_CHANGE = "no detectable change"
NOISY = "noisy: runs not comparable"
RESAMPLES = 4000
SEED = 20


@dataclass(frozen=True)
class Effect:
    """The change of one figure between two runs, with its interval and verdict."""

    name: str  # "cpu/onnxruntime/batch1" or "speedup cpu/batch1"
    kind: str  # "latency" (lower is better) or "speedup" (higher is better)
    base: float  # the base run's median (s) or ratio
    head: float
    change: float  # head / base - 1
    low: float | None  # the (1 - significance) interval of ``change``; None without samples
    high: float | None
    verdict: str
    floor: float
    significance: float
    note: str = ""

    @property
    def regressed(self) -> bool:
        return self.verdict == REGRESSED

    @property
    def changed(self) -> bool:
        return self.verdict in (REGRESSED, IMPROVED)

    @property
    def noisy(self) -> bool:
        return self.verdict == NOISY

    @property
    def interval(self) -> str:
        if self.low is None or self.high is None:
            return "no interval: the runs kept no per-round samples"
        return f"{1 - self.significance:.0%} CI [{self.low:+.1%}, {self.high:+.1%}]"

    def figures(self) -> tuple[str, str]:
        if self.kind == "speedup":
            return f"{self.base:.2f}x", f"{self.head:.2f}x"
        return f"{self.base * 1e3:.2f} ms", f"{self.head * 1e3:.2f} ms"

    def __str__(self) -> str:
        before, after = self.figures()
        text = f"{self.verdict.upper()} | {self.name}: {before} -> {after} ({self.change:+.1%}, {self.interval})"
        return text + (f"; {self.note}" if self.note else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "interval_text": self.interval}


def judge(change: float, low: float | None, high: float | None, *, kind: str, floor: float) -> str:
    """The verdict from the point estimate and the interval of ``change`` (see the module doc)."""
    if low is None or high is None:
        # No samples (a benchmark.json from before they were kept): the floor alone decides.
        low = high = change
    # In units where positive is worse: a latency that grew, a speedup that fell.
    if kind == "latency":
        worse, worse_low, worse_high = change, low, high
    else:
        worse, worse_low, worse_high = -change, -high, -low
    if worse_low > 0 and worse >= floor:
        return REGRESSED
    if worse_high < 0 and -worse >= floor:
        return IMPROVED
    return NO_CHANGE


def _resampled_medians(samples: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    values = np.asarray(samples, dtype=float)
    picks = rng.integers(0, len(values), size=(RESAMPLES, len(values)))
    return np.median(values[picks], axis=1)


def _interval(resampled_change: np.ndarray, significance: float) -> tuple[float, float]:
    low, high = np.quantile(resampled_change, [significance / 2, 1 - significance / 2])
    return float(low), float(high)


def latency_effect(name: str, base: Sequence[float], head: Sequence[float], *, floor: float,
                   significance: float, note: str = "") -> Effect:
    """The change of one benchmark's median latency, base -> head (seconds per call)."""
    base_median, head_median = float(np.median(base)), float(np.median(head))
    change = head_median / base_median - 1
    low = high = None
    if min(len(base), len(head)) >= 2:
        rng = np.random.default_rng(SEED)
        resampled = _resampled_medians(head, rng) / _resampled_medians(base, rng) - 1
        low, high = _interval(resampled, significance)
    verdict = judge(change, low, high, kind="latency", floor=floor)
    return Effect(name, "latency", base_median, head_median, change, low, high, verdict, floor, significance, note)


def speedup_effect(name: str, base: tuple[Sequence[float], Sequence[float]],
                   head: tuple[Sequence[float], Sequence[float]], *, floor: float, significance: float) -> Effect:
    """The change of a speedup ratio; ``base`` and ``head`` are (PyTorch samples, ONNX Runtime samples)."""
    base_ratio = float(np.median(base[0]) / np.median(base[1]))
    head_ratio = float(np.median(head[0]) / np.median(head[1]))
    change = head_ratio / base_ratio - 1
    low = high = None
    if min(len(s) for s in (*base, *head)) >= 2:
        rng = np.random.default_rng(SEED)
        base_resampled = _resampled_medians(base[0], rng) / _resampled_medians(base[1], rng)
        head_resampled = _resampled_medians(head[0], rng) / _resampled_medians(head[1], rng)
        low, high = _interval(head_resampled / base_resampled - 1, significance)
    verdict = judge(change, low, high, kind="speedup", floor=floor)
    note = ""
    if verdict != NO_CHANGE and low is not None:
        (base_low, base_high), (head_low, head_high) = (ratio_interval(*run, significance) for run in (base, head))
        spreads = {"base": max(base_high / base_ratio - 1, 1 - base_low / base_ratio),
                   "head": max(head_high / head_ratio - 1, 1 - head_low / head_ratio)}
        # On a log scale, so that a halving and a doubling weigh alike.
        together = sum(math.log1p(spread) for spread in spreads.values())
        if max(spreads.values()) > floor and abs(math.log1p(change)) <= together:
            verdict = NOISY
            note = ("each run's own speedup interval reaches " + ", ".join(f"±{v:.0%} ({k})" for k, v in spreads.items())
                    + f" from its median: beyond the {floor:.0%} floor, and together as wide as the change")
    return Effect(name, "speedup", base_ratio, head_ratio, change, low, high, verdict, floor, significance, note)


def ratio_effect_without_samples(name: str, base_ratio: float, head_ratio: float, *, floor: float,
                                 significance: float) -> Effect:
    change = head_ratio / base_ratio - 1
    verdict = judge(change, None, None, kind="speedup", floor=floor)
    return Effect(name, "speedup", base_ratio, head_ratio, change, None, None, verdict, floor, significance)


def ratio_interval(pytorch: Sequence[float], ort: Sequence[float], significance: float) -> tuple[float, float]:
    """The interval of one run's speedup ratio (PyTorch median / ONNX Runtime median)."""
    if min(len(pytorch), len(ort)) < 2:
        ratio = float(np.median(pytorch) / np.median(ort))
        return ratio, ratio
    rng = np.random.default_rng(SEED)
    return _interval(_resampled_medians(pytorch, rng) / _resampled_medians(ort, rng), significance)
