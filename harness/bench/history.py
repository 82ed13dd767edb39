"""`onnx-gate compare`'s files over the runs kept in reports/history/: one comparison written with its
trend, and `--history N`: each speedup ratio over the last N runs, each step judged
against the run before it by the same rule as `compare`, the regressions marked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.bench.compare import (
    HISTORY_DIR,
    CompareSettings,
    Comparison,
    RunBench,
    compare,
    history,
    load_run,
    resolve_run,
)
from harness.bench.stats import ratio_interval
from harness.core.errors import GateError
from harness.core.latest import point_latest
from harness.core.plots import saved_figure

TREND_RUNS = 20  # compare's trend.png: the latest runs; --history N plots more


def load_runs(paths: Sequence[Path]) -> list[RunBench]:
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except GateError:
            continue  # an unreadable old file must not hide the trend of the rest
    return runs


@dataclass(frozen=True)
class Point:
    run_id: str
    ratio: float
    low: float  # the run's own interval for its ratio, from its rounds
    high: float
    verdict: str | None  # against the previous run; None for the first


def trend(runs: Sequence[RunBench], settings: CompareSettings) -> dict[str, list[Point]]:
    """Speedup name -> its points, oldest first."""
    steps = [compare(before, after, settings, latencies=False) for before, after in zip(runs, runs[1:])]
    lines: dict[str, list[Point]] = {}
    for index, run in enumerate(runs):
        verdicts = {e.name.removeprefix("speedup "): e.verdict for e in steps[index - 1].speedups} if index else {}
        for name, ratio in sorted(run.speedups.items()):
            pair = run.speedup_samples(name)
            low, high = ratio_interval(*pair, settings.significance) if pair else (ratio, ratio)
            lines.setdefault(name, []).append(Point(run.run_id, ratio, low, high, verdicts.get(name)))
    return lines


def plot_history(runs: Sequence[RunBench], settings: CompareSettings, path: Path) -> Path | None:
    """Each ratio per run with its interval; a red cross where the step into a run regressed."""
    if not runs:
        return None

    order = {run.run_id: i for i, run in enumerate(runs)}
    with saved_figure(path, figsize=(max(6, len(runs) * 0.8), 4)) as (_, axis):
        for name, points in trend(runs, settings).items():
            xs = [order[p.run_id] for p in points]
            ratios = [p.ratio for p in points]
            errors = [[p.ratio - p.low for p in points], [p.high - p.ratio for p in points]]
            axis.errorbar(xs, ratios, yerr=errors, marker="o", capsize=3, label=name)
            bad = [(order[p.run_id], p.ratio) for p in points if p.verdict == "regressed"]
            if bad:
                axis.scatter(*zip(*bad), marker="x", s=120, color="red", zorder=5)
        axis.scatter([], [], marker="x", s=120, color="red", label="regressed vs the run before")
        axis.set_xticks(range(len(runs)), [run.run_id[:15] for run in runs], rotation=45, ha="right")
        axis.set_ylabel("speedup, PyTorch median / ORT median")
        axis.set_title(f"ONNX Runtime speedup over the last {len(runs)} runs ({1 - settings.significance:.0%} intervals)")
        axis.legend()
    return path


def history_report(report_dir: Path, paths: Sequence[Path], settings: CompareSettings) -> tuple[list[str], Path]:
    """Print lines, and write history.md, history.json and trend.png into reports/compare/history/."""
    runs = load_runs(paths)
    if not runs:
        raise GateError(f"no readable benchmark runs in {report_dir / 'history'}; run `onnx-gate run` first")
    points = trend(runs, settings)
    out_dir = report_dir / "compare" / "history"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_history(runs, settings, out_dir / "trend.png")
    lines = [f"history of {len(runs)} runs, {runs[0].run_id} .. {runs[-1].run_id} (x: regressed against the run before)"]
    for name, series in points.items():
        cells = [f"{p.ratio:.2f}x{' x' if p.verdict == 'regressed' else ''}" for p in series]
        lines.append(f"  speedup {name}: " + ", ".join(cells))
    document: dict[str, Any] = {
        "runs": [run.run_id for run in runs],
        "speedups": {name: [p.__dict__ for p in series] for name, series in points.items()},
    }
    (out_dir / "history.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (out_dir / "history.md").write_text("# Speedup history\n\n" + "\n".join(f"    {line}" for line in lines)
                                        + "\n\n![trend](trend.png)\n", encoding="utf-8")
    return lines, out_dir


def compare_runs(report_dir: Path, base: str | None, head: str | None,
                 settings: CompareSettings) -> tuple[Comparison, Path]:
    """Compare two runs (default: the previous and the latest); write compare.md, compare.json and
    trend.png into reports/compare/<base>__<head>/, which reports/compare/latest then names."""
    runs = history(report_dir)
    needed = (head is None) + (base is None)
    if len(runs) < needed:
        raise GateError(f"need {needed} benchmark run(s) in {report_dir / HISTORY_DIR} to compare, found {len(runs)}; "
                        "run `onnx-gate run` again or name two benchmark.json files")
    head_path = resolve_run(report_dir, head) if head else runs[-1]
    base_path = resolve_run(report_dir, base) if base else runs[-2 if head is None else -1]
    comparison = compare(load_run(base_path), load_run(head_path), settings)
    out_dir = report_dir / "compare" / f"{comparison.base.run_id}__{comparison.head.run_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.md").write_text(comparison.markdown(), encoding="utf-8")
    (out_dir / "compare.json").write_text(json.dumps(comparison.to_dict(), indent=2) + "\n", encoding="utf-8")
    plot_history(load_runs(runs[-TREND_RUNS:]), settings, out_dir / "trend.png")
    point_latest(out_dir)
    return comparison, out_dir
