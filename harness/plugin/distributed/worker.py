"""The worker side of one gate over pytest-xdist: adopt the controller's artifact (hashed again,
never exported), and hand back this worker's parity statistics with each report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.plugin.distributed.roles import INPUT_KEY, threads_per_worker
from harness.runtime import runners
from harness.runtime.artifact_files import file_sha256, rehash
from harness.runtime.export import ArtifactInfo

if TYPE_CHECKING:
    from harness.gate.session import GateSession


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


def worker_finished(config: pytest.Config, gate: GateSession) -> None:
    """What only the worker knows, for the controller: the checks' tests and its own counts."""
    state = config.stash[WORKER_KEY]
    config.workeroutput[INPUT_KEY] = {  # type: ignore[attr-defined]
        "collected": {name: sorted(record.collected) for name, record in gate.ledger.records.items()},
        "parity_examples": state.parity_examples,
        "threads": state.threads,
    }
