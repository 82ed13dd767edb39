"""export_and_register_model: the training script's entry point runs the same gate in-process."""

import tomllib
import uuid

from mlflow import MlflowClient

from harness import export_and_register_model
from harness.models import localization_net
from tests.conftest import SMALL_LOCALIZATION_NET

FAST = ["--gate-bench-quick", "--hypothesis-profile=dev", "-q", "-p", "no:cacheprovider"]


def _overrides(tmp_path, **extra):
    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"})
    section.pop("model_kwargs")
    return {**section, "report_dir": str(tmp_path / "reports"), "bench": {"batches": [1, 2]}, "budget": {"min_speedup": 0}, **extra}


def test_a_trained_model_is_gated_published_and_tagged_with_its_training_run(stack, tmp_path, monkeypatch):
    _, env = stack
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    name = f"api-{uuid.uuid4().hex[:8]}"
    model = localization_net("test", seed=3)
    result = export_and_register_model(
        model, "train-run-42", config_overrides=_overrides(tmp_path, publish={"model_name": name}), pytest_args=FAST
    )
    assert result.success, result.reason
    assert (result.registered_name, result.version, result.alias) == (name, "1", "staging")
    assert result.s3_uri.endswith(f"{result.sha256}.onnx")
    assert result.parity["examples"] > 0 and {r["backend"] for r in result.latency} == {"pytorch", "onnxruntime"}
    assert result.report_path.is_file()
    version = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_model_version(name, "1")
    assert version.tags["training_run_id"] == "train-run-42"


def test_a_failing_gate_returns_the_reason_instead_of_raising(tmp_path):
    broken_invariant = [{"output": "uncertainties", "min": 0.9}]  # seeded uncertainties are ~0.3-0.7
    result = export_and_register_model(
        localization_net("test"), config_overrides=_overrides(tmp_path, invariants=broken_invariant),
        publish=False, pytest_args=FAST,
    )  # fmt: skip
    assert not result.success and result.verdict == "failed"
    assert "invariants failed" in result.reason
    assert result.exit_code == 1
