"""Every aligned module's output within its own float64 noise: defects that final outputs hide
(argmax tags, saturating heads, padded positions) still show in the module that computes wrongly."""

import pytest


@pytest.mark.gate_check("module_parity")
def test_no_module_output_leaves_its_own_float64_noise_while_its_inputs_are_within_it(gate, ort_runner, pytestconfig):
    if not gate.config.module_parity:
        pytest.skip("turned off: module_parity = false in [tool.onnx-gate]")
    result = gate.check_module_parity(root=pytestconfig.invocation_params.dir)
    if result.not_judged:
        pytest.skip(str(result))  # e.g. a file without scope information: said once, not a failure
    assert result, str(result)
