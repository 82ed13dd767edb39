"""One gate over pytest-xdist workers: one export, one ledger, one report, one publish.

The controller exports (or validates the given file) before any worker starts and hands the path
and sha256 to the workers through ``workerinput``; a worker hashes the file again and never exports.
Each test report carries, as plain values in ``user_properties``, the check it belongs to and the
parity statistics its test added (``ParityStats.take_delta``); the controller feeds its ledger and its parity statistics from
the reports it receives, so gate.json and summary.md hold what a single-process run would.

Benchmarks skip on workers: latency measured while other workers load the cores is wrong, and a
session whose latency checks skipped cannot pass or publish. Nothing here imports torch at module
level; the xdist hooks live on :class:`XdistHooks`, registered only where xdist is installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.checks.latency import BASELINE, BENCH_CHECKS, LATENCY_GPU
from harness.core.errors import GateError
from harness.runtime import runners
from harness.runtime.artifact_files import file_sha256, rehash
from harness.runtime.export import ArtifactInfo
from harness.runtime.runners import default_threads

if TYPE_CHECKING:
    from harness.gate.session import GateSession

INPUT_KEY = "onnx_gate"  # in workerinput and workeroutput
CHECK_PROPERTY = "onnx_gate_check"
PARITY_PROPERTY = "onnx_gate_parity"
LATENCY_CHECKS = (*BENCH_CHECKS, LATENCY_GPU.name, BASELINE.name)  # timing beside other workers is wrong
BENCHMARKS_SKIP_REASON = (
    "benchmarks do not run under pytest-xdist (-n): latency measured while other workers load the "
    "cores is wrong, so this session cannot pass or publish. Run `onnx-gate run` without -n for a "
    "release, or `onnx-gate run -n N conformance` for the checks alone"
)


def is_distributed(config: pytest.Config) -> bool:
    """Whether xdist spreads this session over workers (on the controller and on each worker)."""
    return config.pluginmanager.hasplugin("xdist") and (config.getoption("dist", "no") or "no") != "no"


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    return is_distributed(config) and not is_worker(config)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """About C/N threads for each of N workers on C cores, at least one."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // max(1, workers))


# --- the ledger's input: which check a report belongs to ---------------------------------------


def label(report: pytest.TestReport, check: str | None, parity: dict[str, Any] | None) -> None:
    """Attach, as plain values, what the controller needs from this report."""
    if check:
        report.user_properties.append((CHECK_PROPERTY, check))
    if parity:
        report.user_properties.append((PARITY_PROPERTY, parity))


def unlabel(report: pytest.TestReport) -> tuple[str | None, dict[str, Any] | None]:
    """Take the gate's values off a report (so junit.xml does not carry them) and return them."""
    check, parity, kept = None, None, []
    for item in report.user_properties:
        name, value = item
        if name == CHECK_PROPERTY:
            check = value
        elif name == PARITY_PROPERTY:
            parity = value
        else:
            kept.append(item)
    report.user_properties = kept
    return check, parity


# --- the worker's side ---------------------------------------------------------------------------


@dataclasses.dataclass
class WorkerState:
    workers: int
    threads: int
    parity_examples: int = 0  # what this worker ran, for the controller's cross-check


WORKER_KEY = pytest.StashKey[WorkerState]()


def configure_worker(config: pytest.Config, gate: GateSession) -> None:
    """Share the cores: this worker's PyTorch and ONNX Runtime threads default to C/N."""
    workers = int(config.workerinput["workercount"])  # type: ignore[attr-defined]
    threads = threads_per_worker(workers)
    runners.set_default_threads(threads)
    config.stash[WORKER_KEY] = WorkerState(workers=workers, threads=threads)
    handed = config.workerinput.get(INPUT_KEY)  # type: ignore[attr-defined]
    if handed:
        gate.follow_controller(handed["run_id"], Path(handed["report_dir"]))


def adopt_artifact(config: pytest.Config, gate: GateSession, work_dir: Path) -> None:
    """Build the model once and take the controller's artifact: hash it again, never export."""
    import torch

    torch.set_num_threads(config.stash[WORKER_KEY].threads)
    gate.model  # built once per worker: parity needs PyTorch here
    handed = config.workerinput.get(INPUT_KEY)  # type: ignore[attr-defined]
    if not handed:  # the controller is not a gate session (cannot happen with the same arguments)
        gate.prepare(work_dir)
        return
    if handed["artifact"] is None:
        gate.use_artifact(None, handed["artifact_error"])
        return
    info = ArtifactInfo(**{**handed["artifact"], "path": Path(handed["artifact"]["path"]),
                           "files": tuple(handed["artifact"].get("files", ()))})
    try:
        found = rehash(info.path, info.files).identity if info.files else file_sha256(info.path)
    except (OSError, ValueError) as exc:
        gate.use_artifact(None, (
            f"worker {config.workerinput['workerid']} cannot read the controller's ONNX file "  # type: ignore[attr-defined]
            f"{str(info.path)!r} ({type(exc).__name__}: {exc}); xdist workers on other hosts need a shared folder"
        ))  # fmt: skip
        return
    if found != info.sha256:
        gate.use_artifact(None, (
            f"the ONNX file {str(info.path)!r} changed after the controller checked it: sha256 "
            f"{info.sha256} expected, {found} found by worker {config.workerinput['workerid']}"  # type: ignore[attr-defined]
        ))  # fmt: skip
        return
    gate.use_artifact(info)


def take_worker_parity(config: pytest.Config, gate: GateSession) -> dict[str, Any] | None:
    delta = gate.parity.take_delta()
    if delta is not None:
        config.stash[WORKER_KEY].parity_examples += delta["examples"]
    return delta


def skip_benchmarks(items: list[pytest.Item], check_of: Any) -> None:
    for item in items:
        if check_of(item) in LATENCY_CHECKS:
            item.add_marker(pytest.mark.skip(reason=BENCHMARKS_SKIP_REASON))


def worker_finished(config: pytest.Config, gate: GateSession) -> None:
    """What only the worker knows, for the controller: the checks' tests and its own counts."""
    state = config.stash[WORKER_KEY]
    config.workeroutput[INPUT_KEY] = {  # type: ignore[attr-defined]
        "collected": {name: sorted(record.collected) for name, record in gate.ledger.records.items()},
        "parity_examples": state.parity_examples,
        "threads": state.threads,
    }


# --- the controller's side -----------------------------------------------------------------------


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
    return {"workers": 0, "threads_per_worker": default_threads(), "exports": exports}
