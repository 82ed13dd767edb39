"""Every input changes the outputs: a model that ignores an input passes parity trivially for it."""

import pytest

from harness.checks.sensitivity import check_sensitivity


@pytest.mark.gate_check("sensitivity")
def test_the_outputs_depend_on_every_input(gate):
    result = check_sensitivity(gate.config, gate.torch_runner)
    gate.parity.record_findings(result.findings)
    assert result, str(result)
