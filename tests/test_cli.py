import json
import subprocess
import sys

import pytest

from tests.conftest import TWO_INPUT_NET


@pytest.mark.gate  # the CLI in a process of its own
def test_help_documents_the_run_command():
    result = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True, check=True)
    assert "onnx-gate run [PYTEST_ARGS...]" in result.stdout
    assert "--gate-config" in result.stdout


@pytest.mark.gate  # pytest in a process of its own
def test_pytest_help_lists_the_gate_options_in_one_group():
    result = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True)
    section = result.stdout.split("onnx-gate:", 1)[1]
    for option in ("--gate-config", "--gate-model", "--gate-checkpoint", "--gate-onnx", "--gate-exporter", "--gate-opset", "--gate-report-dir"):
        assert option in section


# Heavy to import, or (hypothesis) a pytest plugin that must load after pytest marks it for assertion
# rewriting: none may load with the plugin or the CLI, only when a gate needs it.
DEFERRED = ("torch", "onnxruntime", "boto3", "mlflow", "onnx", "hypothesis", "matplotlib", "transformers")


@pytest.mark.parametrize("module", ["harness.plugin.hooks", "harness.cli"])
def test_the_plugin_and_the_cli_import_nothing_heavy(module):
    code = f"import sys, {module}; print(sorted(m for m in {DEFERRED!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_run_with_a_suite_path_from_the_readme_works_from_a_users_own_folder(project):
    project.write_config(TWO_INPUT_NET)
    result = project.pytester.run(
        sys.executable, "-m", "harness.cli", "run", "conformance/test_parity.py",
        "--gate-config", "gate.toml", "--hypothesis-profile=smoke",
    )  # fmt: skip
    assert result.parseoutcomes() == {"passed": 5}, result.stdout.str()
    document = json.loads(next((project.path / "reports").glob("*/gate.json")).read_text())
    assert document["checks"]["parity"]["status"] == "passed"
    assert document["checks"]["contract"]["status"] == "not run"
