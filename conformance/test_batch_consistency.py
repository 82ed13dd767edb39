"""A batch must be the concatenation of its samples: graphs that couple samples fail here."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.checks.parity import compare_outputs
from harness.session import describe_case
from harness.strategies import input_cases


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
    feeds = case.materialize(gate.config.inputs)
    axes = {spec.name: spec.shape.index(batch_dim) for spec in gate.config.inputs if batch_dim in spec.shape}
    whole = ort_runner.infer(feeds)
    parts = [
        ort_runner.infer({n: np.take(a, range(lo, hi), axis=axes[n]) if n in axes else a for n, a in feeds.items()})
        for lo, hi in ((0, split), (split, size))
    ]
    joined = {name: np.concatenate([p[name] for p in parts], axis=0) for name in whole}
    result = compare_outputs(
        whole, joined, gate.config, candidate=f"{ort_runner.name} batch {size}",
        reference=f"parts {split}+{size - split}", context=describe_case(case),
    )  # fmt: skip
    assert result, str(result)
