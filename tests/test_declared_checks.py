"""A new check is one module plus its conformance test: declared where it is defined, it is counted,
reported and required without any other file of the gate touched."""

from __future__ import annotations

from tests.conftest import TWO_INPUT_NET

TOY_CHECK = '''
"""A check of the user's own: every output stays below a bound."""

import numpy as np

from harness.checks.declared import declare_check
from harness.checks.result import CheckResult

CHECK = declare_check("bounded_outputs")  # required in every gate, like the gate's own checks


def check_bounded(runner, feeds, limit):
    outputs = runner.infer(feeds)
    over = [name for name, value in outputs.items() if float(np.abs(value).max()) > limit]
    return CheckResult("bounded_outputs", f"every output within {limit:g}", tuple(f"{n} exceeds {limit:g}" for n in over))
'''

TOY_CONFORMANCE = '''
import pytest

from harness.runtime.export import example_feeds
from toy_check import CHECK, check_bounded


@pytest.mark.gate_check(CHECK.name)
@pytest.mark.parametrize("limit", [1e6, 1e-12])
def test_outputs_stay_bounded(gate, ort_runner, limit):
    result = check_bounded(ort_runner, example_feeds(gate.config, gate.config.trace_sizes), limit)
    assert result, str(result)
'''


def test_a_check_of_ones_own_in_one_module_is_counted_reported_and_required(project):
    project.write_config(TWO_INPUT_NET)
    (project.path / "toy_check.py").write_text(TOY_CHECK)
    (project.path / "test_toy_check.py").write_text(TOY_CONFORMANCE)
    run = project.run(paths=(str(project.path / "test_toy_check.py"),))
    assert run.result.ret != 0
    document = run.document
    assert "bounded_outputs" in document["required_checks"]
    record = document["checks"]["bounded_outputs"]
    assert record["status"] == "failed" and sorted(record["tests"].values()) == ["failed", "passed"]
    assert "bounded_outputs failed" in document["reasons"]
    summary = (project.path / "reports" / document["run_id"] / "summary.md").read_text()
    assert "| bounded_outputs | yes | failed | 2 |" in summary
    run.result.stdout.fnmatch_lines(["FAILED | *bounded_outputs failed*"])


def test_a_test_marked_with_a_check_nobody_declared_stops_the_gate_at_collection(project):
    project.write_config(TWO_INPUT_NET)
    (project.path / "test_undeclared.py").write_text(
        'import pytest\n\n@pytest.mark.gate_check("forgotten")\ndef test_it(gate):\n    pass\n'
    )
    run = project.run(paths=(str(project.path / "test_undeclared.py"),))
    assert run.result.ret != 0 and run.document is None
    run.result.stderr.fnmatch_lines(["*gate_check('forgotten') names no declared check*declare_check('forgotten'*"])


def test_a_check_declared_by_another_projects_module_is_not_required_in_this_session(tmp_path):
    """Declarations outlive a gate in the process (the declaring module stays imported): a second
    in-process gate, e.g. a training script's export_and_register_model() for another model, must
    not require a check the first project declared, unless it collects a test of that check too."""
    import types

    from harness.checks.declared import gate_checks
    from harness.core.config import load
    from harness.gate.session import GateSession

    earlier_project = types.ModuleType("earlier_project_checks")
    exec("from harness.checks.declared import declare_check\nCHECK = declare_check('earlier_projects_check')",
         earlier_project.__dict__)  # fmt: skip
    try:
        assert not next(c for c in gate_checks() if c.name == "earlier_projects_check").own
        assert next(c for c in gate_checks() if c.name == "contract").own
        gate = GateSession(load(invocation_dir=tmp_path), work_dir=tmp_path / "work")
        assert "earlier_projects_check" not in gate.required_checks and "contract" in gate.required_checks
        assert "earlier_projects_check" not in gate.ledger.records
        gate.ledger.collected("earlier_projects_check", "test_theirs.py::test_it")  # this session collects it
        assert "earlier_projects_check" in gate.required_checks
    finally:
        from harness.checks import declared

        declared._DECLARED.pop("earlier_projects_check", None)
