"""The candidates' checks (conformance/test_candidates.py, benchmarks/test_candidate_latency.py;
the work is in harness/candidates/): they judge candidate artifacts, not the export, so the gate's
verdict never requires them; a candidate named for publishing turns its own failures into the
gate's (harness/plugin/hooks.py)."""

from __future__ import annotations

from harness.checks.declared import declare_check, never

CANDIDATES = declare_check("candidates", required=never, listed=False, order=99)
LATENCY_CANDIDATES = declare_check("latency_candidates", required=never, listed=False, order=99)

CANDIDATE_CHECKS = (CANDIDATES.name, LATENCY_CANDIDATES.name)
