"""The S3 + MLflow target (``[publish] target = "s3+mlflow"``, the default): the artifact goes,
content-addressed and verified, into an S3-compatible bucket the gate writes itself; MLflow's
registry gets one version per artifact that points at it.

Order matters: no registry version may exist before its bytes are uploaded and verified. The
registry is asked first whether it answers and accepts the credentials, so a registry that is down
stops the publish before any upload. If registration still fails afterwards, the content-addressed
object stays (harmless), the outcome says so, and a later run registers it without uploading again.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Mapping

from harness.core.publish_outcome import Notify, PublishError, PublishOutcome, failure, notify_stderr
from harness.publish.claim import ClaimOwner
from harness.publish.registry import NO_TRACKING_URI, Registry, record_and_register, replace_run_reports
from harness.publish.s3 import ArtifactStore, s3_client

if TYPE_CHECKING:
    from harness.core.config import PublishConfig
    from harness.publish.flow import PublishRequest

LABELS = {"location": "s3_uri", "record_id": "run_id", "record_url": "run_url"}  # gate.json's words, as ever

# A claim's owner rewrites it every CLAIM_REFRESH_S while it registers; a claim not rewritten for
# CLAIM_STALE_S is abandoned (an owner on this machine that no longer runs is detected at once).
CLAIM_REFRESH_S = 10.0
CLAIM_STALE_S = 120.0
CLAIM_WAIT_S = 300.0
CLAIM_NOTICE_S = 30.0

def publish(request: PublishRequest, environ: Mapping[str, str] | None = None, *, notify: Notify = notify_stderr) -> PublishOutcome:
    """Check the registry, upload, verify, register, alias. Never raises for a publishing failure:
    the outcome says, and where an uploaded object was left unregistered it says that too."""
    env = dict(os.environ if environ is None else environ)
    settings = request.settings
    outcome = PublishOutcome("failed", sha256=request.sha256, registered_name=settings.model_name, labels=LABELS)
    tracking_uri = env.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return PublishOutcome("refused", NO_TRACKING_URI, sha256=request.sha256, labels=LABELS)
    endpoint = env.get("MLFLOW_S3_ENDPOINT_URL")

    registry = Registry.from_settings(tracking_uri, settings)
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
        outcome.location, outcome.uploaded = upload.uri, not upload.reused
        outcome.extra["upload_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        record_and_register(
            registry, request, outcome, {"s3_uri": upload.uri, "size": str(upload.size)},
            lambda tags: _register_once(store, registry, request, tags, notify), notify=notify,
        )  # fmt: skip
        outcome.extra["registry_seconds"] = round(time.perf_counter() - started, 2)
    except Exception as exc:  # MLflow and network errors: one safe line
        where = f"MLflow at {registry.display_uri}" if outcome.location else "publishing"
        outcome.status, outcome.reason = failure(exc, where)
    if outcome.status != "published" and outcome.location:
        # The one half-state left: bytes in the bucket, no version. Harmless, and said out loud.
        # No promise that a rerun registers it: only that a rerun, once the cause is fixed, reuses it.
        outcome.reason += (f"; {outcome.location} is uploaded and verified but not registered: a later "
                           "--gate-publish run of this artifact reuses it instead of uploading again")
    return outcome


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
        ready = registry.wait_ready(existing.version)
        return ready, registry.created_here(ready)
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
                        ready = registry.wait_ready(existing.version)
                        return ready, registry.created_here(ready)
                    return registry.register(
                        request.path, request.example, request.outputs, tags,
                        external_data=request.manifest is not None and not request.manifest.self_contained,
                        session_options=request.session_options, source_run_id=request.source_run_id,
                    ), True  # fmt: skip
            finally:
                store.release(claim_key)
        existing = registry.find_version(request.sha256)
        if existing is not None and existing.status == "READY":
            return existing, registry.created_here(existing)
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




def replace_reports(outcome: PublishOutcome, settings: PublishConfig, report_dir: Path) -> None:
    replace_run_reports(outcome, settings, report_dir)
