"""The pytest plugin: options, fixtures and hooks. All pytest glue lives here; the logic lives in
the modules beside it. Nothing heavy is imported at module level, so ``pytest --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Generator

import pytest

from harness.bench.baseline import parse_spec
from harness.candidates.session import CandidateSet
from harness.checks.candidates import CANDIDATE_CHECKS
from harness.checks.declared import undeclared_problem
from harness.checks.dynamic_dims import dynamic_sizes
from harness.checks.latency import BENCH_CHECKS
from harness.core.config import load as load_config
from harness.core import profiles
from harness.core.config import OVERRIDE_OPTIONS
from harness.core.errors import ConfigError, GateError, first_line
from harness.core.noise import quiet_library_noise
from harness.gate.session import BenchPlan, GateSession, RunOptions
from harness.plugin import distributed, session_end
from harness.plugin.api_request import GATE_KEY, OUTCOME_KEY, api_request
from harness.plugin.suite import GATE_TEST_DIRS
from harness.publish.baseline_source import check_registry
from harness.publish.naming import unnamed_model_problem
from harness.publish.registry import apply_client_settings
from harness.publish.targets import publish_target
from harness.report.bench import gate_bench_section
from harness.report.failures import Failure

if TYPE_CHECKING:
    from harness.core.config import GateConfig
    from harness.report.failures import Failures
    from harness.runtime.export import ArtifactInfo
    from harness.runtime.runners import OrtRunner, TorchRunner

FAILURES_KEY = pytest.StashKey["Failures"]()


class BenchmarkJson(os.PathLike[str]):
    """benchmark.json's target in the form every pytest-benchmark version takes: 5.3 calls
    ``open()`` on a path, 5.1 and 5.2 expect an open file (argparse.FileType) and write in ``with
    target as fh``. A plain Path crashes 5.2 at session end. The file opens only when written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:  # pytest-benchmark logs "Wrote benchmark data in: <target>"
        return str(self.path)

    def __enter__(self) -> BinaryIO:
        self._file = self.path.open("wb")
        return self._file

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()


def _opset(value: str) -> int:
    try:
        opset = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"opset must be an integer, got {value!r}") from None
    if opset < 1:
        raise argparse.ArgumentTypeError(f"opset must be positive, got {value!r}")
    return opset


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("onnx-gate", "onnx-gate: release gate for PyTorch models shipped as ONNX")
    group.addoption(
        "--gate-config", metavar="FILE", default=None,
        help="TOML file with the gate's config ([tool.onnx-gate] or top-level keys); "
        "overrides pyproject.toml. Default: %(default)r",
    )  # fmt: skip
    group.addoption("--gate-model", metavar="MODULE:CALLABLE", default=None,
                    help="callable returning the torch.nn.Module to gate. Default: %(default)r")
    group.addoption("--gate-checkpoint", metavar="FILE", default=None,
                    help="state_dict file to load into the model. Default: %(default)r")
    group.addoption("--gate-onnx", metavar="FILE", default=None,
                    help="validate this existing ONNX file instead of exporting one. Default: %(default)r")
    group.addoption("--gate-exporter", metavar="NAME", default=None, choices=("dynamo", "torchscript"),
                    help="torch.onnx exporter: dynamo or torchscript. Default: %(default)r (config, else dynamo)")
    group.addoption("--gate-opset", metavar="N", default=None, type=_opset,
                    help="ONNX opset to export. Default: %(default)r (config, else 18)")
    group.addoption("--gate-report-dir", metavar="DIR", default=None,
                    help="folder for run reports. Default: %(default)r (config, else reports/)")
    group.addoption("--gate-publish", action="store_true", default=False,
                    help="when, and only when, every required check ran and passed, publish the ONNX file "
                    "through [publish] target: by default upload it to S3 and register it in MLflow (env: "
                    "MLFLOW_TRACKING_URI, MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); "
                    "target 'mlflow' needs MLFLOW_TRACKING_URI only. Default: %(default)r")
    group.addoption("--gate-no-cache", action="store_true", default=False,
                    help="export the model even when an identical export is cached (the fresh export then "
                    "replaces the cached one; cache folder: $ONNX_GATE_CACHE_DIR, else "
                    "$XDG_CACHE_HOME/onnx-gate, else ~/.cache/onnx-gate). Default: %(default)r")
    group.addoption("--gate-baseline", metavar="SPEC", default=None,
                    help="the production model to benchmark the candidate against, rounds alternating, and to "
                    "report output drift from: models:/NAME@ALIAS, models:/NAME/VERSION (read from "
                    "MLFLOW_TRACKING_URI) or an ONNX file. A missing model is stated, not an error. "
                    "Default: %(default)r")
    group.addoption("--gate-bench-quick", action="store_true", default=False,
                    help="fewer benchmark rounds, for CI smoke runs; `onnx-gate run` measures fully. "
                    "Default: %(default)r")


