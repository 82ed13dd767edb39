"""`onnx-gate compare`: two benchmark runs, one verdict per benchmark and per speedup ratio.

Each verdict comes from harness.bench.stats (a bootstrap interval for the ratio of medians plus an
effect-size floor). The exit status follows the speedup ratios (PyTorch median / ONNX Runtime
median, same run, same machine): they mostly cancel the machine and its load. Absolute latencies
count only where config asks for it and both runs name the same machine; elsewhere they are shown
and said to be informational.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.bench.stats import (
    REGRESSED,
    Effect,
    latency_effect,
    ratio_effect_without_samples,
    speedup_effect,
)
from harness.bench.load import describe_load
from harness.core.errors import GateError

HISTORY_DIR = "history"
MACHINE_KEYS = ("cpu", "cores_available", "gpu")


@dataclass(frozen=True)
class RunBench:
    """One run's benchmark figures, as its benchmark.json recorded them."""

    run_id: str
    path: Path
    medians: dict[str, float]  # key -> seconds
    speedups: dict[str, float]  # "cpu/batch1" -> ratio
    samples: dict[str, tuple[float, ...]]  # key -> per-round seconds; empty for files from before they were kept
    machine: dict[str, Any]
    # What the machine was doing while each benchmark ran (harness/bench/load.py), by key.
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def busiest_load(self) -> str:
        """The load record of the benchmark measured on the busiest machine, in words."""
        if not self.loads:
            return "not recorded"
        return describe_load(max(self.loads.values(), key=lambda load: load.get("load_1min_after") or 0.0))

    def speedup_samples(self, name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(PyTorch samples, ONNX Runtime samples) behind the speedup ``name`` ("cpu/batch1", or a
        per-token one, "cpu/batch1/decode@512")."""
        device, _, rest = name.partition("/")
        pair = (self.samples.get(f"{device}/pytorch/{rest}"), self.samples.get(f"{device}/onnxruntime/{rest}"))
        return (pair[0], pair[1]) if pair[0] and pair[1] else None


def load_run(path: Path) -> RunBench:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        section = document["onnx_gate"]
        # A stateful model's per-token records (decode@512, ...) are compared like any other.
        records = [*section["records"], *section.get("decode_records", [])]
        medians = {r["key"]: float(r["median"]) for r in records}
        samples = {r["key"]: tuple(float(s) for s in r["samples"]) for r in records if r.get("samples")}
        ratios = {f"{device}/batch{b}": float(v) for device, per in section["speedups"].items() for b, v in per.items()}
        ratios.update({name: float(v) for name, v in section.get("decode_speedups", {}).items()})  # "cpu/batch1/decode@512"
        loads = {r["key"]: r["extra"]["load"] for r in records if (r.get("extra") or {}).get("load")}
        return RunBench(section.get("run_id", path.stem), path, medians, ratios, samples, section.get("machine") or {}, loads)
    except FileNotFoundError:
        raise GateError(f"benchmark file {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GateError(f"{str(path)!r} is not an onnx-gate benchmark.json ({type(exc).__name__}: {exc})") from None


def history(report_dir: Path) -> list[Path]:
    return sorted((report_dir / HISTORY_DIR).glob("*.json"))


def resolve_run(report_dir: Path, name: str) -> Path:
    """A run by path, by run id, or by a unique prefix of one."""
    as_path = Path(name)
    if as_path.is_file():
        return as_path
    if (as_path / "benchmark.json").is_file():
        return as_path / "benchmark.json"
    matches = [p for p in history(report_dir) if p.stem.startswith(name)]
    if len(matches) != 1:
        known = ", ".join(p.stem for p in history(report_dir)[-5:]) or "none"
        found = "no run" if not matches else f"{len(matches)} runs"
        raise GateError(f"{found} in {report_dir / HISTORY_DIR} match {name!r}; latest runs: {known}")
    return matches[0]


@dataclass(frozen=True)
class CompareSettings:
    floor: float  # [tool.onnx-gate.bench] max_ratio_regression: the smallest change that counts
    significance: float  # [tool.onnx-gate.bench] significance
    latency_fails: bool  # [tool.onnx-gate.bench] latency_regression_fails


def same_machine(a: RunBench, b: RunBench) -> bool:
    return bool(a.machine) and all(a.machine.get(k) == b.machine.get(k) for k in MACHINE_KEYS)


@dataclass(frozen=True)
class Comparison:
    base: RunBench
    head: RunBench
    settings: CompareSettings
    speedups: tuple[Effect, ...]
    latencies: tuple[Effect, ...]
    only_in: tuple[str, ...]  # "cpu/pytorch/batch8: only in head"

    @property
    def latency_gates(self) -> bool:
        return self.settings.latency_fails and same_machine(self.base, self.head)

    @property
    def regressions(self) -> list[Effect]:
        counted = list(self.speedups) + (list(self.latencies) if self.latency_gates else [])
        return [e for e in counted if e.regressed]

    @property
    def verdict_line(self) -> str:
        problems = self.regressions
        if problems:
            return f"REGRESSED | {len(problems)} of the judged figures regressed: " + "; ".join(
                f"{e.name} {e.change:+.1%} ({e.interval})" for e in problems)
        changed = [e for e in self.speedups if e.changed]
        noisy = [e for e in self.speedups if e.noisy]
        return (f"OK | no speedup ratio regressed ({len(self.speedups)} judged, floor {self.settings.floor:.0%}, "
                f"significance {self.settings.significance:g})" + (f"; {len(changed)} improved" if changed else "")
                + (f"; {len(noisy)} noisy: runs not comparable" if noisy else ""))

    @property
    def latency_scope(self) -> str:
        if self.latency_gates:
            return "judged (latency_regression_fails = true, same machine)"
        if self.settings.latency_fails:
            return "informational: the two runs name different machines"
        return ("informational: a run-wide slowdown of a shared machine moves absolute times "
                "(latency_regression_fails = true judges them on a dedicated machine)")

    def lines(self) -> list[str]:
        out = [self.verdict_line, f"compare {self.base.run_id} (base) -> {self.head.run_id} (head)",
               f"  machine while measuring: base {self.base.busiest_load}; head {self.head.busiest_load}"]
        out += [f"  {e}" for e in self.speedups]
        out.append(f"  latency, {self.latency_scope}:")
        out += [f"    {e}" for e in self.latencies]
        out += [f"    {line}" for line in self.only_in]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": REGRESSED if self.regressions else "ok",
            "verdict_line": self.verdict_line,
            "base": self.base.run_id, "head": self.head.run_id,
            "load": {"base": self.base.loads, "head": self.head.loads},
            "settings": {"floor": self.settings.floor, "significance": self.settings.significance,
                         "latency_regression_fails": self.settings.latency_fails,
                         "latency_judged": self.latency_gates},
            "method": "percentile bootstrap of the ratio of medians (per-round samples resampled within each run), "
                      "plus an effect-size floor",
            "speedups": [e.to_dict() for e in self.speedups],
            "latencies": [e.to_dict() for e in self.latencies],
            "only_in": list(self.only_in),
        }  # fmt: skip

    def markdown(self) -> str:
        """Fits a pull-request comment: the verdict, then only what changed, then the rest folded."""
        icon = "❌" if self.regressions else "✅"
        lines = [f"### {icon} onnx-gate benchmarks: {self.verdict_line}", "",
                 f"`{self.base.run_id}` (base) → `{self.head.run_id}` (head)", ""]
        changed = [e for e in (*self.speedups, *self.latencies) if e.changed]
        if changed:
            lines += ["**What changed**", ""] + _table(changed, latency_gates=self.latency_gates) + [""]
        else:
            lines += ["Nothing changed detectably.", ""]
        noisy = [e for e in self.speedups if e.noisy]
        if noisy:
            lines += ["**Noisy: runs not comparable**", ""] + [f"- {e}" for e in noisy] + [""]
        lines += ["<details><summary>All figures, how they are judged</summary>", "",
                  "Speedup = PyTorch median / ONNX Runtime median in the same run (higher is better). "
                  f"Each change is head / base − 1 of the medians with a {1 - self.settings.significance:.0%} "
                  "bootstrap interval from the per-round samples; a change counts when its interval excludes 0 "
                  f"and it is at least {self.settings.floor:.0%}. Latency: {self.latency_scope}.", ""]
        lines += _table([*self.speedups, *self.latencies], latency_gates=self.latency_gates)
        lines += [f"- {line}" for line in self.only_in]
        lines += ["", "</details>"]
        return "\n".join(lines) + "\n"


def _table(effects: Sequence[Effect], *, latency_gates: bool) -> list[str]:
    rows = ["| figure | base | head | change | interval | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for e in effects:
        before, after = e.figures()
        interval = "-" if e.low is None else f"[{e.low:+.1%}, {e.high:+.1%}]"
        shown = e.verdict + (" (informational)" if e.kind == "latency" and e.changed and not latency_gates else "")
        rows.append(f"| {e.name} | {before} | {after} | {e.change:+.1%} | {interval} | {shown} |")
    return rows


def _tokens_per_second(key: str, base: RunBench, head: RunBench) -> str:
    """For a per-token record ("cpu/onnxruntime/batch1/decode@512"), the tokens per second a user
    sees, base -> head; "" for any other."""
    parts = key.split("/")
    if len(parts) != 4 or not parts[3].startswith("decode@") or not parts[2].startswith("batch"):
        return ""
    rows = int(parts[2].removeprefix("batch"))
    return f"{rows / base.medians[key]:.0f} -> {rows / head.medians[key]:.0f} tokens/s"


def compare(base: RunBench, head: RunBench, settings: CompareSettings, *, latencies: bool = True) -> Comparison:
    """Every speedup ratio both runs have, and (unless ``latencies`` is False) every benchmark."""
    judged = {"floor": settings.floor, "significance": settings.significance}
    speedup_effects = []
    for name in sorted(set(base.speedups) & set(head.speedups)):
        base_pair, head_pair = base.speedup_samples(name), head.speedup_samples(name)
        if base_pair and head_pair:
            speedup_effects.append(speedup_effect(f"speedup {name}", base_pair, head_pair, **judged))
        else:
            speedup_effects.append(ratio_effect_without_samples(
                f"speedup {name}", base.speedups[name], head.speedups[name], **judged))
    latency_effects, only_in = [], []
    for key in sorted(set(base.medians) | set(head.medians)) if latencies else ():
        if key not in base.medians or key not in head.medians:
            only_in.append(f"{key}: only in {'head' if key in head.medians else 'base'}")
            continue
        base_samples = base.samples.get(key) or (base.medians[key],)
        head_samples = head.samples.get(key) or (head.medians[key],)
        latency_effects.append(latency_effect(key, base_samples, head_samples, **judged, note=_tokens_per_second(key, base, head)))
    return Comparison(base, head, settings, tuple(speedup_effects), tuple(latency_effects), tuple(only_in))
