from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _pytest.pytester import SysModulesSnapshot

from harness.core.caller_state import preserved
from harness.plugin.suite import GATE_TEST_DIRS

pytest_plugins = ["pytester"]

# Tests too slow for `make test` (a whole gate run each): `ONNX_GATE_SLOW_TESTS=1 .venv/bin/python -m pytest tests -m slow`.
SLOW_TESTS_ENV = "ONNX_GATE_SLOW_TESTS"


# The tiers, cheapest first (docs/ci.md): `unit` logic alone; `checks` run models and ONNX Runtime
# in this process; `gate` runs whole gates (pytester); `stack` needs the real SeaweedFS and MLflow.
TIERS = ("unit", "checks", "gate", "stack")
TIER_DURATIONS = Path(__file__).resolve().parent / "tier_durations.json"


def tier_of(item: pytest.Item) -> str:
    """A test's tier follows from what it uses; only in-process model runs are marked by hand."""
    if "stack" in item.fixturenames:
        return "stack"
    if "pytester" in item.fixturenames or item.get_closest_marker("gate"):
        return "gate"
    return "checks" if item.get_closest_marker("checks") else "unit"


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(TierClock(), "onnx-gate-tier-clock")
    config.pluginmanager.register(XdistGroupIds(), "onnx-gate-xdist-group-ids")
    # On one of N xdist workers (`make test`), the gates this process runs get its share of the
    # cores, as the gate's own xdist workers do: two workers whose gates each spin two ONNX Runtime
    # and OpenMP threads on two cores ran a MobileNet 7x slower than one worker did.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        from harness.runtime.runners import set_default_threads

        share = max(1, len(os.sched_getaffinity(0)) // workers)
        set_default_threads(share)
        os.environ["OMP_NUM_THREADS"] = str(share)  # before torch starts its pool; gates in subprocesses too
        # torch may already be imported here (a plugin, a conftest), its pool sized to every core:
        # the in-process checks' PyTorch runs would then oversubscribe the cores.
        import torch

        torch.set_num_threads(share)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        item.add_marker(getattr(pytest.mark, tier))
        item.user_properties.append(("tier", tier))
        if tier == "stack":
            # One worker runs every test that needs the servers (`make test`: --dist loadgroup), so
            # SeaweedFS and MLflow start once, not once per worker.
            item.add_marker(pytest.mark.xdist_group(STACK_GROUP))
    # Modules with the slowest tiers first: `make test`'s two workers then end on short unit tests,
    # not with one worker idle while the other finishes a whole gate. Whole modules move, so that a
    # module-scoped fixture (an export) is built once per process. (The stack tests, one group, go
    # first anyway: pytest-xdist queues its largest group first.) The sort is stable, so every
    # worker collects the same order.
    slowest: dict[Path, int] = {}
    for item in items:
        slowest[item.path] = max(slowest.get(item.path, 0), TIERS.index(tier_of(item)))
    items.sort(key=lambda item: -slowest[item.path])
    if os.environ.get(SLOW_TESTS_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"slow tier, skipped by `make test`: {SLOW_TESTS_ENV}=1 .venv/bin/python -m pytest tests -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


STACK_GROUP = "stack"


class XdistGroupIds:
    """pytest-xdist 3.8 tells its controller a test's group by writing ``item._nodeid`` with an
    ``@group`` suffix, which pytest 9.2 no longer reads (pytest-xdist#1386): the groups were
    silently dropped, and each of `make test`'s workers started a SeaweedFS and an MLflow of its
    own, two stacks starting at once on two cores. Until xdist sets the id itself, the id it wrote
    goes where pytest 9.2 keeps it."""

    @pytest.hookimpl(trylast=True)  # after pytest-xdist has written its id
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        for item in items:
            written = getattr(item, "__dict__", {}).get("_nodeid")
            if written and written != item.nodeid and hasattr(item, "_id"):
                from _pytest.nodeid import NodeId

                item._id = NodeId.parse(written)


class TierClock:
    """Each tier's test count and seconds (setup, call and teardown), from the test reports: on the
    xdist controller, the workers'. A whole run of the suite (nothing deselected, not a worker)
    writes them to tests/tier_durations.json, which `make test` prints and the repository keeps."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tiers = {tier: {"tests": 0, "seconds": 0.0} for tier in TIERS}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        tier = dict(report.user_properties).get("tier")
        if tier is None:
            return
        self.tiers[tier]["seconds"] += report.duration
        if report.when == "call" or (report.when == "setup" and report.skipped):
            self.tiers[tier]["tests"] += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = session.config
        if hasattr(config, "workerinput") or config.getoption("keyword") or config.getoption("markexpr"):
            return
        if [Path(a).resolve() for a in config.args] != [HERE]:
            return
        record = {
            "wall_s": round(time.monotonic() - self.started, 1),
            "workers": int(config.getoption("numprocesses", None) or 0),
            "exit_status": int(exitstatus),
            "tiers": {tier: {**v, "seconds": round(v["seconds"], 1)} for tier, v in self.tiers.items()},
        }
        TIER_DURATIONS.write_text(json.dumps(record, indent=2) + "\n")

HERE = Path(__file__).resolve().parent
CONFORMANCE = str(HERE.parent / "conformance")
BENCHMARKS = str(HERE.parent / "benchmarks")

SMALL_LOCALIZATION_NET = """
model = "harness.models:localization_net"
model_kwargs = { size = "test" }
exporter = "%(exporter)s"
outputs = ["positions", "uncertainties"]
report_dir = "reports"

[[inputs]]
name = "mel_spectrogram"
shape = ["batch", 3, 128, 32]
dtype = "float32"
range = [-4.0, 4.0]
dims = { batch = [1, 4] }

[[invariants]]
output = "uncertainties"
min = 0.01
max = 1.0
"""

TWO_INPUT_NET = """
model = "user_models:two_input_net"
exporter = "%(exporter)s"
outputs = ["estimate"]
report_dir = "reports"

[[inputs]]
name = "spectrum"
shape = ["batch", 1, 16, 16]
range = [0.0, 1.0]
dims = { batch = [1, 4] }

[[inputs]]
name = "receivers"
shape = ["batch", 6]
range = [-90.0, 90.0]
"""

FRAME_NET = """
model = "user_models:frame_net"
exporter = "%(exporter)s"
outputs = ["per_frame", "pooled"]
report_dir = "reports"

[[inputs]]
name = "frames"
shape = ["batch", 4, "time"]
range = [-1.0, 1.0]
dims = { batch = [1, 4], time = [3, 24] }
"""


@dataclass
class GateRun:
    result: pytest.RunResult
    document: dict[str, Any] | None
    details: str = ""  # failures.txt: the tracebacks the terminal leaves out

    def details_match(self, patterns: list[str]) -> None:
        pytest.LineMatcher(self.details.splitlines()).fnmatch_lines(patterns)

    def status(self, check: str) -> str:
        assert self.document is not None, self.result.stdout.str()
        return self.document["checks"][check]["status"]

    def failed_checks(self) -> set[str]:
        assert self.document is not None, self.result.stdout.str()
        return {name for name, record in self.document["checks"].items() if record["status"] == "failed"}


class GateProject:
    """A user's project folder: a gate config, their models, and a way to run the gate on it."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path
        shutil.copy(HERE / "user_models.py", self.path / "user_models.py")

    def write_config(self, template: str = SMALL_LOCALIZATION_NET, *, exporter: str = "torchscript", extra: str = "") -> Path:
        path = self.path / "gate.toml"
        path.write_text(template % {"exporter": exporter} + extra)
        return path

    def run(
        self, *args: str, config: bool = True, paths: tuple[str, ...] = (CONFORMANCE,), subprocess: bool = False
    ) -> GateRun:
        """A gate over ``paths``. In this process by default, as export_and_register_model() runs it
        (caller state put back after): a fresh interpreter would import torch and ONNX Runtime
        again for every gate. ``subprocess`` where the process is the point: native libraries'
        own stderr, per-process timing and memory, pytest-xdist workers."""
        options = ["--gate-config", str(self.path / "gate.toml")] if config else []
        if not any(a.startswith("--hypothesis-profile") for a in args):
            # No shrinking: these tests assert which check blocks, not the minimal example.
            options.append("--hypothesis-profile=smoke")
        if subprocess:
            result = self.pytester.runpytest_subprocess(*paths, *options, *args)
        else:
            with preserved():
                result = self.pytester.runpytest_inprocess(*paths, *options, *args)
        reports = sorted((self.path / "reports").glob("*/gate.json"))
        document = json.loads(reports[-1].read_text()) if reports else None
        failures = reports[-1].parent / "failures.txt" if reports else None
        details = failures.read_text() if failures and failures.is_file() else ""
        return GateRun(result, document, details)


# pytester drops, after each in-process run and at each test's end, every module imported since it
# began. For torch that is wrong: a dynamo export imports parts of torch that register themselves
# once per process ("already registered in mega-cache artifact factory" on the next import). Only
# the modules of the throwaway projects (user_models.py, plugins written by a test) are dropped.
REPOSITORY = Path(__file__).resolve().parent.parent
INSTALLED = tuple(str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})


def _keeps_module(name: str) -> bool:
    file = getattr(sys.modules.get(name), "__file__", None)
    if file is None:
        return True
    resolved = Path(file).resolve()
    if any(folder in resolved.parents for folder in GATE_TEST_DIRS):
        # The gate's own tests: Hypothesis binds a test's settings at import, so a kept module
        # would run the next gate under this one's profile (export_and_register_model drops them too).
        return False
    return str(resolved).startswith(INSTALLED) or str(resolved).startswith(str(REPOSITORY))


pytest.Pytester._Pytester__take_sys_modules_snapshot = (  # type: ignore[attr-defined]
    lambda self: SysModulesSnapshot(preserve=_keeps_module)
)


# pytest-xdist marks its workers with these; a gate a test starts (pytester, a subprocess) is a
# session of its own and must not read them as its own, or pytest-benchmark turns itself off there.
XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture(autouse=True)
def without_xdist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in XDIST_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def shared_export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(autouse=True)
def export_cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> Path:
    """The export cache of this test session (of this xdist worker), shared by its tests as a user's
    cache is shared by their runs; none reads or fills the user's ~/.cache. A module about exporting
    itself (the cache, reproducible bytes, xdist's one export) sets FRESH_EXPORT_CACHE = True and
    gets an empty cache per test."""
    from harness.runtime.cache import CACHE_DIR_ENV

    fresh = getattr(request.module, "FRESH_EXPORT_CACHE", False)
    folder = tmp_path_factory.mktemp("export-cache") if fresh else request.getfixturevalue("shared_export_cache")
    monkeypatch.setenv(CACHE_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def project(pytester: pytest.Pytester) -> GateProject:
    return GateProject(pytester)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Real SeaweedFS (S3, keys enforced) and a real MLflow server on 127.0.0.1, once per session."""
    from harness.publish.stack import Stack

    services = Stack(tmp_path_factory.mktemp("stack"))
    state = services.up()
    try:
        yield services, services.environment(state)
    finally:
        services.down()
