"""Publishing, only after a gate session passed in full: verified upload, then registration.

Order matters: no registry version may exist before its bytes are uploaded and verified. If
registration fails, the content-addressed object stays (harmless) and a later run registers it
without uploading again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness.config import PublishConfig
from harness.errors import GateError
from harness.publish.s3 import ArtifactStore, PublishError, s3_client
from harness.publish.secrets import redact

if TYPE_CHECKING:
    from harness.session import GateSession

CLAIM_STALE_S = 600.0
CLAIM_WAIT_S = 300.0


@dataclass
class PublishOutcome:
    status: str  # "published", "refused", "failed"
    reason: str = ""
    s3_uri: str | None = None
    sha256: str | None = None
    uploaded: bool = False  # False when the object was already there
    registered_name: str | None = None
    version: str | None = None
    created_version: bool = False
    alias: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.status == "published"

    def __str__(self) -> str:
        if self.status == "published":
            how = "new version" if self.created_version else "existing version"
            return f"PUBLISHED | {self.s3_uri} -> {self.registered_name} v{self.version} @{self.alias} ({how})"
        return f"{self.status.upper()} | {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def publish_requirements(gate: GateSession) -> tuple[str, ...]:
    from harness.ledger import BENCH_CHECKS

    base = tuple(c for c in gate.required_checks if c not in BENCH_CHECKS)
    return base + BENCH_CHECKS


def refusal(gate: GateSession, exit_status: int) -> str | None:
    """Why this session may not publish, or None. Narrowed sessions name what did not run."""
    problems = []
    for check in publish_requirements(gate):
        status = gate.ledger.record_for(check).status
        if status != "passed":
            problems.append(f"{check} ({status})")
    if problems:
        return "not every required check ran and passed: " + ", ".join(problems)
    if exit_status != 0:
        return f"the session did not pass (exit status {exit_status})"
    if gate.artifact is None:
        return "there is no verified artifact"
    return None


def git_commit(directory: Path) -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


@dataclass(frozen=True)
class PublishRequest:
    """Everything publishing needs, as plain values: usable from a gate session or a script."""

    path: Path
    sha256: str
    settings: PublishConfig
    gate_run_id: str
    model_type: str
    git_commit: str
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    example: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    report_dir: Path | None = None
    extra_tags: Mapping[str, str] = field(default_factory=dict)


def publish_file(request: PublishRequest, environ: Mapping[str, str] | None = None) -> PublishOutcome:
    """Upload, verify, register, alias. Never raises for a publishing failure: the outcome says."""
    env = dict(os.environ if environ is None else environ)
    settings = request.settings
    outcome = PublishOutcome("failed", sha256=request.sha256, registered_name=settings.model_name)
    tracking_uri = env.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return PublishOutcome("refused", "MLFLOW_TRACKING_URI is not set: run `onnx-gate stack up` for a local "
                              "registry, or point it at your MLflow server", sha256=request.sha256)
    endpoint = env.get("MLFLOW_S3_ENDPOINT_URL")
    try:
        store = ArtifactStore(
            s3_client(endpoint, env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")),
            endpoint=endpoint or "AWS S3", bucket=settings.bucket, prefix=settings.prefix,
        )  # fmt: skip
        metadata = {
            "model-type": request.model_type, "export-date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "format": "onnx", "git-commit": request.git_commit, "gate-run-id": request.gate_run_id,
        }  # fmt: skip
        started = time.perf_counter()
        upload = store.upload(request.path, sha256=request.sha256, metadata=metadata, model_name=settings.model_name)
        outcome.s3_uri, outcome.uploaded = upload.uri, not upload.reused
        outcome.extra["upload_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        from harness.publish.registry import Registry

        registry = Registry(tracking_uri, model_name=settings.model_name, experiment=settings.experiment, alias=settings.alias)
        registry.check_reachable()
        run_id = registry.start_run(f"gate-{request.gate_run_id}", request.params, request.metrics)
        outcome.run_id, outcome.run_url = run_id, registry.run_url(run_id)
        try:
            if request.report_dir is not None:
                registry.log_reports(request.report_dir)
            tags = {
                "s3_uri": upload.uri, "sha256": request.sha256, "size": str(upload.size),
                "gate_run_id": request.gate_run_id, "git_commit": request.git_commit, **request.extra_tags,
            }  # fmt: skip
            version, created = _register_once(store, registry, request, tags)
            registry.set_alias(version.version)  # only READY versions come back from _register_once
            outcome.status, outcome.version, outcome.created_version, outcome.alias = (
                "published", str(version.version), created, settings.alias,
            )
            registry.end_run("FINISHED")
            outcome.extra["registry_seconds"] = round(time.perf_counter() - started, 2)
        except BaseException:
            registry.end_run("FAILED")
            raise
    except PublishError as exc:
        outcome.reason = str(exc)
    except GateError as exc:
        outcome.reason = redact(str(exc))
    except Exception as exc:  # MLflow and network errors: one safe line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = f"MLflow at {tracking_uri}" if outcome.s3_uri else "publishing"
        outcome.reason = redact(f"{where} failed: {type(exc).__name__}: {first}"[:500])
    return outcome


def _register_once(store: ArtifactStore, registry: Any, request: PublishRequest, tags: Mapping[str, str]) -> tuple[Any, bool]:
    """Exactly one version per sha256, even with publishers racing: a conditional-put claim in
    the bucket elects one registrant; the others wait for its READY version."""
    existing = registry.find_version(request.sha256)
    if existing is not None:
        return registry.wait_ready(existing.version), False
    claim_key = f"{request.settings.prefix.strip('/')}/{request.settings.model_name}/{request.sha256}.registering"
    owner = f"{socket.gethostname()}:{os.getpid()}:{request.gate_run_id}"
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        if store.claim(claim_key, owner):
            try:
                existing = registry.find_version(request.sha256)
                if existing is not None:
                    return registry.wait_ready(existing.version), False
                return registry.register(request.path, request.example, request.outputs, tags), True
            finally:
                store.release(claim_key)
        existing = registry.find_version(request.sha256)
        if existing is not None and existing.status == "READY":
            return existing, False
        age = store.claim_age_s(claim_key)
        if age is not None and age > CLAIM_STALE_S:
            store.release(claim_key)  # its owner died mid-registration
            continue
        if time.monotonic() > deadline:
            raise PublishError(f"gave up after {CLAIM_WAIT_S:.0f} s waiting for another publisher of sha256 {request.sha256[:12]}…")
        time.sleep(0.5)


def _metrics(gate: GateSession) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for output, stats in gate.parity_summary()["outputs"].items():
        for key in ("max_abs", "mean_abs", "noise_ratio_worst"):
            if key in stats:
                metrics[f"parity.{output}.{key}"] = float(stats[key])
    from harness.bench import speedups

    for record in gate.latency:
        metrics[f"latency.{record.device}.{record.backend}.batch{record.batch}.median_ms"] = record.median * 1e3
        metrics[f"latency.{record.device}.{record.backend}.batch{record.batch}.p95_ms"] = record.p95 * 1e3
    for device in ("cpu", "cuda"):
        for batch, ratio in speedups(gate.latency, device).items():
            metrics[f"speedup.{device}.batch{batch}"] = ratio
    return metrics


def publish_gate(gate: GateSession, exit_status: int, *, invocation_dir: Path, extra_tags: Mapping[str, str] | None = None) -> PublishOutcome:
    reason = refusal(gate, exit_status)
    if reason is not None:
        return PublishOutcome("refused", reason)
    assert gate.artifact is not None
    from harness.export import example_feeds

    example = example_feeds(gate.config, {**gate.config.trace_sizes, **({gate.batch_dim: 1} if gate.batch_dim else {})})
    request = PublishRequest(
        path=gate.artifact.path, sha256=gate.artifact.sha256, settings=gate.config.publish,
        gate_run_id=gate.run_id, model_type=gate.config.model, git_commit=git_commit(invocation_dir),
        params={"config": gate.config.summary(), "exporter": gate.config.exporter, "opset": gate.config.opset,
                "versions": gate.artifact.versions, "artifact_sha256": gate.artifact.sha256},
        metrics=_metrics(gate), example=example, outputs=gate.torch_runner.infer(example),
        report_dir=gate.report_dir, extra_tags=dict(extra_tags or {}),
    )  # fmt: skip
    return publish_file(request)
