"""The training run a gate was called from, in MLflow: the run a registered version names as its
source, and the run the gate's verdict, key figures and reports are logged to.

A training script that calls ``export_and_register_model`` inside ``mlflow.start_run()`` gets
this without asking; ``run_id=`` names a run explicitly. The run is looked up on the caller's
own tracking URI (``mlflow.get_tracking_uri()``), before the gate spends its time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.bench.measure import speedups
from harness.core.errors import GateError, first_line
from harness.core.secrets import redact, split_userinfo
from harness.publish.registry import apply_client_settings

if TYPE_CHECKING:
    from harness.report.outcome import GateOutcome

# The gate's files a training run receives, under this artifact folder.
REPORT_FILES = ("gate.json", "summary.md", "pytest.log")
ARTIFACT_FOLDER = "onnx-gate"


class LineageError(GateError):
    """The training run cannot be found or written to; the message is safe to show."""


@dataclass(frozen=True)
class TrainingRun:
    run_id: str
    tracking_uri: str

    @property
    def display_uri(self) -> str:
        return split_userinfo(self.tracking_uri)[0]

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)


def training_run(run_id: str | None) -> TrainingRun | None:
    """``run_id``, else the caller's active MLflow run; None when there is neither. A ``run_id``
    that names no run on the tracking server raises LineageError."""
    if run_id is None and "mlflow" not in sys.modules:
        return None  # a process that never imported MLflow has no active run

    apply_client_settings()  # fail in seconds on a server that is down
    import mlflow

    if run_id is None:
        active = mlflow.active_run()
        return None if active is None else TrainingRun(active.info.run_id, mlflow.get_tracking_uri())
    run = TrainingRun(run_id, mlflow.get_tracking_uri())
    try:
        run.client().get_run(run_id)
    except Exception as exc:  # MLflow and network errors alike: one line, no secret
        raise LineageError(redact(
            f"run_id {run_id!r} is not a run the MLflow tracking server at {run.display_uri} can read "
            f"({first_line(exc, type(exc).__name__)[:200]}); pass the training run's MLflow run id, "
            "or call the gate inside its mlflow.start_run()"
        )) from None  # fmt: skip
    return run


def key_figures(outcome: GateOutcome) -> dict[str, float]:
    """The numbers a training run keeps of its gate: verdict as 1/0, worst noise ratio, worst
    fidelity ratio, CPU speedup per batch."""
    figures = {"onnx_gate.passed": float(outcome.passed)}
    ratios = [float(s["noise_ratio_worst"]) for s in outcome.parity.get("outputs", {}).values() if "noise_ratio_worst" in s]
    if ratios:
        figures["onnx_gate.noise_ratio_worst"] = max(ratios)
    worst = (outcome.parity.get("fidelity") or {}).get("worst") or {}
    if isinstance(worst.get("ratio"), (int, float)):
        figures["onnx_gate.fidelity_ratio"] = float(worst["ratio"])
    for batch, ratio in speedups(list(outcome.latency), "cpu").items():
        figures[f"onnx_gate.speedup_cpu.batch{batch}"] = float(ratio)
    return {k: v for k, v in figures.items() if v == v}  # MLflow takes no NaN


def record_on_training_run(run: TrainingRun, outcome: GateOutcome) -> None:
    """The verdict (tags), key figures (metrics) and report files (artifacts) on the training run,
    and where the model went when it was published. Raises LineageError."""
    from mlflow.entities import Metric, RunTag

    tags = {"onnx_gate.verdict": "passed" if outcome.passed else "failed", "onnx_gate.gate_run_id": outcome.run_id}
    if outcome.artifact is not None:
        tags["onnx_gate.sha256"] = outcome.artifact.sha256
    published = outcome.publish
    if published and published.registered_name:
        tags["onnx_gate.registered_model"] = f"{published.registered_name}/{published.version}"
    reasons = outcome.verdict.reasons or ((published.reason,) if published is not None and not published else ())
    if reasons:
        tags["onnx_gate.reason"] = "; ".join(reasons)[:500]
    import time

    now = int(time.time() * 1000)
    client = run.client()
    try:
        client.log_batch(
            run.run_id, metrics=[Metric(k, v, now, 0) for k, v in key_figures(outcome).items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )  # fmt: skip
        for name in REPORT_FILES:
            if (outcome.report_dir / name).is_file():
                client.log_artifact(run.run_id, str(outcome.report_dir / name), artifact_path=ARTIFACT_FOLDER)
    except Exception as exc:
        raise LineageError(redact(
            f"could not log the gate's verdict to training run {run.run_id} at {run.display_uri}: "
            f"{first_line(exc, type(exc).__name__)[:200]}"
        )) from None  # fmt: skip
