"""A systematic error inside the per-value noise bound (a few-ppm scale on one output) blocks; a
correct export does not (the real-architecture suite runs the same check on every model)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from harness.checks.bias import pooled_bias
from harness.core import config as gate_config
from harness.gate.session import GateSession
from tests import defects
from tests.conftest import HERE, SMALL_LOCALIZATION_NET

FACTOR = gate_config.Tolerance().noise_factor


def _session(tmp_path, onnx_path) -> GateSession:
    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"}) | {"onnx": str(onnx_path)}
    session = GateSession(gate_config.parse(section, tmp_path, search_dirs=(HERE,)), work_dir=tmp_path)
    session.prepare()
    return session


@pytest.mark.checks
def test_a_few_ppm_scale_error_on_one_output_blocks_although_every_value_is_within_the_noise_bound(tmp_path):
    good = defects.export(tmp_path / "good.onnx")
    for factor in (1 + 2.5e-6,):
        session = _session(tmp_path, defects.scale_output(good, tmp_path / "ppm.onnx", factor=factor))
        # Each example on its own passes the per-value noise check and the fixed bound...
        assert all(session.check_parity(case) for case in session.bias_cases())
        # ...but every value moves the same way.
        results = {r.output: r for r in session.check_bias()}
        assert not results["positions"] and results["positions"].kind == "scale", str(results["positions"])
        assert abs(results["positions"].relative - (factor - 1)) < 1e-6, str(results["positions"])
        assert results["uncertainties"], str(results["uncertainties"])
        assert "systematic scale error" in str(results["positions"])


@pytest.mark.checks
def test_a_correct_export_has_no_systematic_error(tmp_path):
    session = _session(tmp_path, defects.export(tmp_path / "good.onnx"))
    results = session.check_bias()
    assert results and all(results), "\n".join(map(str, results))
    assert session.parity_summary()["systematic_error"]


def test_rounding_noise_of_any_size_is_not_a_bias():
    rng = np.random.default_rng(1)
    exact = rng.normal(0, 100, (12, 500))
    examples = [(x + rng.normal(0, 3e-5, x.shape), x + rng.normal(0, 1e-5, x.shape), x) for x in exact]
    result = pooled_bias("y", examples)
    assert result, str(result)
    biased = [(x * (1 + 1e-6) + rng.normal(0, 1e-5, x.shape), x + rng.normal(0, 1e-5, x.shape), x) for x in exact]
    assert not pooled_bias("y", biased)
