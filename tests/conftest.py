from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

# Tests too slow for `make test` (a whole gate run each): `ONNX_GATE_SLOW_TESTS=1 .venv/bin/python -m pytest tests -m slow`.
SLOW_TESTS_ENV = "ONNX_GATE_SLOW_TESTS"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SLOW_TESTS_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"slow tier, skipped by `make test`: {SLOW_TESTS_ENV}=1 .venv/bin/python -m pytest tests -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

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

    def run(self, *args: str, config: bool = True, paths: tuple[str, ...] = (CONFORMANCE,)) -> GateRun:
        options = ["--gate-config", str(self.path / "gate.toml")] if config else []
        if not any(a.startswith("--hypothesis-profile") for a in args):
            # No shrinking: these tests assert which check blocks, not the minimal example.
            options.append("--hypothesis-profile=smoke")
        result = self.pytester.runpytest_subprocess(*paths, *options, *args)
        reports = sorted((self.path / "reports").glob("*/gate.json"))
        document = json.loads(reports[-1].read_text()) if reports else None
        failures = reports[-1].parent / "failures.txt" if reports else None
        details = failures.read_text() if failures and failures.is_file() else ""
        return GateRun(result, document, details)


# pytest-xdist marks its workers with these; a gate a test starts (pytester, a subprocess) is a
# session of its own and must not read them as its own, or pytest-benchmark turns itself off there.
XDIST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture(autouse=True)
def without_xdist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in XDIST_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def export_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own, empty export cache: none reads or fills the user's ~/.cache."""
    from harness.runtime.cache import CACHE_DIR_ENV

    folder = tmp_path_factory.mktemp("export-cache")
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
