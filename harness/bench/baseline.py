"""The production baseline: the registered model the candidate would replace, timed beside it in the
same session (same inputs, same threads, rounds alternating), and how far its outputs drift.

Two runs on two machines cannot say whether a candidate is slower than production; one session that
alternates the two models' rounds can: whatever slows the machine slows both alike, so the ratio of
medians holds on any machine. The drift is a report, not a verdict: retrained weights differ.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np


def alternate(first: Callable[[], Any], second: Callable[[], Any], rounds: int) -> tuple[list[float], list[float]]:
    """Time ``first`` and ``second`` in alternating rounds, swapping which goes first each round so
    that neither always runs on caches the other warmed."""
    import time

    times: tuple[list[float], list[float]] = ([], [])
    for index in range(rounds):
        order = ((0, first), (1, second)) if index % 2 == 0 else ((1, second), (0, first))
        for slot, function in order:
            started = time.perf_counter()
            function()
            times[slot].append(time.perf_counter() - started)
    return times


def drift(candidate: Mapping[str, np.ndarray], production: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per output: max and mean absolute difference, candidate against production."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in candidate.items():
        other = production.get(name)
        if other is None:
            out[name] = {"note": "production has no such output"}
        elif np.shape(other) != np.shape(value):
            out[name] = {"note": f"shapes differ: {np.shape(value)} vs production {np.shape(other)}"}
        else:
            diff = np.abs(np.asarray(value, dtype=np.float64) - np.asarray(other, dtype=np.float64))
            out[name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    return out


def merge_drift(per_case: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The worst max and the average mean over the cases."""
    merged: dict[str, dict[str, Any]] = {}
    for name in per_case[0] if per_case else {}:
        values = [case[name] for case in per_case]
        if any("note" in v for v in values):
            merged[name] = next(v for v in values if "note" in v)
        else:
            merged[name] = {"max_abs": max(v["max_abs"] for v in values),
                            "mean_abs": float(np.mean([v["mean_abs"] for v in values]))}
    return merged


def slowdown_budget(rows: Sequence[Mapping[str, Any]], budget: float | None) -> str | None:
    """``max_slowdown_vs_baseline``: no batch's candidate / production median above 1 + budget.
    The point ratio decides, as for the other latency budgets; its interval is shown."""
    if budget is None:
        return None
    misses = [f"batch {r['batch']}: candidate is {r['ratio']:.3f}x production (interval "
              f"[{r['ratio_low']:.3f}, {r['ratio_high']:.3f}]), more than the allowed {1 + budget:.2f}x"
              for r in rows if r["ratio"] > 1 + budget]
    if misses:
        return f"FAILED | max_slowdown_vs_baseline {budget:g}: " + "; ".join(misses)
    return f"PASSED | max_slowdown_vs_baseline {budget:g}: no batch slower than {1 + budget:.2f}x production"


def baseline_markdown(section: Mapping[str, Any]) -> str:
    lines = ["## Against production", ""]
    if section.get("missing"):
        return "\n".join(lines + [f"No baseline: {section['missing']} (a first release?). Nothing was compared."])
    lines += [f"Baseline: {section['baseline']}; candidate / production median latency, rounds alternating in "
              f"this session, same inputs and {section['threads']} threads; {section['confidence']} bootstrap "
              "intervals.", "", "| batch | candidate ms | production ms | candidate / production | interval | rounds |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for row in section["latency"]:
        lines.append(f"| {row['batch']} | {row['candidate_ms']:.2f} | {row['production_ms']:.2f} | "
                     f"{row['ratio']:.3f}x | [{row['ratio_low']:.3f}, {row['ratio_high']:.3f}] | {row['rounds']} |")
    lines += ["", f"Output drift from production on {section['drift_inputs']} (a report, not a verdict):", "",
              "| output | max abs diff | mean abs diff |", "| --- | --- | --- |"]
    for name, value in section["drift"].items():
        if "note" in value:
            lines.append(f"| {name} | {value['note']} | |")
        else:
            lines.append(f"| {name} | {value['max_abs']:.3g} | {value['mean_abs']:.3g} |")
    if section.get("budget"):
        lines += ["", f"Budget: {section['budget']}"]
    lines += ["", f"Cost: {section['seconds']:.1f} s of gate time (download, sessions, timing, drift)."]
    return "\n".join(lines)
