"""The end of a gate session, in three steps the plugin's ``pytest_sessionfinish`` calls in turn:
``build`` reads what was recorded into one GateOutcome, ``report`` writes it out, ``publish``
hands it to the publish target and writes the reports again with the target's answer.

Only the controller (or the single process) gets here: an xdist worker sees a fraction of the
session and sends what it saw to the controller instead (harness/plugin/distributed/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from harness.core.profiles import current_profile
from harness.core.publish_outcome import notify_stderr
from harness.gate.divergence import where_it_diverges
from harness.plugin.distributed import controller, roles
from harness.publish import flow
from harness.publish.targets import publish_target
from harness.report.bench import archive_benchmark_json
from harness.report.outcome import build_outcome
from harness.report.run_report import fp64_unavailable_finding, write_reports

if TYPE_CHECKING:
    from harness.core.publish_outcome import Notify
    from harness.gate.session import GateSession
    from harness.report.failures import Failures
    from harness.report.outcome import GateOutcome

LEDGER_FEED = "onnx-gate-ledger"
XDIST_HOOKS = "onnx-gate-xdist"


def build(session: pytest.Session, gate: GateSession, exitstatus: int) -> GateOutcome | None:
    """The session's outcome; None when no check of the gate ran (nothing to report)."""
    config = session.config
    feed = config.pluginmanager.get_plugin(LEDGER_FEED)
    if feed is not None:
        feed.resolve_unlabelled()
    hooks = config.pluginmanager.get_plugin(XDIST_HOOKS)
    if not gate.ledger.ran_anything:
        return None

    divergence = None
    if gate.parity.failure_case is not None and exitstatus == pytest.ExitCode.TESTS_FAILED:
        # Bounded, and never raises: the report is written whatever it finds.
        with gate.timing.measure("reports"):  # the divergence analysis reports its own cost as well
            divergence = where_it_diverges(gate, root=config.invocation_params.dir)
    return build_outcome(
        gate, exit_status=int(exitstatus), hypothesis_profile=current_profile(), publishing=_publishing(config),
        execution=hooks.execution() if hooks is not None else controller.execution_summary(config, gate),
        divergence=divergence,
    )  # fmt: skip


def report(session: pytest.Session, gate: GateSession, outcome: GateOutcome, failures: Failures | None) -> None:
    """failures.txt, the benchmark history, gate.json, summary.md and the plots."""
    _write_failures(session, outcome, failures)
    if outcome.latency:
        archive_benchmark_json(gate)
    with gate.timing.measure("reports"):
        write_reports(outcome, gate.timing)


def publish(session: pytest.Session, gate: GateSession, outcome: GateOutcome) -> GateOutcome:
    """With --gate-publish: publish through the configured target, then report once more with its
    outcome; a publish that did not succeed fails a session that had passed."""
    if not _publishing(session.config):
        return outcome

    with gate.timing.measure("publish"):
        gate.release_runners()
        target = publish_target(gate.config.publish)
        published = flow.publish_gate(
            gate, outcome, target, invocation_dir=session.config.invocation_params.dir, notify=_notifier(session.config)
        )  # fmt: skip
    outcome = outcome.published(published)
    with gate.timing.measure("reports"):
        write_reports(outcome, gate.timing, plots=False)
    if published.record_id:
        with gate.timing.measure("publish"):
            target.replace_reports(published, gate.config.publish, outcome.report_dir)
    if not published and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return outcome


def _publishing(config: pytest.Config) -> bool:
    return bool(config.getoption("gate_publish")) and not roles.is_worker(config)


def _write_failures(session: pytest.Session, outcome: GateOutcome, failures: Failures | None) -> None:
    """Full failure detail into the report; the terminal keeps one line per failed check."""
    if failures is None or not failures.items:
        return
    failures.write(outcome.report_dir)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    shown = len(reporter.stats.get("failed", [])) + len(reporter.stats.get("error", [])) if reporter else 0
    # Brief only when every failure the terminal would show has its line (no collection errors).
    if failures.brief and shown == len(failures.items):
        session.config.option.tbstyle = "no"  # the longreprs are made; this only hides them
    else:
        failures.brief = False


def _notifier(config: pytest.Config) -> Notify:
    """Progress lines from the publish step (e.g. whom it waits for), straight to the terminal."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return notify_stderr
    return lambda message: reporter.write_line(f"onnx-gate publish: {message}")


def terminal_summary(terminalreporter: Any, outcome: GateOutcome, failures: Failures | None) -> None:
    """The onnx-gate section at the end of pytest's output: verdict, failed checks, publish, report."""
    verdict = outcome.verdict
    color = {"green": True} if verdict else {"red": True}
    terminalreporter.write_sep("=", "onnx-gate", **color)
    terminalreporter.write_line(str(verdict), **color)
    if outcome.parity.get("fp64_unavailable"):
        terminalreporter.write_line(fp64_unavailable_finding(outcome.parity["fp64_unavailable"]), yellow=True)
    if failures is not None and failures.items:
        for line in failures.lines():
            terminalreporter.write_line(line, red=True)
        how = "; -v or --tb=short shows them here" if failures.brief else ""
        terminalreporter.write_line(f"details: {outcome.report_dir / 'failures.txt'}{how}")
    if outcome.publish is not None:
        published = outcome.publish
        terminalreporter.write_line(f"publish: {published}", green=bool(published), red=not published)
    terminalreporter.write_line(f"report: {outcome.report_dir / 'summary.md'}")
