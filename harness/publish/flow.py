"""Publishing, only after a gate session passed in full: what is published, with which record,
through which target. The outcome decides whether it may (GateOutcome.release_refusal); the
session supplies the artifact and its example; the target (harness/publish/targets.py) stores
and registers it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from harness.bench.measure import speedups
from harness.candidates.publish import candidate_release
from harness.core.config import PublishConfig
from harness.core.publish_outcome import Notify, PublishOutcome, notify_stderr
from harness.publish.naming import version_tags
from harness.publish.targets import publish_target
from harness.runtime.artifact_files import ArtifactManifest
from harness.runtime.export import example_feeds
from harness.runtime.runners import DEFAULT_GRAPH_OPTIMIZATION, GRAPH_OPTIMIZATION_LEVELS

if TYPE_CHECKING:
    from harness.gate.session import GateSession
    from harness.publish.targets import PublishTarget
    from harness.report.outcome import GateOutcome


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
    # The training run that produced the model (MLflow run id): the version's source run.
    source_run_id: str | None = None


def publish_file(
    request: PublishRequest, environ: Mapping[str, str] | None = None, *, notify: Notify = notify_stderr
) -> PublishOutcome:
    """Publish ``request`` through the target its settings name; never raises for a publishing failure."""
    return publish_target(request.settings).publish(request, environ, notify=notify)


def _metrics(outcome: GateOutcome) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for output, stats in outcome.parity["outputs"].items():
        for key in ("max_abs", "mean_abs", "noise_ratio_worst"):
            if key in stats:
                metrics[f"parity.{output}.{key}"] = float(stats[key])

    for record in outcome.latency:
        metrics[f"latency.{record.device}.{record.backend}.batch{record.batch}.median_ms"] = record.median * 1e3
        metrics[f"latency.{record.device}.{record.backend}.batch{record.batch}.p95_ms"] = record.p95 * 1e3
    for device in ("cpu", "cuda"):
        for batch, ratio in speedups(list(outcome.latency), device).items():
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
    return {
        "graph_optimization_level": GRAPH_OPTIMIZATION_LEVELS[DEFAULT_GRAPH_OPTIMIZATION],
        "intra_op_num_threads": gate.bench_threads, "inter_op_num_threads": 1, "execution_mode": "sequential",
    }  # fmt: skip


def publish_gate(
    gate: GateSession, outcome: GateOutcome, target: PublishTarget, *, invocation_dir: Path,
    notify: Notify = notify_stderr,
) -> PublishOutcome:
    """Publish what ``gate`` checked through ``target``, when ``outcome`` allows a release."""
    reason = outcome.release_refusal()
    if reason is not None:
        return PublishOutcome("refused", reason, labels=target.LABELS)
    assert gate.artifact is not None

    path, sha256, candidate_params, candidate_tags = gate.artifact.path, gate.artifact.sha256, {}, {}
    if gate.config.candidates.publish is not None:  # opt-in; without it the plain export ships as always

        release = candidate_release(gate)
        if isinstance(release, str):
            return PublishOutcome("refused", release, labels=target.LABELS)
        path, sha256, candidate_params, candidate_tags = release.path, release.sha256, release.params, release.tags
    example = example_feeds(gate.config, gate.sizes_at(1))
    request = PublishRequest(
        path=path, sha256=sha256, settings=gate.config.publish,
        gate_run_id=gate.run_id, model_type=gate.config.model, git_commit=git_commit(invocation_dir),
        params={"config": portable_summary(gate, invocation_dir), "exporter": gate.config.exporter, "opset": gate.config.opset,
                "versions": gate.artifact.versions, "artifact_sha256": sha256, **candidate_params},
        metrics=_metrics(outcome), example=example, outputs=gate.torch_runner.infer(example),
        report_dir=gate.report_dir, extra_tags={**candidate_tags, **gate.options.publish_tags},
        # A candidate (harness/candidates) ships as its own single file; the export, with its data files.
        manifest=ArtifactManifest.from_dicts(gate.artifact.files) if gate.artifact.files and path == gate.artifact.path else None,
        model_tags=version_tags(gate.config), allow_config_change=gate.config.publish.allow_config_change,
        session_options=measured_session_options(gate), source_run_id=gate.options.source_run_id,
    )  # fmt: skip
    if not gate.model_given:  # an API caller's model object stays theirs
        gate.release_model()
    return target.publish(request, notify=notify)