def _overrides(config: pytest.Config) -> dict[str, Any]:
    values = {key: config.getoption(option.removeprefix("--").replace("-", "_")) for option, (key, _) in OVERRIDE_OPTIONS.items()}
    return {key: value for key, value in values.items() if value is not None}


def _is_gate_session(config: pytest.Config) -> bool:
    """A session that collects the gate's own test folders, or names a --gate-* option."""
    if api_request(config) is not None:
        return True
    if _overrides(config) or config.getoption("gate_config") or config.getoption("gate_publish"):
        return True
    invocation = config.invocation_params.dir
    for argument in config.args:
        path = Path(argument.split("::")[0])
        path = (path if path.is_absolute() else invocation / path).resolve()
        if any(path == d or d in path.parents for d in GATE_TEST_DIRS):
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gate_check(name): the gate check a test belongs to")

    # Before Hypothesis's own pytest_configure loads --hypothesis-profile.
    profiles.register_profiles()
    if not _is_gate_session(config):
        return
    from hypothesis import settings

    quiet_library_noise()

    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile(profiles.DEFAULT_PROFILE)
    api = api_request(config)
    config_file = config.getoption("gate_config")
    try:
        _check_paths(config)
        loaded = load_config(
            invocation_dir=config.invocation_params.dir,
            config_file=Path(config_file) if config_file else None,
            overrides=_overrides(config),
            api_overrides=api.overrides if api else None,
            model_object=bool(api and api.model is not None),
            object_class=api.object_class if api else None,
        )
        _check_report_dir(loaded.report_dir)
    except ConfigError as exc:
        raise pytest.UsageError(f"onnx-gate: {exc}") from None
    if config.getoption("gate_publish"):
        # Before the gate spends its time: a publish that will be refused must not wait for it.

        problem = unnamed_model_problem(loaded, model_object=bool(api and api.model is not None))
        if problem is not None:
            raise pytest.UsageError(f"onnx-gate: {problem}")
        try:
            publish_target(loaded.publish)
        except ConfigError as exc:
            raise pytest.UsageError(f"onnx-gate: {exc}") from None
    if api and api.model is not None and distributed.is_distributed(config):
        raise pytest.UsageError(
            "onnx-gate: export_and_register_model() cannot hand a model object to pytest-xdist workers "
            "(they build the model from the config); drop -n/--dist from pytest_args, or gate a model "
            "named in the config with `onnx-gate run -n N`"
        )
    if loaded.candidates.enabled and distributed.is_distributed(config):
        raise pytest.UsageError(
            "onnx-gate: [candidates] cannot yet run under pytest-xdist (each worker would build and judge its own "
            "copies); drop -n, or remove [candidates] for a distributed run"
        )
    baseline_spec = None
    if config.getoption("gate_baseline"):
        try:
            baseline_spec = parse_spec(config.getoption("gate_baseline"), config.invocation_params.dir)
            if baseline_spec.file is None:
                check_registry(baseline_spec)
        except GateError as exc:
            raise pytest.UsageError(f"onnx-gate: {exc}") from None
    options = RunOptions(
        bench_plan=BenchPlan.quick() if config.getoption("gate_bench_quick") else BenchPlan.full(),
        baseline_spec=baseline_spec, use_export_cache=not config.getoption("gate_no_cache"),
        publish_tags=dict(api.publish_tags) if api else {},
        source_run_id=api.source_run_id if api else None,
    )  # fmt: skip

    gate = GateSession(loaded, model=api.model if api else None, options=options, candidate_set=CandidateSet)
    config.stash[GATE_KEY] = gate
    _brief_failures(config)
    if distributed.is_worker(config):
        distributed.configure_worker(config, gate)
    else:
        config.pluginmanager.register(LedgerFeed(gate, config), session_end.LEDGER_FEED)
        if distributed.is_controller(config):
            config.pluginmanager.register(distributed.XdistHooks(gate), session_end.XDIST_HOOKS)
    if not config.option.xmlpath:
        # junitxml reads this in its own pytest_configure, which runs after this tryfirst hook.
        config.option.xmlpath = str(gate.report_dir / "junit.xml")


