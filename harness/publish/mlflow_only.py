"""The MLflow-only target (``[publish] target = "mlflow"``): the artifact goes into MLflow's own
artifact store, through the tracking server (``mlflow server`` serves artifacts by default, or
with ``--serve-artifacts``), and MLflow's registry gets one version per artifact. The gate needs
``MLFLOW_TRACKING_URI`` (and MLflow's own credentials, if the server asks), no S3 credentials:
for users of a managed MLflow.

The registry is asked first whether it answers, accepts the credentials and holds this model's
config, so nothing is stored for a publish that would be refused. A version carrying the artifact's
sha256 is reused. There is no bucket the gate writes, so no claim object elects one registrant:
two publishers of the same new artifact at the same moment may both register it (the S3 + MLflow
target's claim prevents that).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Mapping

from harness.core.publish_outcome import Notify, PublishOutcome, failure, notify_stderr
from harness.publish.registry import NO_TRACKING_URI, Registry, record_and_register, replace_run_reports

if TYPE_CHECKING:
    from pathlib import Path

    from harness.core.config import PublishConfig
    from harness.publish.flow import PublishRequest

LABELS = {"location": "artifact_uri", "record_id": "run_id", "record_url": "run_url"}


def publish(request: PublishRequest, environ: Mapping[str, str] | None = None, *, notify: Notify = notify_stderr) -> PublishOutcome:
    """Check the registry, then log, register and alias in one MLflow run. Never raises for a
    publishing failure: the outcome says."""
    env = dict(os.environ if environ is None else environ)
    settings = request.settings
    tracking_uri = env.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return PublishOutcome("refused", NO_TRACKING_URI, sha256=request.sha256, labels=LABELS)
    outcome = PublishOutcome("failed", sha256=request.sha256, registered_name=settings.model_name, labels=LABELS)
    registry = Registry.from_settings(tracking_uri, settings)
    try:
        registry.check_reachable()
        registry.check_access()
        registry.check_model_config(request.model_tags, allow_change=request.allow_config_change)
        started = time.perf_counter()
        size = request.manifest.size if request.manifest is not None else request.path.stat().st_size
        record_and_register(
            registry, request, outcome, {"size": str(size)},
            lambda tags: _register_or_reuse(registry, request, tags, outcome), notify=notify,
        )  # fmt: skip
        outcome.extra["registry_seconds"] = round(time.perf_counter() - started, 2)
    except Exception as exc:  # MLflow and network errors: one safe line
        outcome.status, outcome.reason = failure(exc, f"MLflow at {registry.display_uri}")
    return outcome


def _register_or_reuse(
    registry: Registry, request: PublishRequest, tags: Mapping[str, str], outcome: PublishOutcome
) -> tuple[Any, bool]:
    """The READY version of this artifact: the one registered before, or a new one whose files
    the ONNX flavor stores in MLflow's artifact store now."""
    existing = registry.find_version(request.sha256)
    if existing is not None:
        version = registry.wait_ready(existing.version)
        created = registry.created_here(version)
    else:
        version = registry.register(
            request.path, request.example, request.outputs, tags,
            external_data=request.manifest is not None and not request.manifest.self_contained,
            session_options=request.session_options, source_run_id=request.source_run_id,
        )  # fmt: skip
        created = True
    outcome.location, outcome.uploaded = registry.artifact_location(version), created
    return version, created


def replace_reports(outcome: PublishOutcome, settings: PublishConfig, report_dir: Path) -> None:
    replace_run_reports(outcome, settings, report_dir)
