"""Roles and labels of one gate over pytest-xdist: which process this is, and the plain values each
test report carries from worker to controller.

"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from harness.checks.latency import BASELINE, BENCH_CHECKS, LATENCY_GPU

if TYPE_CHECKING:
    pass

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


def skip_benchmarks(items: list[pytest.Item], check_of: Any) -> None:
    for item in items:
        if check_of(item) in LATENCY_CHECKS:
            item.add_marker(pytest.mark.skip(reason=BENCHMARKS_SKIP_REASON))


# --- the controller's side -----------------------------------------------------------------------


