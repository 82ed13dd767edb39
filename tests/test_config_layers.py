"""Config layers: pyproject.toml < --gate-config file < command line < Python API, and a model's
description never crosses to another model. Each leak below once made the gate build or check
the wrong thing."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core import config
from harness.core.errors import ConfigError

DEFAULT = config.DEFAULT_MODEL

# What the onnx-gate checkout's own pyproject.toml holds: every model-specific key set.
HEIMDALL_PYPROJECT = f"""
[tool.onnx-gate]
model = "{DEFAULT}"
model_kwargs = {{ size = "tiny" }}
checkpoint = "heimdall.pt"
exporter = "torchscript"
opset = 17
outputs = ["positions", "uncertainties"]
report_dir = "gate-reports"

[[tool.onnx-gate.inputs]]
name = "mel_spectrogram"
shape = ["batch", 3, 128, 32]
dims = {{ batch = [1, 8] }}

[[tool.onnx-gate.invariants]]
output = "uncertainties"
min = 0.01

[tool.onnx-gate.tolerance]
atol = 1e-3
[tool.onnx-gate.tolerance.per_output.positions]
atol = 1e-2

[tool.onnx-gate.budget]
min_speedup = {{ 1 = 1.5 }}

[tool.onnx-gate.publish]
model_name = "heimdall-localization-onnx"
"""

OTHER_MODEL = """
model = "model:build"
outputs = ["y"]
[[inputs]]
name = "x"
shape = ["batch", 4]
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(HEIMDALL_PYPROJECT)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def test_a_config_file_naming_another_model_inherits_nothing_of_pyprojects_model(checkout):
    (checkout / "elsewhere" / "gate.toml").write_text(OTHER_MODEL)
    loaded = config.load(invocation_dir=checkout, config_file=Path("elsewhere/gate.toml"))
    assert loaded.model == "model:build"
    assert loaded.model_kwargs == {}
    assert loaded.checkpoint is None
    assert (loaded.exporter, loaded.opset) == ("dynamo", 18)
    assert [i.name for i in loaded.inputs] == ["x"] and loaded.outputs == ("y",)
    assert loaded.invariants == ()
    assert loaded.tolerance == config.Tolerance() and loaded.per_output == {}
    assert loaded.budget == config.BudgetConfig()
    assert loaded.publish == config.PublishConfig()
    # The run's own settings do carry over.
    assert loaded.report_dir == checkout / "gate-reports"


def test_a_config_file_naming_the_same_model_refines_pyprojects_description(checkout):
    (checkout / "elsewhere" / "gate.toml").write_text(f'model = "{DEFAULT}"\nopset = 18\n[tolerance]\nrtol = 1e-2\n')
    loaded = config.load(invocation_dir=checkout, config_file=Path("elsewhere/gate.toml"))
    assert loaded.model_kwargs == {"size": "tiny"} and loaded.checkpoint == checkout / "heimdall.pt"
    assert (loaded.exporter, loaded.opset) == ("torchscript", 18)
    assert (loaded.tolerance.atol, loaded.tolerance.rtol) == (1e-3, 1e-2)


def test_the_command_line_refines_the_model_the_files_name(checkout):
    loaded = config.load(invocation_dir=checkout, overrides={"exporter": "dynamo", "opset": 20})
    assert (loaded.model, loaded.exporter, loaded.opset) == (DEFAULT, "dynamo", 20)
    assert loaded.checkpoint == checkout / "heimdall.pt"


def test_a_model_named_on_the_command_line_takes_nothing_from_files_describing_another(checkout):
    with pytest.raises(ConfigError, match=r"model 'model:build' needs \[\[inputs\]\]"):
        config.load(invocation_dir=checkout, overrides={"model": "model:build"})


def test_the_python_api_wins_over_the_command_line(checkout):
    loaded = config.load(invocation_dir=checkout, overrides={"opset": 17}, api_overrides={"opset": 18})
    assert loaded.opset == 18
    assert loaded.sources == ("pyproject.toml [tool.onnx-gate]", "command line", "Python API")


def test_sources_name_files_relative_to_where_the_gate_ran(checkout):
    (checkout / "elsewhere" / "gate.toml").write_text(OTHER_MODEL)
    loaded = config.load(invocation_dir=checkout, config_file=checkout / "elsewhere" / "gate.toml")
    assert loaded.sources == ("pyproject.toml [tool.onnx-gate]", "elsewhere/gate.toml")
    assert not any(str(checkout) in source for source in loaded.sources)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "config file 'gate.toml' names no model; add model = "),
        ('exporter = "torchscript"\n', "config file 'gate.toml' names no model"),
        ('[tool.onnx_gate]\nmodel = "m:f"\n', r"has a \[tool.onnx_gate\] table. Did you mean \[tool.onnx-gate\]?"),
        ('[onnx-gate]\nmodel = "m:f"\n', r"has a \[onnx-gate\] table. Did you mean \[tool.onnx-gate\]"),
    ],
    ids=["empty", "no-model", "underscore-table", "top-level-table"],
)
def test_a_config_file_that_names_no_model_is_an_error_not_the_default_model(tmp_path, text, message):
    (tmp_path / "gate.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load(invocation_dir=tmp_path, config_file=Path("gate.toml"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tool.onnx_gate]\nmodel = "m:f"\n', r"pyproject.toml has a \[tool.onnx_gate\] table"),
        ('[tool.onnx-gate]\nexporter = "torchscript"\n', r"pyproject.toml \[tool.onnx-gate\] names no model"),
    ],
    ids=["underscore-table", "no-model"],
)
def test_a_pyproject_table_that_names_no_model_is_an_error(tmp_path, text, message):
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load(invocation_dir=tmp_path)


def test_a_config_file_path_that_is_a_folder_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; give the TOML file in it"):
        config.load(invocation_dir=tmp_path, config_file=tmp_path)


def test_the_first_lines_say_when_the_built_in_default_is_gated(pytester):
    result = pytester.runpytest_subprocess(str(Path(__file__).parent.parent / "conformance"), "--co")
    result.stdout.fnmatch_lines([
        "onnx-gate: gating harness.models:localization_net {'size': 'tiny'}, the built-in default, "
        "Heimdall's LocalizationNet: no config names a model",
    ])  # fmt: skip


def test_the_first_lines_name_the_model_and_where_it_was_configured(project):
    project.write_config()
    result = project.pytester.runpytest_subprocess(
        str(Path(__file__).parent.parent / "conformance"), "--co", "--gate-config", "gate.toml"
    )
    result.stdout.fnmatch_lines(["onnx-gate: gating harness.models:localization_net {'size': 'test'}, from gate.toml"])
