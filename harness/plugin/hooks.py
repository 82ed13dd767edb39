"""The pytest plugin: options, fixtures and hooks. All pytest glue lives here; the logic lives in
the modules beside it. Nothing heavy is imported at module level, so ``pytest --help`` stays fast.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Generator

import pytest

from harness.candidates.session import CandidateSet
from harness.checks.candidates import CANDIDATE_CHECKS
from harness.checks.declared import undeclared_problem
from harness.checks.dynamic_dims import dynamic_sizes
from harness.checks.latency import BENCH_CHECKS, LATENCY_DECODE
from harness.checks.rollout import CHECK as ROLLOUT
from harness.core import profiles
from harness.core.baseline_spec import parse_spec
from harness.core.config import load as load_config
from harness.core.errors import ConfigError, GateError, first_line
from harness.core.noise import quiet_library_noise
from harness.gate.session import BenchPlan, GateSession, RunOptions
from harness.plugin import fixtures, session_end
from harness.plugin.api_request import GATE_KEY, OUTCOME_KEY, api_request, gate_of
from harness.plugin.benchmark_shims import BenchmarkJson, check_benchmark_plugin
from harness.plugin.distributed import controller, roles, worker

# pytest reads a plugin's hooks off its registered module: the options hook is this plugin's.
from harness.plugin.options import option_overrides, pytest_addoption  # noqa: F401
from harness.plugin.startup import (
    FAILURES_KEY,
    brief_failures,
    check_paths,
    check_report_dir,
    imports_alongside,
    is_gate_session,
)
from harness.publish.baseline_source import check_registry
from harness.publish.naming import unnamed_model_problem
from harness.publish.registry import apply_client_settings
from harness.publish.targets import publish_target
from harness.report.bench import gate_bench_section
from harness.report.failures import Failure


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gate_check(name): the gate check a test belongs to")
    # In every session, gate or not: a test that asks for the gate outside one skips, saying why.
    config.pluginmanager.register(fixtures, "onnx-gate-fixtures")

    # Before Hypothesis's own pytest_configure loads --hypothesis-profile.
    profiles.register_profiles()
    if not is_gate_session(config):
        return
    from hypothesis import settings

    quiet_library_noise()

    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile(profiles.DEFAULT_PROFILE)
    api = api_request(config)
    config_file = config.getoption("gate_config")
    try:
        check_paths(config)
        loaded = load_config(
            invocation_dir=config.invocation_params.dir,
            config_file=Path(config_file) if config_file else None,
            overrides=option_overrides(config),
            api_overrides=api.overrides if api else None,
            model_object=bool(api and api.model is not None),
            object_class=api.object_class if api else None,
        )
        check_report_dir(loaded.report_dir)
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
    if api and api.model is not None and roles.is_distributed(config):
        raise pytest.UsageError(
            "onnx-gate: export_and_register_model() cannot hand a model object to pytest-xdist workers "
            "(they build the model from the config); drop -n/--dist from pytest_args, or gate a model "
            "named in the config with `onnx-gate run -n N`"
        )
    if loaded.candidates.enabled and roles.is_distributed(config):
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
    brief_failures(config)
    if roles.is_worker(config):
        worker.configure_worker(config, gate)
    else:
        config.pluginmanager.register(LedgerFeed(gate, config), session_end.LEDGER_FEED)
        if roles.is_controller(config):
            config.pluginmanager.register(controller.XdistHooks(gate), session_end.XDIST_HOOKS)
    if not config.option.xmlpath:
        # junitxml reads this in its own pytest_configure, which runs after this tryfirst hook.
        config.option.xmlpath = str(gate.report_dir / "junit.xml")


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Which model this gate checks, first thing: a gate that quietly checks another model than
    the user meant is the worst failure a release gate can have."""
    gate = gate_of(config)
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


