"""Bad input gets one line naming the problem and a non-zero exit, never a traceback."""

import sys

import pytest
import torch

from harness.models import localization_net
from tests import defects
from tests.conftest import CONFORMANCE, SMALL_LOCALIZATION_NET


def _gate_cli(project, *args):
    return project.pytester.run(sys.executable, "-m", "harness.cli", "run", CONFORMANCE, "-q", *args)


def _assert_one_line_error(result, *fragments):
    output = result.stdout.str() + "\n" + result.stderr.str()
    assert result.ret not in (0, 1), output  # a usage error, not a gate verdict
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("ERROR: onnx-gate:")]
    assert len(errors) == 1, output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize(
    ("config_line", "fragments"),
    [
        ('exportr = "dynamo"', ["unknown key 'exportr'", "Did you mean 'exporter'?", "Valid keys:"]),
        ('exporter = "onnx2"', ["unknown exporter 'onnx2'", "dynamo, torchscript"]),
        ("opset = 99", ["opset 99 is not supported by the dynamo exporter", "valid: 18..23"]),
    ],
    ids=["typo-in-key", "unknown-exporter", "unknown-opset"],
)
def test_a_bad_config_value_is_one_line_naming_the_valid_choices(project, config_line, fragments):
    config = project.write_config(SMALL_LOCALIZATION_NET.replace('exporter = "%(exporter)s"', config_line))
    _assert_one_line_error(_gate_cli(project, "--gate-config", str(config)), *fragments)


def test_a_model_path_that_does_not_import_is_one_line(project):
    config = project.write_config(extra="")
    config.write_text(config.read_text().replace("harness.models:localization_net", "no_such_module:build"))
    _assert_one_line_error(_gate_cli(project, "--gate-config", str(config)), "'no_such_module:build' does not import", "ModuleNotFoundError")


def test_a_model_factory_that_raises_is_one_line(project):
    config = project.write_config()
    config.write_text(config.read_text().replace("harness.models:localization_net", "user_models:broken_factory").replace('model_kwargs = { size = "test" }', ""))
    _assert_one_line_error(_gate_cli(project, "--gate-config", str(config)), "failed to build", "always fails")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda state: state.pop("backbone.stem.0.weight"), "missing keys: backbone.stem.0.weight"),
        (lambda state: state.update(extra_head=torch.zeros(1)), "unexpected keys: extra_head"),
        (lambda state: state.update({"position_head.8.bias": torch.zeros(3)}), "wrong shapes: position_head.8.bias (3,) vs model (2,)"),
    ],
    ids=["missing-key", "unexpected-key", "wrong-shape"],
)
def test_a_checkpoint_that_does_not_fit_is_one_line(project, edit, fragment):
    state = localization_net("test").state_dict()
    edit(state)
    checkpoint = project.path / "model.pt"
    torch.save(state, checkpoint)
    config = project.write_config()
    _assert_one_line_error(_gate_cli(project, "--gate-config", str(config), "--gate-checkpoint", str(checkpoint)), fragment)


def test_a_fitting_checkpoint_is_loaded(project, tmp_path):
    trained = localization_net("test", seed=7)
    checkpoint = project.path / "model.pt"
    torch.save({"state_dict": trained.state_dict()}, checkpoint)
    # An ONNX exported from the seed-7 weights matches only if the checkpoint was really loaded.
    onnx_path = tmp_path / "seed7.onnx"
    torch.onnx.export(trained, defects.example(), str(onnx_path), dynamo=False, input_names=[defects.INPUT],
                      output_names=defects.OUTPUTS, dynamic_axes={defects.INPUT: {0: "batch"}})
    project.write_config()
    run = project.run("--gate-checkpoint", str(checkpoint), "--gate-onnx", str(onnx_path))
    assert run.result.ret == 0, run.result.stdout.str()
    without = project.run("--gate-onnx", str(onnx_path))
    assert without.status("parity") == "failed"


def test_a_file_that_is_not_onnx_fails_the_artifact_check_in_one_line(project):
    not_onnx = project.path / "model.onnx"
    not_onnx.write_text("this is not a model\n")
    project.write_config()
    run = project.run("--gate-onnx", str(not_onnx))
    assert run.result.ret == 1
    assert run.status("artifact") == "failed"
    assert "Traceback" not in run.result.stdout.str()
    assert "not run: the ONNX artifact is invalid" in " ".join(run.document["checks"]["contract"]["messages"])


def test_an_onnx_whose_inputs_do_not_match_the_config_fails_with_one_line_errors(project, tmp_path):
    onnx_path = defects.export(tmp_path / "good.onnx")
    config = project.write_config()
    config.write_text(config.read_text().replace('name = "mel_spectrogram"', 'name = "spectrogram"'))
    run = project.run("--gate-onnx", str(onnx_path))
    assert run.result.ret == 1
    assert run.status("contract") == "failed" and run.status("parity") == "failed"
    output = run.result.stdout.str()
    assert "inputs are ['mel_spectrogram'], the config declares ['spectrogram']" in output
    assert "GateError: onnxruntime-cpu: the ONNX graph expects inputs ['mel_spectrogram']" in output
