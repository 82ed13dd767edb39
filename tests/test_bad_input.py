"""Bad input gets one line naming the problem and a non-zero exit, never a traceback."""

import sys
from xml.etree import ElementTree

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


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ("range = [-4.0, 4.0]", "range = [-1, 0, 1]", ["inputs[0] ('mel_spectrogram').range must be [low, high], two numbers, got [-1, 0, 1]"]),
        ("range = [-4.0, 4.0]", 'range = "0..1"', ["inputs[0] ('mel_spectrogram').range must be [low, high], two numbers, got '0..1'"]),
        ("dims = { batch = [1, 4] }", "dims = [1, 8]", ["inputs[0] ('mel_spectrogram').dims must be a table", "dims = { batch = [1, 8] }", "got [1, 8]"]),
        ("min = 0.01\nmax = 1.0", "min = 1.0\nmax = 0.01", ["invariants[0] for 'uncertainties' has min 1 > max 0.01", "swap them"]),
        ("report_dir", "bench = { batches = [1, 16] }\nreport_dir", ["bench.batches [16] lie outside the declared range of 'batch', [1, 4]", "widen dims.batch"]),
    ],
    ids=["range-of-three", "range-as-text", "dims-as-list", "invariant-min-above-max", "bench-batch-outside-dims"],
)
def test_a_malformed_config_value_is_one_line_not_an_internal_error(project, old, new, fragments):
    config = project.write_config()
    config.write_text(config.read_text().replace(old, new, 1))
    _assert_one_line_error(_gate_cli(project, "--gate-config", str(config)), *fragments)


def test_a_config_path_that_is_a_folder_is_one_line(project):
    _assert_one_line_error(_gate_cli(project, "--gate-config", str(project.path)), "is a folder", "pyproject.toml")


def test_a_report_dir_that_is_a_file_is_one_line(project):
    config = project.write_config()
    (project.path / "taken").write_text("a file, not a folder\n")
    result = _gate_cli(project, "--gate-config", str(config), "--gate-report-dir", "taken")
    _assert_one_line_error(result, f"report folder {str(project.path / 'taken')!r} cannot be created", "is a file")


def test_a_run_that_cannot_start_leaves_no_junit_that_reads_as_success(project):
    config = project.write_config()
    config.write_text(config.read_text().replace("harness.models:localization_net", "no_such_module:build"))
    _assert_one_line_error(_gate_cli(project, "--gate-config", str(config)), "does not import")
    junits = list((project.path / "reports").rglob("junit.xml"))
    assert junits  # this gate records the error; none at all would be acceptable too
    for junit in junits:
        suite = ElementTree.parse(junit).getroot().find("testsuite")
        assert int(suite.get("errors")) >= 1, junit.read_text()
        assert "no_such_module:build' does not import" in junit.read_text()


def test_a_text_file_given_as_checkpoint_is_named_as_not_a_checkpoint(project):
    checkpoint = project.path / "weights.pt"
    checkpoint.write_text("epoch 12, loss 0.03\n")
    config = project.write_config()
    result = _gate_cli(project, "--gate-config", str(config), "--gate-checkpoint", str(checkpoint))
    _assert_one_line_error(result, f"checkpoint {str(checkpoint)!r} is not a file torch.save wrote", "b'epoch 12, lo'")


def test_a_dynamo_export_failure_names_its_cause_without_colour_codes(project):
    (project.path / "gate.toml").write_text(
        'model = "user_models:data_dependent_net"\nexporter = "dynamo"\noutputs = ["estimate"]\nreport_dir = "reports"\n'
        '[[inputs]]\nname = "receivers"\nshape = ["batch", 6]\nrange = [-90.0, 90.0]\ndims = { batch = [1, 4] }\n'
    )
    run = project.run(paths=(CONFORMANCE + "/test_artifact.py",))
    assert run.status("artifact") == "failed"
    message = " ".join(run.document["checks"]["artifact"]["messages"])
    assert "the dynamo exporter failed: GuardOnDataDependentSymNode: Could not guard on data-dependent expression" in message
    assert 'try exporter = "torchscript"' in message
    assert "\x1b[" not in run.result.stdout.str() + message
