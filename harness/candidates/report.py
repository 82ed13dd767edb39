"""The candidates table: per candidate the verdict, the worst error in units of its tolerance,
latency and speedup over PyTorch eager per batch, roofline efficiency; the fastest passing
artifact per batch marked."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from harness.candidates.mixed import describe as describe_mixed

if TYPE_CHECKING:
    from harness.core.ledger import Verdict
    from harness.gate.session import GateSession


def candidates_section(gate: GateSession, verdict: Verdict | None = None) -> dict[str, Any] | None:
    if not gate.config.candidates.enabled or not gate.candidates_in_use:
        return None
    candidates = gate.candidates
    section = candidates.table(verdict)
    chosen, why = candidates.chosen()
    section["chosen"] = {"name": chosen.name if chosen else None, "why": why}
    return section


def _units(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2f}"


def candidates_markdown(section: dict[str, Any]) -> str:
    batches = section["batches"]
    head = "| candidate | precision | verdict | worst error / tolerance | tolerance |"
    rule = "| --- | --- | --- | --- | --- |"
    for batch in batches:
        head += f" batch {batch}: ms | speedup vs PyTorch | roofline eff. |"
        rule += " --- | --- | --- |"
    pytorch = ", ".join(f"batch {b}: {ms:.2f} ms" for b, ms in section["pytorch_ms"].items())
    lines = ["## Candidates", "",
             "Each candidate ran the export's checks at the tolerance its precision calls for; latencies were "
             "measured interleaved in one loop (short blocks per artifact) with PyTorch eager and the plain export "
             f"(PyTorch eager: {pytorch or 'not measured'}), with ONNX Runtime's thread spinning off, as a published "
             "candidate runs: sessions idle between blocks would otherwise spin against the one timed, so the "
             "export's row here is slower than in the latency table above. **Bold**: the fastest passing artifact per batch. "
             "A worst error above 1.00 exceeds the tolerance. Roofline efficiency uses the fp32 sgemm peak for every "
             "row: int8 and fp16 kernels have higher peaks, so their compute-bound figures can pass 100%.", "", head, rule]
    for row in section["rows"]:
        cells = [row["name"], row["precision"], row["verdict"], _units(row["worst_units"]), row["tolerance"]]
        for batch in batches:
            measured = row["batches"].get(str(batch))
            if measured is None:
                cells += ["-", "-", "-"]
                continue
            ms = f"{measured['median_ms']:.2f}"
            speed = f"{measured['speedup_vs_pytorch']:.2f}x" if measured["speedup_vs_pytorch"] else "-"
            eff = measured["roofline_efficiency"]
            roof = "-" if eff is None or math.isnan(eff) else f"{eff:.0%} ({measured['bound']})"
            if measured["fastest_passing"]:
                ms, speed = f"**{ms}**", f"**{speed}**"
            cells += [ms, speed, roof]
        lines.append("| " + " | ".join(cells) + " |")
    searched = [row for row in section["rows"] if row.get("notes", {}).get("kept_fp32") is not None]
    if searched:
        lines += ["", "Mixed precision chosen by attribution (harness/candidates/mixed.py):", ""]
        lines += [f"- {row['name']}: {describe_mixed(row['notes'])}" for row in searched]
    blocked = [row for row in section["rows"] if row["verdict"] != "passed" and row["why"]]
    if blocked:
        lines += ["", "Not passing:", ""] + [f"- {row['name']}: {row['why']}" for row in blocked]
    chosen = section.get("chosen") or {}
    if section.get("publish"):
        why = chosen.get("why", "")
        if chosen.get("name"):
            target = f"publishes candidate {chosen['name']}"
        elif why.startswith("the plain export"):
            target = "publishes the plain export"
        else:
            target = "publishes nothing"
        lines += ["", f"Publish setting {section['publish']!r} {target}: {why}."]
    return "\n".join(lines)
