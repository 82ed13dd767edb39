"""The controller side of one gate over pytest-xdist: export before any worker starts, feed its
ledger and parity statistics from the workers' reports, and say how the run was spread."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from harness.core.errors import GateError
from harness.plugin.distributed.roles import INPUT_KEY, is_controller, threads_per_worker
from harness.runtime.runners import default_threads

if TYPE_CHECKING:
    from harness.gate.session import GateSession


class XdistHooks:
    """xdist's own hooks; registered only when xdist is present, since their specs come with it."""

    def __init__(self, gate: GateSession) -> None:
        self.gate = gate
        self.config: pytest.Config | None = None  # set once the controller exported
        self.workers: dict[str, dict[str, Any]] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Export before xdist's own sessionstart starts the workers."""
        config = session.config
        if not is_controller(config) or config.option.collectonly:
            return
        try:
            self.gate.prepare(config._tmp_path_factory.mktemp("onnx-gate"))  # type: ignore[attr-defined]
        except GateError as exc:
            raise pytest.UsageError(f"onnx-gate: {exc}") from None
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        gate = self.gate
        if gate.work_dir is None:  # --collect-only: nothing was exported
            return
        node.workerinput[INPUT_KEY] = {
            "run_id": gate.run_id,
            "report_dir": str(gate.report_dir),
            # JSON-plain: execnet sends only builtins (torch.__version__ is a str subclass).
            "artifact": json.loads(json.dumps(gate.artifact.to_dict(), default=str)) if gate.artifact else None,
            "artifact_error": gate.artifact_error,
        }

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", {}).get(INPUT_KEY)
        if output is None:
            return
        self.workers[node.gateway.id] = output
        for check, nodeids in output["collected"].items():
            for nodeid in nodeids:
                self.gate.ledger.collected(check, nodeid)

    def execution(self) -> dict[str, Any]:
        """How the session ran, with what the workers said about themselves."""
        execution = execution_summary(self.config, self.gate) if self.config is not None else {}
        execution["parity_examples_per_worker"] = {
            worker: output["parity_examples"] for worker, output in sorted(self.workers.items())
        }
        if self.workers:
            execution["threads_per_worker"] = max(output["threads"] for output in self.workers.values())
        return execution


def execution_summary(config: pytest.Config, gate: GateSession) -> dict[str, Any]:
    """How the session ran: workers, threads, and how many times the artifact was exported."""
    exports = int(gate.artifact is not None and gate.artifact.origin != "given")
    if is_controller(config):
        workers = len(getattr(config.option, "tx", None) or [])
        return {
            "workers": workers,
            "threads_per_worker": threads_per_worker(workers),
            "exports": exports,
            "benchmarks": "skipped on workers: they never share the CPU with parity",
        }
    return {"workers": 0, "threads_per_worker": default_threads(), "threads_per_lane": gate.lane_threads, "exports": exports}
