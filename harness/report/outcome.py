"""What a finished gate session found, as one frozen value: built once at the session's end from
what the checks recorded, and read by everything that comes after: gate.json, summary.md, the
terminal summary, the publish decision and the Python API's result.

The verdict rule lives here and only here: a check counts when it ran and passed; the gate passes
when every required check does and pytest exited 0. A release asks the same of the release checks
(the required ones plus the CPU latency and its budgets, which a gate without benchmarks lacks).
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness.candidates.report import candidates_section
from harness.core.ledger import Verdict
from harness.report.bench import gate_bench_section

if TYPE_CHECKING:
    from harness.bench.measure import LatencyRecord
    from harness.core.inputs import InputCase
    from harness.core.publish_outcome import PublishOutcome
    from harness.gate.session import GateSession
    from harness.runtime.export import ArtifactInfo


@dataclass(frozen=True)
class GateOutcome:
    run_id: str
    report_dir: Path
    exit_status: int
    started: float  # time.time() at the session's start
    hypothesis_profile: str
    checks: Mapping[str, Mapping[str, Any]]  # the ledger: status, tests and messages per check
    required_checks: tuple[str, ...]
    release_checks: tuple[str, ...]
    artifact: ArtifactInfo | None
    artifact_error: str | None
    artifact_cache: Mapping[str, Any] | None
    config: Mapping[str, Any]  # GateConfig.summary()
    parity: Mapping[str, Any]  # gate.json's "parity" section
    parity_failures: tuple[str, ...]
    parity_failure_case: InputCase | None
    parity_errors: Mapping[str, tuple[float, ...]]  # per float output, each example's max abs error
    latency: tuple[LatencyRecord, ...]
    benchmarks: Mapping[str, Any] | None  # gate.json's "benchmarks" section, when latency was measured
    candidates: Mapping[str, Any] | None
    execution: Mapping[str, Any] | None
    baseline: Mapping[str, Any] | None
    divergence: Mapping[str, Any] | None
    machine: Mapping[str, str]
    publish: PublishOutcome | None = None

    # --- the one verdict rule --------------------------------------------------------------

    def unmet(self, checks: tuple[str, ...]) -> list[tuple[str, str]]:
        """Each of ``checks`` that did not run and pass, with its status."""
        statuses = [(check, self.checks[check]["status"] if check in self.checks else "not run") for check in checks]
        return [(check, status) for check, status in statuses if status != "passed"]

    @property
    def verdict(self) -> Verdict:
        reasons = [f"{check} {status}" for check, status in self.unmet(self.required_checks)]
        if self.exit_status != 0 and not reasons:
            reasons.append(f"pytest exited with status {self.exit_status}")
        return Verdict(not reasons, tuple(reasons))

    def release_refusal(self) -> str | None:
        """Why this session may not publish, or None. Narrowed sessions name what did not run."""
        unmet = self.unmet(self.release_checks)
        if unmet:
            return "not every required check ran and passed: " + ", ".join(f"{c} ({s})" for c, s in unmet)
        if self.exit_status != 0:
            return f"the session did not pass (exit status {self.exit_status})"
        if self.artifact is None:
            return "there is no verified artifact"
        return None

    @property
    def passed(self) -> bool:
        """The gate passed and, where publishing was asked for, the model was published."""
        return bool(self.verdict) and self.exit_status == 0 and (self.publish is None or bool(self.publish))

    def published(self, publish: PublishOutcome) -> GateOutcome:
        """This outcome with the publish step's own outcome added."""
        return dataclasses.replace(self, publish=publish)


def build_outcome(
    gate: GateSession, *, exit_status: int, hypothesis_profile: str, publishing: bool = False,
    execution: Mapping[str, Any] | None = None, divergence: Mapping[str, Any] | None = None,
) -> GateOutcome:
    """Read what ``gate`` recorded into one GateOutcome. ``publishing``: the release checks are
    listed among the checks, as the publish decision reads them."""
    required, release = gate.required_checks, gate.release_checks
    for check in (*required, *(release if publishing else ())):
        gate.ledger.record_for(check)  # a required check that never reported is listed "not run"
    checks = gate.ledger.to_dict()
    exit_status = int(exit_status)
    without_candidates = GateOutcome(
        run_id=gate.run_id, report_dir=gate.report_dir, exit_status=exit_status, started=gate.started,
        hypothesis_profile=hypothesis_profile, checks=checks, required_checks=required, release_checks=release,
        artifact=gate.artifact, artifact_error=gate.artifact_error,
        artifact_cache=gate.artifact_cache.to_dict() if gate.artifact_cache else None,
        config=gate.config.summary(), parity=gate.parity_summary(), parity_failures=tuple(gate.parity.failures),
        parity_failure_case=gate.parity.failure_case,
        parity_errors={
            name: tuple(errors.max_abs) for name, errors in gate.parity.errors.items()
            if errors.max_abs and not errors.discrete_values  # counts of differing values, not errors
        },  # fmt: skip
        latency=tuple(gate.latency),
        benchmarks=gate_bench_section(gate, samples=False) if gate.latency or gate.decode_latency else None,
        candidates=None, execution=execution, baseline=gate.recorded("baseline"), divergence=divergence,
        machine={"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor()},
    )  # fmt: skip
    # The candidates table shows the plain export's verdict beside the candidates'.
    return dataclasses.replace(without_candidates, candidates=candidates_section(gate, without_candidates.verdict))
