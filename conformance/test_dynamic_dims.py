"""Every symbolic dimension must work at sizes the export never saw."""

import pytest

from harness.core.strategies import InputCase


@pytest.mark.gate_check("dynamic_dims")
@pytest.mark.parametrize("family", ["normal", "uniform"])
def test_symbolic_dimension_runs_at_sizes_besides_the_trace_size(gate, ort_runner, dynamic_size, family):
    name, size = dynamic_size
    sizes = {**gate.config.trace_sizes, name: size}
    result = gate.check_parity(InputCase(family=family, sizes=sizes, seed=size))
    assert result, str(result)
