"""The candidates of one gate run: built once, judged by the gate's checks, measured side by
side; their verdicts, worst errors and latencies feed the table, the reports and publishing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from harness.candidates.build import Candidate, build_candidates
from harness.candidates.judge import (
    AutocastRunner,
    Judgement,
    from_parity,
    judge_budget,
    judge_floor,
)  # fmt: skip
from harness.checks.batch_consistency import check_batch_consistency, whole_and_parts
from harness.checks.parity import check_parity, inputs_in_range, keep_valid_positions
from harness.compare.rule import for_inputs_outside_range
from harness.core.candidate_settings import FASTEST
from harness.core.errors import GateError
from harness.core.inputs import IN_RANGE_FAMILIES, SAMPLES, describe_case, families_for
from harness.core.model_loader import import_callable
from harness.runtime.runners import OrtRunner

if TYPE_CHECKING:

    from harness.bench.measure import LatencyRecord
    from harness.core.inputs import InputCase
    from harness.core.ledger import Verdict
    from harness.gate.session import GateSession

PLAIN = "export"  # the plain export's name in the candidates table


@dataclass
class CandidateRecord:
    """What the checks found about one candidate: each test's outcome, the worst error seen."""

    tests: dict[str, str] = field(default_factory=dict)  # nodeid -> passed / failed / skipped
    problems: list[str] = field(default_factory=list)
    worst_units: float = 0.0
    judged: int = 0  # input cases judged against the tolerance

    @property
    def status(self) -> str:
        values = set(self.tests.values())
        if not values:
            return "not run"
        if "failed" in values:
            return "blocked"
        return "passed" if "passed" in values else "skipped"