class LedgerFeed:
    """Feeds the ledger and the parity statistics from the test reports this process receives:
    its own tests' in a single process, every worker's on the xdist controller. Not on workers."""

    def __init__(self, gate: GateSession, config: pytest.Config) -> None:
        self.gate, self.config = gate, config
        self.unlabelled: list[tuple[str, str, str]] = []

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes user_properties
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        check, parity = roles.unlabel(report)
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
    gate = gate_of(metafunc.config)
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
    if "decode_plan" in metafunc.fixturenames:
        from harness.bench.decode import decode_plans

        plans, _ = decode_plans(gate.config, gate.batch_dim)
        metafunc.parametrize("decode_plan", plans or [None], ids=[p.label.replace(" ", "") for p in plans] or ["no-cache"])
    if "bench_backend" in metafunc.fixturenames:
        metafunc.parametrize("bench_backend", ["pytorch", "onnxruntime"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gate = gate_of(config)
    if gate is None:
        return
    # Opt-in checks: without [candidates], or without [[state]] (a growing one for the per-token
    # latency), their tests do not exist, and a stateless model's gate is what it was.
    absent = set()
    if not gate.config.candidates.enabled:
        absent |= set(CANDIDATE_CHECKS)
    if not gate.config.rollout.declared:
        absent.add(ROLLOUT.name)
    if not any(pair.grows for pair in gate.config.rollout.states):
        absent.add(LATENCY_DECODE.name)
    dropped = [item for item in items if _check_name(item) in absent]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if _check_name(item) not in absent]

    for item in items:
        check = _check_name(item)
        if check:
            problem = undeclared_problem(check)
            if problem is not None:
                raise pytest.UsageError(f"onnx-gate: {item.nodeid}: {problem}")
            gate.ledger.collected(check, item.nodeid)
    if roles.is_worker(config):
        roles.skip_benchmarks(items, _check_name)
    if gate.benchmarks_collected:
        check_benchmark_plugin()
        gate.report_dir.mkdir(parents=True, exist_ok=True)
        # Without --benchmark-json, benchmark.json goes into the run's folder.
        benchmark_session = getattr(config, "_benchmarksession", None)
        if benchmark_session is not None and getattr(config.option, "benchmark_json", "") is None:
            benchmark_session.json = BenchmarkJson(gate.report_dir / "benchmark.json")


def pytest_collection_finish(session: pytest.Session) -> None:
    gate = gate_of(session.config)
    if gate is None or session.config.option.collectonly or not session.items:
        return
    work_dir = session.config._tmp_path_factory.mktemp("onnx-gate")  # type: ignore[attr-defined]
    publishing = session.config.getoption("gate_publish") and not roles.is_worker(session.config)
    if publishing:
        apply_client_settings()  # before MLflow is imported, which reads some of them
    heavy = ("mlflow", "mlflow.onnx", "boto3") if publishing else ()
    # The report's plot (the controller writes it): matplotlib's import, half a second.
    plotting = () if roles.is_worker(session.config) else ("matplotlib.figure", "matplotlib.backends.backend_agg")
    warm = imports_alongside(*heavy, *plotting) if heavy or plotting else nullcontext()
    try:
        with gate.timing.measure("build_and_export"), warm:
            if roles.is_worker(session.config):
                worker.adopt_artifact(session.config, gate, work_dir)  # the controller exported it
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
    gate = gate_of(item.config)
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
    gate, check = gate_of(item.config), _check_name(item)
    if gate is not None:
        # The ledger is fed from pytest_runtest_logreport (LedgerFeed), where the xdist controller
        # sees every worker's reports; a worker's parity statistics travel with its reports.
        parity = worker.take_worker_parity(item.config, gate) if roles.is_worker(item.config) else None
        roles.label(report, check, parity)
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
    gate = gate_of(session.config)
    if gate is not None:
        gate.close_lanes()
    if gate is not None and roles.is_worker(session.config):
        worker.worker_finished(session.config, gate)  # the controller reports, workers do not
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
    gate = gate_of(config)
    if gate is not None and (gate.latency or gate.decode_latency):
        output_json["onnx_gate"] = gate_bench_section(gate)


# --- fixtures ----------------------------------------------------------------------------------