def _brief_failures(config: pytest.Config) -> None:
    """Unless asked for detail (-v, --tb, -r), failed checks print one line each; see failures.py."""
    from _pytest.terminal import _REPORTCHARS_DEFAULT

    brief = config.option.tbstyle == "auto" and config.option.verbose <= 0
    config.stash[FAILURES_KEY] = Failures(brief)
    if brief and config.option.reportchars == _REPORTCHARS_DEFAULT:
        # pytest's "short test summary" repeats every failed test, cut to the terminal width;
        # the onnx-gate section lists them instead, one line per check.
        config.option.reportchars = "N"


def _check_paths(config: pytest.Config) -> None:
    config_file = config.getoption("gate_config")
    if config_file and (config.invocation_params.dir / config_file).is_dir():
        raise ConfigError(
            f"--gate-config {config_file!r} is a folder; give the TOML file itself, e.g. {config_file}/pyproject.toml"
        )


def _check_report_dir(report_dir: Path) -> None:
    for path in (report_dir, *report_dir.parents):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"report folder {str(report_dir)!r} cannot be created: {str(path)!r} is a file; "
                              "give a folder with --gate-report-dir or report_dir")
        if path.is_dir():
            return


@contextmanager
def _imports_alongside(*modules: str) -> Generator[None, None, None]:
    """Import the publish step's heavy modules (mlflow alone takes seconds) while the body runs.

    The thread must be finished before the body returns: importing mlflow and boto3 creates
    loggers, and pytest's logging plugin iterates the logger dict without logging's lock each
    time a test phase starts ("dictionary changed size during iteration"). Within one hook no
    phase starts, and the export overlaps most of the import.
    """
    import importlib
    import threading

    def load() -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # the publish step reports a missing module in its own words
                return

    thread = threading.Thread(target=load, name="onnx-gate-warm-imports", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Which model this gate checks, first thing: a gate that quietly checks another model than
    the user meant is the worst failure a release gate can have."""
    gate = _gate(config)
    if gate is None:
        return None
    loaded = gate.config
    if loaded.sources == ("built-in defaults",):
        origin = "the built-in default, Heimdall's LocalizationNet: no config names a model"
    elif gate.model_given:
        origin = "the model object handed to the Python API"
    else:
        origin = "from " + "; ".join(loaded.sources)
    kwargs = f" {dict(loaded.model_kwargs)}" if loaded.model_kwargs else ""
    return [f"onnx-gate: gating {loaded.model}{kwargs}, {origin}"]


def _gate(config: pytest.Config) -> GateSession | None:
    return config.stash.get(GATE_KEY, None)




class LedgerFeed:
    """Feeds the ledger and the parity statistics from the test reports this process receives:
    its own tests' in a single process, every worker's on the xdist controller. Not on workers."""

    def __init__(self, gate: GateSession, config: pytest.Config) -> None:
        self.gate, self.config = gate, config
        self.unlabelled: list[tuple[str, str, str]] = []

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes user_properties
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        check, parity = distributed.unlabel(report)
        if parity:
            self.gate.parity.merge_delta(parity)
        if check:
            self.gate.ledger.reported(check, report.nodeid, report.outcome, _first_line(report))
        elif report.failed:  # e.g. xdist's report for a crashed worker: resolved once all collected
            self.unlabelled.append((report.nodeid, report.outcome, _first_line(report)))
        failures = self.config.stash.get(FAILURES_KEY, None)
        if failures is not None and report.failed:
            failures.add(Failure(report.nodeid, check, report.when, _first_line(report), report.longreprtext))

    def resolve_unlabelled(self) -> None:
        checks = {nodeid: r.name for r in self.gate.ledger.records.values() for nodeid in r.collected}
        for nodeid, outcome, message in self.unlabelled:
            if nodeid in checks:
                self.gate.ledger.reported(checks[nodeid], nodeid, outcome, message)


def _check_name(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("gate_check")
    return marker.args[0] if marker and marker.args else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    gate = _gate(metafunc.config)
    if gate is None:
        return
    if "pinned_batch" in metafunc.fixturenames:
        batches = gate.pinned_batches()
        metafunc.parametrize("pinned_batch", batches, ids=[f"batch{b}" for b in batches])
    if "dynamic_size" in metafunc.fixturenames:
        cases = dynamic_sizes(gate.config)
        metafunc.parametrize("dynamic_size", cases, ids=[f"{n}={s}" for n, s in cases])
    if "bench_batch" in metafunc.fixturenames:
        batches = list(gate.config.bench.batches) if gate.batch_dim else [None]
        metafunc.parametrize("bench_batch", batches, ids=[f"batch{b}" for b in batches])
    if "candidate_name" in metafunc.fixturenames:
        names: list[str | None] = list(gate.config.candidates.build) or [None]
        metafunc.parametrize("candidate_name", names, ids=[n or "none" for n in names], scope="session")
    if "bench_backend" in metafunc.fixturenames:
        metafunc.parametrize("bench_backend", ["pytorch", "onnxruntime"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gate = _gate(config)
    if gate is None:
        return
    if not gate.config.candidates.enabled:  # opt-in: without [candidates] their tests do not exist
        dropped = [item for item in items if _check_name(item) in CANDIDATE_CHECKS]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if _check_name(item) not in CANDIDATE_CHECKS]

    for item in items:
        check = _check_name(item)
        if check:
            problem = undeclared_problem(check)
            if problem is not None:
                raise pytest.UsageError(f"onnx-gate: {item.nodeid}: {problem}")
            gate.ledger.collected(check, item.nodeid)
    if distributed.is_worker(config):
        distributed.skip_benchmarks(items, _check_name)
    if gate.benchmarks_collected:
        _check_benchmark_plugin()
        gate.report_dir.mkdir(parents=True, exist_ok=True)
        # Without --benchmark-json, benchmark.json goes into the run's folder.
        benchmark_session = getattr(config, "_benchmarksession", None)
        if benchmark_session is not None and getattr(config.option, "benchmark_json", "") is None:
            benchmark_session.json = BenchmarkJson(gate.report_dir / "benchmark.json")


def _check_benchmark_plugin() -> None:
    """One clear line instead of a traceback per benchmark: pytest-benchmark before 5.3 reads
    ``Node._nodeid``, which newer pytest (9.2) no longer has."""
    import pytest_benchmark
    from _pytest.nodes import Node

    version = pytest_benchmark.__version__
    if not hasattr(Node, "_nodeid") and tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (5, 3):
        raise pytest.UsageError(
            f"onnx-gate: pytest-benchmark {version} does not work with pytest {pytest.__version__} "
            "(it reads a node attribute this pytest dropped); install pytest-benchmark>=5.3 or pytest<9.2"
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    gate = _gate(session.config)
    if gate is None or session.config.option.collectonly or not session.items:
        return
    work_dir = session.config._tmp_path_factory.mktemp("onnx-gate")  # type: ignore[attr-defined]
    publishing = session.config.getoption("gate_publish") and not distributed.is_worker(session.config)
    if publishing:
        apply_client_settings()  # before MLflow is imported, which reads some of them
    heavy = ("mlflow", "mlflow.onnx", "boto3")
    warm = _imports_alongside(*heavy) if publishing else nullcontext()
    try:
        with gate.timing.measure("build_and_export"), warm:
            if distributed.is_worker(session.config):
                distributed.adopt_artifact(session.config, gate, work_dir)  # the controller exported it
            else:
                gate.prepare(work_dir)
    except GateError as exc:
        _junit_records_usage_error(session.config, f"onnx-gate: {exc}")
        raise pytest.UsageError(f"onnx-gate: {exc}") from None


def _junit_records_usage_error(config: pytest.Config, message: str) -> None:
    """junitxml writes its file whatever happens; for a gate that could not start, an empty one
    (tests="0" failures="0") reads as success to a CI dashboard. Record the error in it instead."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    reporter = xml.node_reporter("onnx-gate")
    reporter.attrs.update(classname="onnx-gate", name="usage error")
    reporter._add_simple("error", message)
    xml.stats["error"] += 1  # the suite's errors="1", which is what dashboards count


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    gate = _gate(item.config)
    if gate is None:
        return (yield)
    check = _check_name(item)
    part = check if check in ("parity", "baseline") else "benchmarks" if check in BENCH_CHECKS else "other"
    with gate.timing.measure(f"tests:{part}"):
        return (yield)


def _first_line(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    return first_line(crash.message if crash is not None else report.longrepr or "")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # A GateError already says what is wrong in one line; its traceback would bury that.
    if call.excinfo is not None and call.excinfo.errisinstance(GateError) and report.failed:
        report.longrepr = f"{call.excinfo.typename}: {call.excinfo.value}"
    gate, check = _gate(item.config), _check_name(item)
    if gate is not None:
        # The ledger is fed from pytest_runtest_logreport (LedgerFeed), where the xdist controller
        # sees every worker's reports; a worker's parity statistics travel with its reports.
        parity = distributed.take_worker_parity(item.config, gate) if distributed.is_worker(item.config) else None
        distributed.label(report, check, parity)
        if check == "candidates":
            _candidate_report(gate, item, report)
    return report


def _candidate_report(gate: GateSession, item: pytest.Item, report: pytest.TestReport) -> None:
    """A candidate's check outcome goes to its record. A candidate that fails a check is blocked,
    which is a verdict about that candidate, not about the gate: its failure reads as xfail,
    unless the config names that very candidate for publishing."""
    name = getattr(item, "callspec", None) and item.callspec.params.get("candidate_name")
    if not name:
        return
    message = _first_line(report).removeprefix("Failed: ")
    if report.when == "call" or report.outcome != "passed":
        gate.candidates.reported(name, item.nodeid, report.outcome, message)
    if report.failed and gate.config.candidates.publish != name:
        report.outcome = "skipped"
        report.wasxfail = f"candidate {name} blocked: {message}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gate = _gate(session.config)
    if gate is not None and distributed.is_worker(session.config):
        distributed.worker_finished(session.config, gate)  # the controller reports, workers do not
        return
    if gate is None or session.config.option.collectonly:
        return
    outcome = session_end.build(session, gate, exitstatus)
    if outcome is None:
        return
    session_end.report(session, gate, outcome, session.config.stash.get(FAILURES_KEY, None))
    session.config.stash[OUTCOME_KEY] = session_end.publish(session, gate, outcome)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    outcome = config.stash.get(OUTCOME_KEY, None)
    if outcome is not None:
        session_end.terminal_summary(terminalreporter, outcome, config.stash.get(FAILURES_KEY, None))


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    gate = _gate(config)
    if gate is not None and gate.latency:
        output_json["onnx_gate"] = gate_bench_section(gate)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gate(request: pytest.FixtureRequest) -> GateSession:
    """The gate run: config, model, artifact and the values the checks record."""
    session = _gate(request.config)
    if session is None:
        pytest.skip("not an onnx-gate session: run `onnx-gate run` or pytest on conformance/")
    return session


@pytest.fixture(scope="session")
def gate_config(gate: GateSession) -> GateConfig:
    return gate.config


@pytest.fixture(scope="session")
def onnx_artifact(gate: GateSession) -> ArtifactInfo:
    """The ONNX file under test; checks that need it skip, saying why, when it is invalid."""
    if gate.artifact is None:
        pytest.skip(f"not run: the ONNX artifact is invalid ({gate.artifact_error})")
    return gate.artifact


class OrtRunnerHandle:
    """The session's current ONNX Runtime runner, looked up at each use: the fixture's cache then
    holds no session, so the gate can release one (a large model's GBs) or renew it."""

    def __init__(self, gate: GateSession) -> None:
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gate.ort_runner, name)


@pytest.fixture(scope="session")
def ort_runner(gate: GateSession, onnx_artifact: ArtifactInfo) -> OrtRunner:
    gate.ort_runner  # loaded here: an artifact ONNX Runtime cannot load fails at fixture setup
    return OrtRunnerHandle(gate)  # type: ignore[return-value]


@pytest.fixture(scope="session")
def torch_runner(gate: GateSession) -> TorchRunner:
    return gate.torch_runner
