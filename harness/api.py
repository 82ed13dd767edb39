"""The Python entry point for training scripts: the original design's export_and_register_model,
running the same gate in-process for a model object."""

from __future__ import annotations

import io
import logging
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, TextIO

from harness.core.caller_state import preserved
from harness.core.profiles import with_gate_run_profile
from harness.plugin.api_request import ApiRequest
from harness.plugin.suite import GATE_TEST_DIRS, gate_test_paths
from harness.publish.lineage import LineageError, record_on_training_run, training_run
from harness.report import training_log

if TYPE_CHECKING:
    from torch import nn

    from harness.core.publish_outcome import PublishOutcome
    from harness.publish.lineage import TrainingRun
    from harness.report.outcome import GateOutcome


LOGGER = training_log.LOGGER
LOG_FILE = "pytest.log"  # pytest's whole output, in the report folder


@dataclass
class GateResult:
    success: bool  # the gate passed and, when asked, the model was published
    reason: str
    exit_code: int
    verdict: str | None = None
    sha256: str | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    report_path: Path | None = None
    publish: PublishOutcome | None = None  # what the publish target said, when asked to publish

    # Where the model went, as the publish outcome says (None without a publish).
    @property
    def location(self) -> str | None:
        """Where the artifact's bytes are: an s3:// URI (target s3+mlflow) or MLflow's artifact URI."""
        return self.publish.location if self.publish else None

    @property
    def s3_uri(self) -> str | None:
        """The artifact's location, named as before publish targets: an s3:// URI for s3+mlflow."""
        return self.location

    @property
    def registered_name(self) -> str | None:
        return self.publish.registered_name if self.publish else None

    @property
    def version(self) -> str | None:
        return self.publish.version if self.publish else None

    @property
    def alias(self) -> str | None:
        return self.publish.alias if self.publish else None


def export_and_register_model(
    model: nn.Module,
    run_id: str | None = None,
    *,
    config_overrides: Mapping[str, Any] | None = None,
    publish: bool = True,
    pytest_args: Sequence[str] = (),
    verbose: bool = False,
) -> GateResult:
    """Export ``model`` to ONNX, run the whole gate on it and, if it passed, publish it.

    * model: the model object, which is its own model: unless it is a LocalizationNet (or the
      config names the built-in default), ``config_overrides`` or ``[tool.onnx-gate]`` describe
      its inputs and outputs; the built-in model's settings do not apply to it.
    * run_id: the training run's MLflow run id. Default: the caller's active MLflow run, if any.
      The registered version names it as its source run, and the gate's verdict, key figures and
      reports are logged to it.
    * config_overrides: ``[tool.onnx-gate]`` keys to override (inputs, outputs, tolerance, ...).
    * publish: upload and register when the gate passed. Default: True.
    * pytest_args: more pytest arguments, e.g. ``["--gate-bench-quick"]``.
    * verbose: stream pytest's output. Default: False: one line per phase through the
      ``onnx_gate`` logger; pytest's whole output goes to ``pytest.log`` in the report folder.

    Raises nothing for a gate or publish failure: ``result.success`` and ``result.reason`` say.
    The caller's process state (harness/core/caller_state.py) is as it was when this returns.
    """
    import pytest

    with preserved(model, test_folders=GATE_TEST_DIRS):
        try:
            lineage = training_run(run_id)
        except LineageError as exc:
            LOGGER.error("onnx-gate: %s", exc)
            return GateResult(False, str(exc), exit_code=int(pytest.ExitCode.USAGE_ERROR))
        return _gate(model, lineage, config_overrides or {}, publish, pytest_args, verbose)


def _gate(
    model: nn.Module, lineage: TrainingRun | None, overrides: Mapping[str, Any], publish: bool,
    pytest_args: Sequence[str], verbose: bool,
) -> GateResult:
    import pytest

    tags = {"training_run_id": lineage.run_id} if lineage else {}
    request = ApiRequest(model, overrides, tags, lineage.run_id if lineage else None)
    args = with_gate_run_profile([*gate_test_paths(), *pytest_args])
    if publish:
        args.append("--gate-publish")
    with tempfile.TemporaryDirectory(prefix="onnx-gate-api-") as folder:
        log_path = Path(folder) / LOG_FILE
        with _pytest_output(log_path, verbose):
            exit_code = int(pytest.main(args, plugins=[request]))
        outcome = request.outcome
        if outcome is None:
            reason = _usage_error(log_path) or f"the gate did not run (pytest exit status {exit_code})"
            LOGGER.error("onnx-gate: %s", reason)
            return GateResult(False, reason, exit_code)
        shutil.copyfile(log_path, outcome.report_dir / LOG_FILE)
    training_log.log(training_log.outcome_lines(outcome))
    if lineage is not None:
        try:
            record_on_training_run(lineage, outcome)
        except LineageError as exc:  # the release stands; only the training run's copy is missing
            LOGGER.warning("onnx-gate: %s", exc)
    return _result(outcome, exit_code)


@contextmanager
def _pytest_output(log_path: Path, verbose: bool) -> Iterator[None]:
    """pytest's terminal output into ``log_path`` (and on to the caller's stdout when verbose).
    The caller's logging handlers keep the streams they hold, so the phase lines still reach them."""
    with log_path.open("w", encoding="utf-8") as log_file:
        stream: Any = _Tee(log_file, sys.stdout) if verbose else log_file
        saved = sys.stdout, sys.stderr
        root = logging.getLogger()
        caller_handlers = list(root.handlers)
        sys.stdout = sys.stderr = stream
        root.handlers[:] = [_GateLinesOnly(caller_handlers, stream)]
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
            root.handlers[:] = caller_handlers


class _GateLinesOnly(logging.Handler):
    """In place of the root logger's handlers while the gate runs: the gate's own lines go on to
    the caller's handlers, every other library's records (the exporter's INFO chatter) into the
    pytest log beside pytest's output."""

    def __init__(self, caller_handlers: list[logging.Handler], stream: TextIO) -> None:
        super().__init__(logging.NOTSET)
        self.caller_handlers = caller_handlers
        self.to_log = logging.StreamHandler(stream)
        self.to_log.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == LOGGER.name or record.name.startswith(LOGGER.name + "."):
            for handler in self.caller_handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
        else:
            self.to_log.handle(record)


class _Tee(io.TextIOBase):
    """Writes to a file and a stream at once."""

    def __init__(self, file: TextIO, stream: TextIO) -> None:
        self.file, self.stream = file, stream

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"


def _usage_error(log_path: Path) -> str | None:
    """pytest's "ERROR: onnx-gate: ..." line for a gate that could not start."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line.removeprefix("ERROR: ").removeprefix("onnx-gate: ") for line in lines if line.startswith("ERROR:")]
    return errors[-1] if errors else None


def _result(outcome: GateOutcome, exit_code: int) -> GateResult:
    verdict, published = outcome.verdict, outcome.publish
    return GateResult(
        success=outcome.passed and exit_code == 0,
        reason=str(verdict) if not verdict else (str(published) if published is not None else str(verdict)),
        exit_code=exit_code,
        verdict="passed" if verdict else "failed",
        sha256=outcome.artifact.sha256 if outcome.artifact else None,
        parity=dict(outcome.parity),
        latency=[r.to_dict() for r in outcome.latency],
        report_path=outcome.report_dir / "summary.md",
        publish=published,
    )  # fmt: skip
