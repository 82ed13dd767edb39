"""The gate's output: known library noise is dropped, real warnings still show."""

from __future__ import annotations

import logging

from harness.core.noise import DropMessages, quiet_library_noise
from tests.conftest import CONFORMANCE, TWO_INPUT_NET

REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"

NOISY_MODELS = f'''
import logging

import user_models


def noisy_two_input_net():
    logging.getLogger("{REGISTRY_LOGGER}").warning("a real warning from the exporter's registry")
    return user_models.two_input_net()
'''


def test_a_dynamo_gate_run_drops_the_torchvision_noise_and_keeps_real_warnings(project):
    (project.path / "noisy_models.py").write_text(NOISY_MODELS)
    project.write_config(TWO_INPUT_NET.replace("user_models:two_input_net", "noisy_models:noisy_two_input_net"),
                         exporter="dynamo")
    run = project.run(paths=(CONFORMANCE + "/test_artifact.py",))
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
