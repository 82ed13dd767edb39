"""A batch must be the concatenation of its samples: graphs that couple samples fail here."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.checks.batch_consistency import check_batch_consistency
from harness.core.strategies import input_cases


@pytest.mark.gate_check("batch_consistency")
@given(data=st.data())
def test_a_batch_gives_the_outputs_of_its_parts(gate, ort_runner, data):
    batch_dim = gate.batch_dim
    if batch_dim is None:
        pytest.skip("the config declares no symbolic (batch) dimension")
    dim = gate.config.dims[batch_dim]
    if dim.high < 2:
        pytest.skip(f"batch dimension {batch_dim!r} allows no batch of 2 or more")
    size = data.draw(st.integers(max(2, dim.low), dim.high), label="batch")
    split = data.draw(st.integers(1, size - 1), label="split")
    if split < dim.low or size - split < dim.low:
        pytest.skip(f"parts smaller than the declared minimum batch {dim.low}")
    case = data.draw(input_cases(gate.config, pinned={batch_dim: size}, families=("normal", "uniform", "spikes")))
    # On the session parity runs beside PyTorch (a lane's threads, where there are two lanes).
    result = check_batch_consistency(
        case, gate.config, gate.lane_ort_runner, batch_dim=batch_dim, split=split, lanes=gate.lanes
    )
    assert result, str(result)
