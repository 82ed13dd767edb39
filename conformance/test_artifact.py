import pytest

from harness.export import file_sha256


@pytest.mark.gate_check("artifact")
def test_artifact_loads_and_passes_the_onnx_checker(gate):
    if gate.artifact is None:
        pytest.fail(str(gate.artifact_error), pytrace=False)
    # The bytes checked are the bytes that will ship: nothing rewrote the file since.
    assert file_sha256(gate.artifact.path) == gate.artifact.sha256
    assert gate.ort_runner.graph_outputs, "ONNX Runtime loaded a graph without outputs"