class CandidateSet:
    def __init__(self, gate: GateSession) -> None:
        self.gate = gate
        self.settings = gate.config.candidates
        self.records: dict[str, CandidateRecord] = {}
        self.latency: list[LatencyRecord] = []
        self._runners: dict[str, OrtRunner] = {}

    # --- building ----------------------------------------------------------------------------

    @cached_property
    def built(self) -> dict[str, Candidate]:
        gate = self.gate
        if gate.artifact is None or gate.work_dir is None:
            raise GateError(f"no candidates without the plain export ({gate.artifact_error or 'no artifact'})")
        with gate.timing.measure("candidates_build"):
            built = build_candidates(self.settings.build, gate.artifact.path, gate.work_dir / "candidates", gate.config)
        return {c.name: c for c in built}

    def candidate(self, name: str) -> Candidate:
        candidate = self.built[name]
        if not candidate.built:
            raise GateError(f"candidate {name} {candidate.error}")
        return candidate

    def runner(self, name: str) -> OrtRunner:
        if name not in self._runners:
            self._runners[name] = OrtRunner(self.candidate(name).path, *self.gate.io_names())  # type: ignore[arg-type]
        return self._runners[name]

    def new_runner(self, name: str, **options: Any) -> OrtRunner:
        return OrtRunner(self.candidate(name).path, *self.gate.io_names(), **options)  # type: ignore[arg-type]

    def release(self) -> None:
        self._runners.clear()

    # --- tolerance ---------------------------------------------------------------------------

    def tolerance_kind(self, name: str) -> str:
        """"fp32" (the export's parity rule), "budget" (the declared task budget), "floor"
        (PyTorch's own error at the candidate's precision), or "none" (cannot be judged)."""
        precision = self.built[name].precision
        if precision == "fp32":
            return "fp32"
        if self.settings.budget is not None:
            return "budget"
        if precision in ("fp16", "bf16") and self.gate.fp64_runner is not None:
            return "floor"
        return "none"

    def unjudgeable_reason(self, name: str) -> str:
        precision = self.built[name].precision
        if precision == "int8":
            return ("an int8 candidate is judged only against a task budget (PyTorch has no int8 reference to take a "
                    "noise floor from); declare [candidates.budget] with metric, output and limit")
        return (f"the model cannot run in float64, so PyTorch's {precision} error cannot be measured; "
                "declare [candidates.budget] to judge it")

    def describe_tolerance(self, name: str) -> str:
        kind = self.tolerance_kind(name)
        if kind == "fp32":
            return "fp32 noise floor (the export's parity rule)"
        if kind == "budget":
            assert self.settings.budget is not None
            return f"task budget {self.settings.budget.describe()}"
        if kind == "floor":
            factors = {self.gate.config.tolerance_for(o).noise_factor for o in self.gate.config.outputs}
            return f"{max(factors):g}x PyTorch {self.built[name].precision} (autocast) error vs float64"
        return "none: needs a task budget"

    @cached_property
    def custom_metric(self) -> Callable[..., Any] | None:
        budget = self.settings.budget
        if budget is None or ":" not in budget.metric:
            return None

        return import_callable(budget.metric, self.gate.config.search_dirs)

    def _autocast(self, precision: str) -> AutocastRunner:
        key = f"_autocast_{precision}"
        if key not in self.__dict__:
            self.__dict__[key] = AutocastRunner(self.gate.model, *self.gate.io_names(), precision=precision)
        return self.__dict__[key]

    def _floor_factors(self, in_range: bool) -> dict[str, float]:
        tolerances = {o: self.gate.config.tolerance_for(o) for o in self.gate.config.outputs}
        if not in_range:
            tolerances = {o: for_inputs_outside_range(t) for o, t in tolerances.items()}
        return {o: t.noise_factor for o, t in tolerances.items() if t.noise_factor}

    def _budget_for(self, in_range: bool) -> Any:
        from dataclasses import replace

        budget = self.settings.budget
        assert budget is not None
        scale = self.gate.config.tolerance_for(budget.output).out_of_range_scale
        if in_range or scale == 1.0 or budget.higher_is_better:
            return budget
        return replace(budget, limit=budget.limit * scale)

    def parity_families(self, name: str) -> tuple[str, ...]:
        """The input families a candidate's parity is judged on. A task budget means something
        only on the user's data: the configured samples, as they are and perturbed; without
        samples, the families inside the declared range. A pitch error on Gaussian noise or spikes
        outside the range says nothing. Other tolerances follow the export's parity: every family."""
        if self.tolerance_kind(name) != "budget":
            return families_for(self.gate.config)
        return (SAMPLES,) if self.gate.config.samples else IN_RANGE_FAMILIES

    # --- checks ------------------------------------------------------------------------------

    def judge_parity(self, name: str, case: InputCase) -> Judgement:
        """The candidate against PyTorch on ``case``, by its precision's tolerance."""
        kind = self.tolerance_kind(name)
        if kind == "none":
            raise GateError(f"candidate {name} cannot be judged: {self.unjudgeable_reason(name)}")
        runner = self.runner(name)
        if kind == "fp32":
            gate = self.gate
            result = check_parity(case, gate.config, gate.torch_runner, runner, fp64_reference=gate.fp64_reference)
            return self._record(name, from_parity(name, result, self.describe_tolerance(name)))
        feeds = case.materialize(self.gate.config)
        in_range = inputs_in_range(self.gate.config, feeds)
        actual = runner.infer(feeds)
        context = describe_case(case) + ("" if in_range else " [outside the declared input range]")
        if kind == "budget":
            expected = self.gate.torch_runner.infer(feeds)
            judgement = judge_budget(name, self._budget_for(in_range), actual, expected, self.custom_metric, context)
        else:
            exact = self.gate.fp64_reference(feeds)
            if exact is None:
                raise GateError(f"candidate {name}: the float64 reference failed on {context}")
            lowered = self._autocast(self.built[name].precision).infer(feeds)
            # Padded positions of padded_outputs are left out, as the export's parity does.
            (actual, exact, lowered), _, _ = keep_valid_positions(self.gate.config, feeds, actual, exact, lowered)
            judgement = judge_floor(name, actual, exact, lowered, exact, self._floor_factors(in_range),
                                    self.built[name].precision, context)
        return self._record(name, judgement)

    def judge_batch_consistency(self, name: str, case: InputCase, *, batch_dim: str, split: int) -> Judgement:
        """A batch's outputs against the outputs of its parts, by the candidate's tolerance."""
        kind = self.tolerance_kind(name)
        runner = self.runner(name)
        config = self.gate.config
        if kind == "fp32":
            result = check_batch_consistency(case, config, runner, batch_dim=batch_dim, split=split)
            return from_parity(name, result, "the export's fixed bound, batch against its parts")
        if kind == "none":
            raise GateError(f"candidate {name} cannot be judged: {self.unjudgeable_reason(name)}")
        feeds, whole, joined, parts = whole_and_parts(case, config, runner, batch_dim=batch_dim, split=split)
        context = f"{describe_case(case)}, {parts}"
        if kind == "budget":
            return judge_budget(name, self._budget_for(True), whole, joined, self.custom_metric, context)
        exact = self.gate.fp64_reference(feeds)
        if exact is None:
            raise GateError(f"candidate {name}: the float64 reference failed on {context}")
        lowered = self._autocast(self.built[name].precision).infer(feeds)
        return judge_floor(name, whole, joined, lowered, exact, self._floor_factors(True), self.built[name].precision,
                           context)

    def _record(self, name: str, judgement: Judgement) -> Judgement:
        record = self.records.setdefault(name, CandidateRecord())
        record.judged += 1
        if not math.isnan(judgement.units):
            record.worst_units = max(record.worst_units, judgement.units)
        return judgement

    def reported(self, name: str, nodeid: str, outcome: str, message: str) -> None:
        record = self.records.setdefault(name, CandidateRecord())
        if record.tests.get(nodeid) != "failed":
            record.tests[nodeid] = outcome
        if outcome == "failed" and message:
            record.problems.append(message)

    # --- verdicts ----------------------------------------------------------------------------

    def verdict(self, name: str) -> tuple[bool, str]:
        candidate = self.built.get(name) if "built" in self.__dict__ else None
        if candidate is not None and not candidate.built:
            return False, f"not built: {candidate.error}"
        record = self.records.get(name)
        if record is None or record.status == "not run":
            return False, "its checks did not run"
        if record.status == "blocked":
            return False, "blocked: " + (record.problems[0] if record.problems else "a check failed")
        if record.status != "passed":
            return False, f"its checks were {record.status}"
        return True, f"passed every check ({record.judged} input cases judged)"

    def fastest_batch(self) -> int | None:
        batches = sorted({r.batch for r in self.latency})
        return batches[0] if batches else None

    def fastest_passing(self, batch: int) -> str | None:
        """The fastest artifact at ``batch`` among the plain export and the passing candidates."""
        medians = {r.extra.get("candidate"): r.median for r in self.latency if r.batch == batch}
        passing = [n for n in medians if n == PLAIN or (n and self.verdict(n)[0])]
        return min(passing, key=lambda n: medians[n]) if passing else None

    def chosen(self) -> tuple[Candidate | None, str]:
        """The candidate to publish under ``publish``: (candidate, why) or (None, why not).
        None with ``publish = "fastest-passing"`` and the plain export fastest means: the export."""
        wanted = self.settings.publish
        if wanted is None:
            return None, "no candidate asked for: the plain export is published"
        if wanted != FASTEST:
            passed, why = self.verdict(wanted)
            return (self.built[wanted], why) if passed else (None, f"candidate {wanted} {why}")
        batch = self.fastest_batch()
        if batch is None:
            return None, "publish = 'fastest-passing' needs the candidates' latency (run benchmarks/)"
        fastest = self.fastest_passing(batch)
        if fastest is None or fastest == PLAIN:
            return None, f"the plain export is the fastest passing artifact at batch {batch}"
        return self.built[fastest], f"fastest passing artifact at batch {batch}"

    def table(self, gate_verdict: Verdict | None = None) -> dict[str, Any]:
        """The candidates table as plain values, for gate.json, summary.md and publishing;
        ``gate_verdict``: the plain export's, once the session is over."""
        batches = sorted({r.batch for r in self.latency})
        eager = {r.batch: r.median for r in self.latency if r.extra.get("candidate") == "pytorch"}
        fastest = {batch: self.fastest_passing(batch) for batch in batches}
        rows = []
        names = [PLAIN, *self.settings.build]
        for name in names:
            candidate = self.built.get(name) if "built" in self.__dict__ else None
            if name == PLAIN:
                verdict = "passed" if gate_verdict else "not judged yet" if gate_verdict is None else "blocked"
                why = "" if gate_verdict is None or gate_verdict else str(gate_verdict)
                precision, tolerance, units = "fp32", "the gate's checks", None
            else:
                passed, why = self.verdict(name)
                verdict = "passed" if passed else ("not built" if candidate and not candidate.built else "blocked")
                precision = candidate.precision if candidate else "?"
                tolerance = self.describe_tolerance(name) if candidate and candidate.built else ""
                record = self.records.get(name)
                units = record.worst_units if record and record.judged else None
            per_batch = {}
            for record in self.latency:
                if record.extra.get("candidate") != name:
                    continue
                per_batch[str(record.batch)] = {
                    "median_ms": record.median * 1e3, "p95_ms": record.p95 * 1e3,
                    "speedup_vs_pytorch": eager[record.batch] / record.median if record.batch in eager else None,
                    "roofline_efficiency": record.roofline_efficiency, "bound": record.roofline.bound if record.roofline else None,
                    "weight_bytes": record.extra.get("weight_bytes"), "fastest_passing": fastest.get(record.batch) == name,
                }  # fmt: skip
            rows.append({"name": name, "precision": precision, "verdict": verdict, "why": why, "tolerance": tolerance,
                         "worst_units": units, "batches": per_batch,
                         "notes": dict(candidate.notes) if candidate is not None and candidate.notes else {}})
        return {"rows": rows, "batches": batches, "pytorch_ms": {str(b): m * 1e3 for b, m in eager.items()},
                "publish": self.settings.publish}
