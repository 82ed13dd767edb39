"""What publishing a candidate adds to the plain publish: which artifact, and the record of why
it may ship (its tolerance, the evidence it passed) and how to run it (ONNX Runtime options)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.runtime.export import file_sha256

if TYPE_CHECKING:
    from harness.gate.session import GateSession


@dataclass(frozen=True)
class Release:
    path: Path
    sha256: str
    params: dict[str, Any]
    tags: dict[str, str]


def candidate_release(gate: GateSession) -> Release | str:
    """The artifact ``[candidates] publish`` selects, with its record; or why nothing may ship."""
    assert gate.artifact is not None
    candidates = gate.candidates
    chosen, why = candidates.chosen()
    threads = gate.bench_threads
    if chosen is None:
        if candidates.settings.publish == "fastest-passing" and why.startswith("the plain export"):
            record = {"name": "export", "why": why}
            return Release(gate.artifact.path, gate.artifact.sha256, {"candidate": record}, {"candidate": "export"})
        return f"candidates.publish = {candidates.settings.publish!r}: {why}"
    record_ = candidates.records[chosen.name]
    options = chosen.session_options(threads)
    record = {
        "name": chosen.name, "kind": chosen.kind, "precision": chosen.precision, "description": chosen.description,
        "why": why, "tolerance": candidates.describe_tolerance(chosen.name),
        "evidence": {"worst_error_in_tolerance_units": record_.worst_units, "input_cases_judged": record_.judged,
                     "tests_passed": sum(1 for v in record_.tests.values() if v == "passed"),
                     "plain_export_sha256": gate.artifact.sha256},
        "ort_session_options": options,
    }  # fmt: skip
    assert chosen.path is not None
    tags = {"candidate": chosen.name, "candidate_precision": chosen.precision,
            "candidate_tolerance": record["tolerance"][:250], "ort_session_options": json.dumps(options)}
    return Release(chosen.path, file_sha256(chosen.path), {"candidate": record}, tags)
