"""The MLflow Model Registry (3.x, tracking server over HTTP): one run per gate session, one
registered version per verified artifact, an alias moved only once the version is READY."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from harness.core.errors import first_line
from harness.core.publish_outcome import PublishError, PublishRefused
from harness.core.secrets import redact, split_userinfo
from harness.publish.naming import CALLABLE_TAG, DIGEST_TAG, other_config_versions

if TYPE_CHECKING:
    from harness.core.config import PublishConfig
    from harness.core.publish_outcome import Notify, PublishOutcome
    from harness.publish.flow import PublishRequest

PUBLISHER_TAG = "publisher_id"
NO_TRACKING_URI = ("MLFLOW_TRACKING_URI is not set: run `onnx-gate stack up` for a local registry, or point it at "
                   "your MLflow server")


def apply_client_settings() -> None:
    """MLflow's client settings for a release gate, unless the user set them: called before MLflow
    is imported or used (it reads them from the environment), never as a side effect of an import."""
    # Fail in seconds, not after MLflow's default minutes of retries, when the server is down.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    # A release gate talks to the servers it is given, nothing else: MLflow's usage telemetry is off.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[prefix] = text[:6000]


class Registry:
    def __init__(self, tracking_uri: str, *, model_name: str, experiment: str, alias: str) -> None:
        apply_client_settings()
        self.tracking_uri = tracking_uri.rstrip("/")
        # MLflow itself prints the URI it is given ("View run at ..."), so it gets the URI without
        # its user:password@ part, and the credentials by its own variables, which redact() knows.
        self.display_uri, self._userinfo = split_userinfo(self.tracking_uri)
        if self._userinfo is not None:
            os.environ.setdefault("MLFLOW_TRACKING_USERNAME", self._userinfo[0])
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", self._userinfo[1])
            self.tracking_uri = self.display_uri
        self.model_name, self.experiment, self.alias = model_name, experiment, alias
        self._run_id: str | None = None  # the gate's own run, once started
        # Tags the versions this publisher creates, so that a retry after a write that went through
        # although the server answered with a conflict still knows the version is its own.
        self.publisher_id = uuid.uuid4().hex

    def check_reachable(self) -> None:
        """The server answers /health; urllib takes no userinfo in a URL, so it goes in a header."""
        import base64

        request = urllib.request.Request(f"{self.display_uri}/health")
        if self._userinfo is not None:
            token = base64.b64encode(":".join(self._userinfo).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, ValueError) as exc:
            raise PublishError(redact(f"MLflow tracking server at {self.display_uri} is unreachable ({type(exc).__name__})")) from None
        raise PublishError(f"MLflow tracking server at {self.display_uri} is not healthy")

    def check_access(self) -> None:
        """One authenticated read, so a wrong password or token fails before anything is uploaded."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.search_registered_models(max_results=1)
        except MlflowException as exc:
            text = str(exc)
            if any(code in text for code in ("401", "403", "UNAUTHENTICATED", "PERMISSION_DENIED")):
                raise PublishError(redact(
                    f"MLflow at {self.display_uri} rejected the credentials: check MLFLOW_TRACKING_USERNAME / "
                    "MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN or the user:password in MLFLOW_TRACKING_URI"
                )) from None  # fmt: skip
            first = first_line(text, type(exc).__name__)
            raise PublishError(redact(f"MLflow at {self.display_uri} refused a test request: {first}"[:500])) from None

    @property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def find_version(self, sha256: str) -> Any | None:
        """The registered version of this artifact, if any (READY first, oldest first)."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name='{self.model_name}'")
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return None
            raise
        matching = [v for v in versions if v.tags.get("sha256") == sha256 and v.status != "FAILED_REGISTRATION"]
        matching.sort(key=lambda v: (v.status != "READY", int(v.version)))
        return matching[0] if matching else None

    def created_here(self, version: Any) -> bool:
        """Whether this publisher created ``version`` (an earlier attempt of this same publish)."""
        return bool(version.tags.get(PUBLISHER_TAG) == self.publisher_id)

    def start_run(self, run_name: str, params: Mapping[str, Any], metrics: Mapping[str, float]) -> str:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        experiment = mlflow.set_experiment(self.experiment)
        # MLflow would tag the run with sys.argv[0], an absolute path of the build machine. Called
        # in-process from a training script with a run of its own active, the gate's run nests
        # under it (MLflow refuses a second top-level run) and ends without ending the caller's.
        run = mlflow.start_run(run_name=run_name, experiment_id=experiment.experiment_id,
                               tags={"mlflow.source.name": "onnx-gate"}, nested=mlflow.active_run() is not None)
        self._run_id = run.info.run_id
        flat: dict[str, str] = {}
        _flatten("", params, flat)
        mlflow.log_params(flat)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})  # NaN-free
        return run.info.run_id

    def run_url(self, run_id: str) -> str:
        experiment_id = self.client.get_run(run_id).info.experiment_id
        return f"{self.display_uri}/#/experiments/{experiment_id}/runs/{run_id}"

    def log_reports(self, report_dir: Path) -> None:
        import mlflow

        for name in ("gate.json", "summary.md", "benchmark.json", "parity.png", "latency.png", "junit.xml"):
            if (report_dir / name).is_file():
                mlflow.log_artifact(str(report_dir / name), artifact_path="gate")

    def replace_reports(self, run_id: str, report_dir: Path) -> None:
        """Upload the final gate.json and summary.md, which now hold the publish section."""
        for name in ("gate.json", "summary.md"):
            self.client.log_artifact(run_id, str(report_dir / name), artifact_path="gate")

    @classmethod
    def from_settings(cls, tracking_uri: str, settings: PublishConfig) -> Registry:
        return cls(tracking_uri, model_name=settings.model_name, experiment=settings.experiment, alias=settings.alias)

    def check_model_config(self, model_tags: Mapping[str, str], *, allow_change: bool) -> None:
        """Refuse to add a version to (or move an alias of) a registered model whose versions hold
        another model config, unless the config allows it. Raises PublishRefused."""
        from mlflow.exceptions import MlflowException

        if allow_change or DIGEST_TAG not in model_tags:
            return
        try:
            versions = self.client.search_model_versions(f"name='{self.model_name}'")
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return
            raise
        others = other_config_versions(versions, model_tags[DIGEST_TAG])
        if others:
            newest = max(others, key=lambda v: int(v.version))
            raise PublishRefused(
                f"registered model {self.model_name!r} holds versions of another model config (v{newest.version}: "
                f"{newest.tags.get(CALLABLE_TAG, '?')}, config digest {newest.tags[DIGEST_TAG]}; this one: "
                f"{model_tags.get(CALLABLE_TAG, '?')}, {model_tags[DIGEST_TAG]}); set [publish] model_name to this "
                "model's own name, or allow_config_change = true if it really replaces that model"
            )

    def register(
        self, onnx_path: Path, example: Mapping[str, Any], outputs: Mapping[str, Any], tags: Mapping[str, str],
        *, external_data: bool = False, session_options: Mapping[str, Any] | None = None,
        source_run_id: str | None = None,
    ) -> Any:
        """Log the artifact with the ONNX flavor in the active run and register it as a version.

        ``external_data``: the graph keeps its weights in external data files (2 GB and more); MLflow
        then saves them as external data too. ``session_options``: ONNX Runtime's settings as the
        gate measured with, which MLflow's pyfunc applies when it loads the model.
        ``source_run_id``: the training run the version records as its source run (MLflow's UI
        links the two); default: the gate's own run."""
        import mlflow
        import onnx
        import onnxruntime
        from mlflow.models import infer_signature

        signature = infer_signature(dict(example), dict(outputs))
        proto = onnx.load(str(onnx_path))  # with its external data: MLflow serializes the whole model
        # MLflow validates an input example by loading the saved model once more in this process:
        # for a model of 2 GB and more, GBs for a check the gate has made. The signature stays.
        info = mlflow.onnx.log_model(
            proto, name="model", signature=signature, input_example=None if external_data else dict(example),
            save_as_external_data=external_data, onnx_execution_providers=["CPUExecutionProvider"],
            onnx_session_options=dict(session_options) if session_options else None,
            # Stated, not inferred: inference spawns a subprocess that costs seconds per publish.
            pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        )  # fmt: skip
        del proto
        self._ensure_registered_model()
        version = self.client.create_model_version(
            self.model_name, info.model_uri, run_id=source_run_id or self._run_id,
            tags={**tags, PUBLISHER_TAG: self.publisher_id},
            model_id=info.model_id, await_creation_for=0,
        )  # fmt: skip
        return self.wait_ready(version.version)

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.model_name)
        except MlflowException as exc:
            if "ALREADY_EXISTS" not in str(exc.error_code):
                raise

    def wait_ready(self, version: str, timeout_s: float = 300) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.client.get_model_version(self.model_name, version)
            if current.status == "READY":
                return current
            if current.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
                raise PublishError(f"{self.model_name} version {version} is {current.status}, not READY")
            time.sleep(0.5)

    def artifact_location(self, version: Any) -> str:
        """Where MLflow keeps the version's files: its logged model's artifact location (MLflow 3,
        e.g. ``mlflow-artifacts:/1/models/m-.../artifacts``), else the version's source."""
        source = str(version.source)
        # A version read back over REST may not carry model_id; its source names the logged model.
        model_id = getattr(version, "model_id", None) or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)
        if model_id:
            return str(self.client.get_logged_model(model_id).artifact_location)
        return source

    def set_alias(self, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, self.alias, version)

    def end_run(self, status: str = "FINISHED") -> None:
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id == self._run_id:  # never a caller's run
            mlflow.end_run(status=status)


