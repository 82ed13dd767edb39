"""Publishing, only after a gate session passed in full: verified upload, then registration.

Order matters: no registry version may exist before its bytes are uploaded and verified. The
registry is asked first whether it answers and accepts the credentials, so a registry that is down
stops the publish before any upload. If registration still fails afterwards, the content-addressed
object stays (harmless), the outcome says so, and a later run registers it without uploading again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Mapping

from harness.config import PublishConfig
from harness.errors import GateError
from harness.publish.claim import ClaimOwner
from harness.artifact_files import ArtifactManifest
from harness.publish.s3 import ArtifactStore, PublishError, PublishRefused, s3_client
from harness.publish.secrets import redact

if TYPE_CHECKING:
    from harness.session import GateSession

# A claim's owner rewrites it every CLAIM_REFRESH_S while it registers; a claim not rewritten for
# CLAIM_STALE_S is abandoned (an owner on this machine that no longer runs is detected at once).
CLAIM_REFRESH_S = 10.0
CLAIM_STALE_S = 120.0
CLAIM_WAIT_S = 300.0
CLAIM_NOTICE_S = 30.0

Notify = Callable[[str], None]


def notify_stderr(message: str) -> None:
    print(f"onnx-gate publish: {message}", file=sys.stderr, flush=True)


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
    # The graph's external data files, when it has any (None: ``path`` is self-contained).
    manifest: ArtifactManifest | None = None
    model_tags: Mapping[str, str] = field(default_factory=dict)  # publish/naming.py's version_tags
    allow_config_change: bool = False
    # The ONNX Runtime session options the gate measured with, kept in the MLflow model.
    session_options: Mapping[str, Any] | None = None


def publish_file(
    request: PublishRequest, environ: Mapping[str, str] | None = None, *, notify: Notify = notify_stderr
) -> PublishOutcome:
    """Check the registry, upload, verify, register, alias. Never raises for a publishing failure:
    the outcome says, and where an uploaded object was left unregistered it says that too."""
    env = dict(os.environ if environ is None else environ)
    settings = request.settings
    outcome = PublishOutcome("failed", sha256=request.sha256, registered_name=settings.model_name)
    tracking_uri = env.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return PublishOutcome("refused", "MLFLOW_TRACKING_URI is not set: run `onnx-gate stack up` for a local "
                              "registry, or point it at your MLflow server", sha256=request.sha256)
    endpoint = env.get("MLFLOW_S3_ENDPOINT_URL")
    from harness.publish.registry import Registry

    registry = Registry(
        tracking_uri, model_name=settings.model_name, experiment=settings.experiment, alias=settings.alias
    )
    try:
        started = time.perf_counter()
        registry.check_reachable()
        registry.check_access()
        registry.check_model_config(request.model_tags, allow_change=request.allow_config_change)
        store = ArtifactStore(
            s3_client(endpoint, env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")),
            endpoint=endpoint or "AWS S3", bucket=settings.bucket, prefix=settings.prefix,
        )  # fmt: skip
        metadata = {
            "model-type": request.model_type, "export-date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "format": "onnx", "git-commit": request.git_commit, "gate-run-id": request.gate_run_id,
        }  # fmt: skip
        if request.manifest is not None and not request.manifest.self_contained:
            upload = store.upload_artifact(request.path, request.manifest, metadata=metadata, model_name=settings.model_name)
        else:
            upload = store.upload(request.path, sha256=request.sha256, metadata=metadata, model_name=settings.model_name)
        outcome.s3_uri, outcome.uploaded = upload.uri, not upload.reused
        outcome.extra["upload_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        for attempt in range(REGISTRY_ATTEMPTS):
            try:
                _record_and_register(registry, store, request, upload, outcome, notify)
                break
            except Exception as exc:
                if attempt + 1 == REGISTRY_ATTEMPTS or not _transient_registry_error(exc):
                    raise
                notify(f"onnx-gate: MLflow answered a concurrent write with a conflict ({type(exc).__name__}); trying once more")
        outcome.extra["registry_seconds"] = round(time.perf_counter() - started, 2)
    except PublishRefused as exc:
        outcome.status, outcome.reason = "refused", redact(str(exc))
    except PublishError as exc:
        outcome.reason = redact(str(exc))
    except GateError as exc:
        outcome.reason = redact(str(exc))
    except Exception as exc:  # MLflow and network errors: one safe line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = f"MLflow at {registry.display_uri}" if outcome.s3_uri else "publishing"
        outcome.reason = redact(f"{where} failed: {type(exc).__name__}: {first}"[:500])
    if outcome.status != "published" and outcome.s3_uri:
        # The one half-state left: bytes in the bucket, no version. Harmless, and said out loud.
        # No promise that a rerun registers it: only that a rerun, once the cause is fixed, reuses it.
        outcome.reason += (f"; {outcome.s3_uri} is uploaded and verified but not registered: a later "
                           "--gate-publish run of this artifact reuses it instead of uploading again")
    return outcome


# A SQLite-backed MLflow server can answer concurrent writers with "database is locked"; MLflow's
# client retries, and a write that in fact went through then fails as an IntegrityError. The stage is
# idempotent (one version per sha256, found before any new one is made), so it runs once more.
REGISTRY_ATTEMPTS = 2


def _transient_registry_error(exc: BaseException) -> bool:
    return "IntegrityError" in str(exc) or "database is locked" in str(exc)


def _record_and_register(
    registry: Any, store: ArtifactStore, request: PublishRequest, upload: Any, outcome: PublishOutcome,
    notify: Notify,
) -> None:
    """One MLflow run for this gate, the version (one per artifact) and the alias."""
    settings = request.settings
    run_id = registry.start_run(f"gate-{request.gate_run_id}", request.params, request.metrics)
    outcome.run_id, outcome.run_url = run_id, registry.run_url(run_id)
    try:
        if request.report_dir is not None:
            registry.log_reports(request.report_dir)
        tags = {
            "s3_uri": upload.uri, "sha256": request.sha256, "size": str(upload.size),
            "gate_run_id": request.gate_run_id, "git_commit": request.git_commit, **request.model_tags,
            **request.extra_tags,
        }  # fmt: skip
        version, created = _register_once(store, registry, request, tags, notify)
        registry.set_alias(version.version)  # only READY versions come back from _register_once
        outcome.status, outcome.version, outcome.created_version, outcome.alias = (
            "published", str(version.version), created, settings.alias,
        )
        registry.end_run("FINISHED")
    except BaseException:
        registry.end_run("FAILED")
        raise


@contextmanager
def _refreshing(store: ArtifactStore, key: str, owner: str) -> Generator[None, None, None]:
    """Keep the claim fresh while its owner registers, so waiters can tell a slow owner from a dead one."""
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(CLAIM_REFRESH_S):
            try:
                store.refresh_claim(key, owner)
            except Exception:  # a missed refresh only risks being judged stale later
                pass

    thread = threading.Thread(target=refresh, name="onnx-gate-claim-refresh", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _register_once(
    store: ArtifactStore, registry: Any, request: PublishRequest, tags: Mapping[str, str],
    notify: Notify = notify_stderr,
) -> tuple[Any, bool]:
    """Exactly one version per sha256, even with publishers racing: a conditional-put claim in
    the bucket elects one registrant; the others wait for its READY version, saying for whom."""
    existing = registry.find_version(request.sha256)
    if existing is not None:
        return registry.wait_ready(existing.version), False
    claim_key = f"{request.settings.prefix.strip('/')}/{request.settings.model_name}/{request.sha256}.registering"
    claim_uri = f"s3://{store.bucket}/{claim_key}"
    owner = ClaimOwner.current(request.gate_run_id).encode()
    deadline = time.monotonic() + CLAIM_WAIT_S
    next_notice = 0.0
    while True:
        if store.claim(claim_key, owner):
            try:
                with _refreshing(store, claim_key, owner):
                    existing = registry.find_version(request.sha256)
                    if existing is not None:
                        return registry.wait_ready(existing.version), False
                    return registry.register(
                        request.path, request.example, request.outputs, tags,
                        external_data=request.manifest is not None and not request.manifest.self_contained,
                        session_options=request.session_options,
                    ), True  # fmt: skip
            finally:
                store.release(claim_key)
        existing = registry.find_version(request.sha256)
        if existing is not None and existing.status == "READY":
            return existing, False
        state = store.read_claim(claim_key)
        if state is None:
            continue  # released meanwhile: try to claim it
        text, age = state
        holder = ClaimOwner.decode(text)
        who = holder.describe() if holder else f"an unknown owner ({text[:60]!r})"
        gone = holder is not None and holder.is_gone()
        if gone or age > CLAIM_STALE_S:
            why = "no longer runs" if gone else f"has not refreshed it for {age:.0f} s"
            if store.release_if(claim_key, text):
                notify(f"cleared the registration claim {claim_uri}: its owner, {who}, {why}")
            continue
        if time.monotonic() > deadline:
            raise PublishError(
                f"gave up after {CLAIM_WAIT_S:.0f} s waiting for {who}, which holds the registration claim "
                f"{claim_uri}; if that publisher is not running, delete the claim object and publish again"
            )
        if time.monotonic() >= next_notice:
            notify(
                f"waiting for {who}, which holds the registration claim {claim_uri} (refreshed {age:.0f} s ago); "
                f"it is cleared once its owner is gone or after {CLAIM_STALE_S:.0f} s without a refresh, "
                "or delete that object to clear it by hand"
            )
            next_notice = time.monotonic() + CLAIM_NOTICE_S
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


def _portable(path: str, base: Path) -> str:
    """A path as the build machine's folder layout does not matter: relative to the invocation
    folder when inside it, else the file name alone."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return path
    try:
        return candidate.relative_to(base).as_posix()
    except ValueError:
        return candidate.name


