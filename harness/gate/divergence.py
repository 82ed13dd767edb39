"""The gate's own "Where it diverges": ``onnx-gate debug`` on the shrunk failing parity case, run
once from ``pytest_sessionfinish`` into the run's report.

Its cost is bounded: one case (the first that failed), and only for models and inputs under the
limits below, which keep it to seconds and a few hundred MB on the default model. It never fails
the gate: anything it cannot do becomes a one-line reason in gate.json's ``divergence`` entry.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.errors import first_line
from harness.core.inputs import describe_case
from harness.debug.diagnose import DebugRequest, diagnose
from harness.debug.report import headline, write_all

if TYPE_CHECKING:
    from harness.debug.diagnose import DebugResult
    from harness.gate.session import GateSession

# Above these the section is skipped with the reason; `onnx-gate debug` has no limit.
MAX_PARAMETERS = 100_000_000
MAX_INPUT_ELEMENTS = 1 << 20  # over all inputs of the case: what the per-module capture scales with


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _first_line(exc: BaseException) -> str:
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _json_number(value: float | None) -> float | str | None:
    """JSON has no Inf (a NaN/Inf divergence has an infinite ratio): written as text."""
    import math

    return value if value is None or math.isfinite(value) else str(value)


def _found(result: DebugResult) -> dict[str, Any]:
    used = result.production_verdict if result.fusion_only and result.production_verdict else result.verdict
    row = used.culprit or used.suspect
    status = "culprit" if used.culprit else "suspect" if used.suspect else "unattributed"
    culprit = None
    if row is not None:
        culprit = {
            "module": row.module, "class": row.cls, "source": row.source, "onnx_ops": row.ops,
            "max_abs": row.max_abs, "floor": row.floor, "ratio": _json_number(row.ratio),
            "nonfinite_values": row.nonfinite,
            "isolated_ratio": _json_number(result.isolation.ratio) if result.isolation else None,
        }  # fmt: skip
    return {
        "status": status, "culprit": culprit, "fusion_only": result.fusion_only,
        "aligned_modules": len(result.alignment.aligned), "named_modules": result.named_modules,
        "headline": headline(result, unaligned_at="in debug.md"),
    }  # fmt: skip


def _diagnose(gate: GateSession, root: Path) -> dict[str, Any]:
    case = gate.parity.failure_case
    if case is None:
        return {"status": "skipped", "reason": "no parity case failed"}
    entry: dict[str, Any] = {"case": describe_case(case)}
    if gate.artifact is None:
        reason = f"the ONNX artifact is invalid ({gate.artifact_error})"
        return entry | {"status": "skipped", "reason": reason}
    parameters = sum(p.numel() for p in gate.model.parameters())
    feeds = case.materialize(gate.config)
    elements = sum(int(array.size) for array in feeds.values())
    if parameters > MAX_PARAMETERS:
        reason = f"the model has {parameters:,} parameters, over the in-gate limit of {MAX_PARAMETERS:,}"
        return entry | {"status": "skipped", "reason": reason}
    if elements > MAX_INPUT_ELEMENTS:
        reason = (
            f"the failing case has {elements:,} input elements, over the in-gate limit of "
            f"{MAX_INPUT_ELEMENTS:,}"
        )
        return entry | {"status": "skipped", "reason": reason}
    request = DebugRequest(gate.config, gate.artifact.path, feeds, entry["case"], root)
    result = diagnose(request, gate.model)
    written = write_all(result, gate.report_dir)
    return entry | _found(result) | {"files": [path.name for path in written]}


def where_it_diverges(gate: GateSession, *, root: Path) -> dict[str, Any]:
    """gate.json's ``divergence`` entry: the culprit module on the shrunk failing parity case, or
    why there is none; with what it cost. Never raises for a debug failure."""
    started, rss_before = time.perf_counter(), _peak_rss_mb()
    try:
        entry = _diagnose(gate, root)
    except Exception as exc:  # a debug failure must not cost the gate its report
        entry = {"status": "error", "reason": f"debug failed: {_first_line(exc)}"}
    peak = _peak_rss_mb()
    return entry | {
        "cost": {
            "seconds": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(peak),
            "peak_rss_growth_mb": round(peak - rss_before),
        },
        "limits": {"cases": 1, "max_parameters": MAX_PARAMETERS, "max_input_elements": MAX_INPUT_ELEMENTS},
    }


def summary_section(entry: dict[str, Any], run_id: str) -> str:
    """summary.md's "Where it diverges", from gate.json's ``divergence`` entry."""
    lines = ["## Where it diverges", ""]
    if entry.get("status") in ("skipped", "error"):
        reason = entry.get("reason")
        lines.append(f"Not computed: {reason}. `onnx-gate debug --from-report {run_id}` runs it.")
    else:
        lines += [f"On the shrunk failing parity case, {entry.get('case')}:", ""]
        lines += [f"- {line}" for line in entry.get("headline", [])]
        replay = "test_culprit_replay.py" in entry.get("files", [])
        where = " and the replay bundle (`pytest test_culprit_replay.py`) beside it." if replay else "."
        lines += ["", f"The table of every module is in `debug.md`{where}"]
    cost, limits = entry.get("cost", {}), entry.get("limits", {})
    lines += ["", (
        f"Cost: {cost.get('seconds')} s, peak RSS {cost.get('peak_rss_mb')} MB "
        f"(+{cost.get('peak_rss_growth_mb')} MB). Limits: the shrunk failing case only, models up to "
        f"{limits.get('max_parameters', 0):,} parameters, cases up to "
        f"{limits.get('max_input_elements', 0):,} input elements."
    )]  # fmt: skip
    return "\n".join(lines)
