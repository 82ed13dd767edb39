"""`onnx-gate bench-results`: one run's benchmark figures in a format benchmark dashboards read.

``customSmallerIsBetter`` is github-action-benchmark's generic format: a JSON list of
``{"name", "unit", "value", "range", "extra"}``. Every entry must be smaller-is-better, so the
speedup ratio is written inverted, as ONNX Runtime time / PyTorch time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.bench.compare import RunBench, load_run
from harness.bench.stats import ratio_interval

FORMATS = ("customSmallerIsBetter",)


def custom_smaller_is_better(run: RunBench, significance: float) -> list[dict[str, Any]]:
    entries = []
    for key, median in sorted(run.medians.items()):
        samples = run.samples.get(key, ())
        extra = f"run {run.run_id}; {len(samples)} rounds" if samples else f"run {run.run_id}"
        entries.append({"name": f"{key} median latency", "unit": "ms", "value": round(median * 1e3, 4), "extra": extra})
    for name, ratio in sorted(run.speedups.items()):
        pair = run.speedup_samples(name)
        entry = {"name": f"{name} ONNX Runtime time / PyTorch time", "unit": "ratio", "value": round(1 / ratio, 4),
                 "extra": f"run {run.run_id}; speedup {ratio:.2f}x"}
        if pair:
            low, high = ratio_interval(*pair, significance)
            entry["range"] = f"{1 / high:.3f}..{1 / low:.3f} ({1 - significance:.0%} CI)"
        entries.append(entry)
    return entries


def write_results(path: Path, output: Path, fmt: str, significance: float) -> Path:
    if fmt not in FORMATS:  # argparse checks too; this guards the library call
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    entries = custom_smaller_is_better(load_run(path), significance)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    return output