def replace_run_reports(outcome: PublishOutcome, settings: PublishConfig, report_dir: Path) -> None:
    """The MLflow run's copy of gate.json and summary.md, replaced by the final ones; a failure only
    leaves that copy stale (the version stands), so it is a warning."""
    if outcome.record_id is None:
        return
    registry = Registry.from_settings(os.environ["MLFLOW_TRACKING_URI"], settings)
    try:
        registry.replace_reports(outcome.record_id, report_dir)
    except Exception as exc:
        import warnings

        warnings.warn(redact(f"onnx-gate: could not update the MLflow run's reports: {type(exc).__name__}"), stacklevel=1)


# A SQLite-backed MLflow server can answer concurrent writers with "database is locked"; MLflow's
# client retries, and a write that in fact went through then fails as an IntegrityError. The stage is
# idempotent (one version per sha256, found before any new one is made), so it runs once more.
REGISTRY_ATTEMPTS = 2


def _transient_registry_error(exc: BaseException) -> bool:
    return "IntegrityError" in str(exc) or "database is locked" in str(exc)


def record_and_register(
    registry: Registry, request: PublishRequest, outcome: PublishOutcome, location_tags: Mapping[str, str],
    register_version: Callable[[Mapping[str, str]], tuple[Any, bool]], *, notify: Notify,
) -> None:
    """The MLflow stage every MLflow target shares: one run for this gate, with its params, metrics
    and reports; the version (``register_version`` finds or makes the one READY version of the
    artifact, given its tags); the alias. Sets ``outcome`` to published; raises on failure."""
    for attempt in range(REGISTRY_ATTEMPTS):
        try:
            _record_and_register(registry, request, outcome, location_tags, register_version)
            return
        except Exception as exc:
            if attempt + 1 == REGISTRY_ATTEMPTS or not _transient_registry_error(exc):
                raise
            notify(f"onnx-gate: MLflow answered a concurrent write with a conflict ({type(exc).__name__}); trying once more")


def _record_and_register(
    registry: Registry, request: PublishRequest, outcome: PublishOutcome, location_tags: Mapping[str, str],
    register_version: Callable[[Mapping[str, str]], tuple[Any, bool]],
) -> None:
    run_id = registry.start_run(f"gate-{request.gate_run_id}", request.params, request.metrics)
    outcome.record_id, outcome.record_url = run_id, registry.run_url(run_id)
    try:
        if request.report_dir is not None:
            registry.log_reports(request.report_dir)
        tags = {
            **location_tags, "sha256": request.sha256, "gate_run_id": request.gate_run_id,
            "git_commit": request.git_commit, **request.model_tags, **request.extra_tags,
        }  # fmt: skip
        version, created = register_version(tags)
        registry.set_alias(version.version)  # only READY versions come back from register_version
        outcome.status, outcome.version, outcome.created_version, outcome.alias = (
            "published", str(version.version), created, registry.alias,
        )
        registry.end_run("FINISHED")
    except BaseException:
        registry.end_run("FAILED")
        raise