def portable_summary(gate: GateSession, base: Path) -> dict[str, Any]:
    """The config summary as published: the same values, no absolute path of this machine."""
    summary = gate.config.summary()
    for key in ("checkpoint", "onnx"):
        if summary.get(key):
            summary[key] = _portable(summary[key], base)
    # Sources read "PATH" or "PATH [tool.onnx-gate]".
    summary["sources"] = [
        " [".join([_portable(path, base), *rest]) for path, *rest in (s.split(" [", 1) for s in summary["sources"])
    ]
    return summary


def measured_session_options(gate: GateSession) -> dict[str, Any]:
    """ONNX Runtime's session options as the gate's CPU runners set them (runners.OrtRunner), in
    the form MLflow's ONNX flavor applies when it loads the model for inference."""
    from harness.runners import DEFAULT_GRAPH_OPTIMIZATION, GRAPH_OPTIMIZATION_LEVELS

    return {
        "graph_optimization_level": GRAPH_OPTIMIZATION_LEVELS[DEFAULT_GRAPH_OPTIMIZATION],
        "intra_op_num_threads": gate.bench_threads, "inter_op_num_threads": 1, "execution_mode": "sequential",
    }  # fmt: skip


def publish_gate(
    gate: GateSession, exit_status: int, *, invocation_dir: Path, extra_tags: Mapping[str, str] | None = None,
    notify: Notify = notify_stderr,
) -> PublishOutcome:
    reason = refusal(gate, exit_status)
    if reason is not None:
        return PublishOutcome("refused", reason)
    assert gate.artifact is not None
    from harness.export import example_feeds
    from harness.publish.naming import version_tags

    path, sha256, candidate_params, candidate_tags = gate.artifact.path, gate.artifact.sha256, {}, {}
    if gate.config.candidates.publish is not None:  # opt-in; without it the plain export ships as always
        from harness.candidates.publish import candidate_release

        release = candidate_release(gate)
        if isinstance(release, str):
            return PublishOutcome("refused", release)
        path, sha256, candidate_params, candidate_tags = release.path, release.sha256, release.params, release.tags
    example = example_feeds(gate.config, {**gate.config.trace_sizes, **({gate.batch_dim: 1} if gate.batch_dim else {})})
    request = PublishRequest(
        path=path, sha256=sha256, settings=gate.config.publish,
        gate_run_id=gate.run_id, model_type=gate.config.model, git_commit=git_commit(invocation_dir),
        params={"config": portable_summary(gate, invocation_dir), "exporter": gate.config.exporter, "opset": gate.config.opset,
                "versions": gate.artifact.versions, "artifact_sha256": sha256, **candidate_params},
        metrics=_metrics(gate), example=example, outputs=gate.torch_runner.infer(example),
        report_dir=gate.report_dir, extra_tags={**candidate_tags, **dict(extra_tags or {})},
        # A candidate (harness/candidates) ships as its own single file; the export, with its data files.
        manifest=ArtifactManifest.from_dicts(gate.artifact.files) if gate.artifact.files and path == gate.artifact.path else None,
        model_tags=version_tags(gate.config), allow_config_change=gate.config.publish.allow_config_change,
        session_options=measured_session_options(gate),
    )  # fmt: skip
    if not gate.model_given:  # an API caller's model object stays theirs
        gate.release_model()
    return publish_file(request, notify=notify)
