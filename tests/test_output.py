"""The gate's output: known library noise is dropped, real warnings still show."""

from __future__ import annotations

import logging

import pytest

from harness.core.noise import DropMessages, quiet_library_noise
from tests.conftest import CONFORMANCE, TWO_INPUT_NET

REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"

NOISY_MODELS = f'''
import logging

import pytest

import user_models


def noisy_two_input_net():
    logging.getLogger("{REGISTRY_LOGGER}").warning("a real warning from the exporter's registry")
    return user_models.two_input_net()
'''


def test_a_dynamo_gate_run_drops_the_torchvision_noise_and_keeps_real_warnings(project):
    (project.path / "noisy_models.py").write_text(NOISY_MODELS)
    project.write_config(TWO_INPUT_NET.replace("user_models:two_input_net", "noisy_models:noisy_two_input_net"),
                         exporter="dynamo")
    run = project.run(paths=(CONFORMANCE + "/test_artifact.py",), subprocess=True)
    output = run.result.stdout.str() + run.result.stderr.str()
    assert run.status("artifact") == "passed", output
    assert "torchvision is not installed" not in output
    assert "a real warning from the exporter's registry" in output


def test_the_filter_drops_only_the_known_messages(caplog):
    quiet_library_noise()
    quiet_library_noise()  # idempotent: one filter, not two
    logger = logging.getLogger(REGISTRY_LOGGER)
    assert sum(isinstance(f, DropMessages) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=REGISTRY_LOGGER):
        logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
        logger.warning("torchvision is not installed, and this op needs it")
    assert [r.getMessage() for r in caplog.records] == ["torchvision is not installed, and this op needs it"]


@pytest.mark.checks
def test_a_failing_node_is_said_once_by_the_gate_not_again_by_onnx_runtime_on_stderr(tmp_path, capfd):
    """A Reshape fixed to the trace's batch size (what a TorchScript export that fixed a dynamic
    dimension leaves) fails at another size: the gate's one line names the node, and ONNX Runtime's
    own `[E:onnxruntime:, sequential_executor.cc ...]` line stays off stderr."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from harness.core.errors import GateError
    from harness.runtime.runners import OrtRunner

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 4])
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="fixed_reshape")
    graph = helper.make_graph(
        [node], "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [shape],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "fixed.onnx")
    runner = OrtRunner(tmp_path / "fixed.onnx", ["x"], ["y"])
    capfd.readouterr()

    with pytest.raises(GateError, match="fixed_reshape"):
        runner.infer({"x": np.zeros((3, 4), np.float32)})

    captured = capfd.readouterr()
    assert "onnxruntime:" not in captured.err + captured.out, captured.err
