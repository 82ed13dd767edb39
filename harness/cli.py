"""``onnx-gate``: run the gate, compare benchmark runs, manage the local service stack."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from harness.bench.compare import CompareSettings, history, resolve_run
from harness.bench.export import write_results
from harness.bench.history import compare_runs, history_report
from harness.core import config as gate_config
from harness.core.config import OVERRIDE_OPTIONS  # the overrides `run` takes from the pytest plugin
from harness.core.errors import GateError
from harness.core.inputs import describe_case
from harness.core.model_loader import build_model
from harness.core.profiles import with_gate_run_profile
from harness.debug import DebugRequest, diagnose
from harness.debug.inputs import failing_case, load_npz, parse_case, report_folder
from harness.debug.report import terminal_text, write_all
from harness.gate.session import new_run_id
from harness.plugin.hooks import pytest_addoption
from harness.plugin.suite import GATE_DIRS, PACKAGE_ROOT, gate_test_paths
from harness.publish.stack import Stack
from harness.runtime.export import export_onnx

DESCRIPTION = """\
onnx-gate: a release gate for PyTorch models that ship as ONNX.

  onnx-gate run [PYTEST_ARGS...]   export the configured model to ONNX, check it (contract,
                                   Hypothesis parity vs PyTorch, batch consistency, determinism,
                                   dynamic dimensions, invariants) and write reports/<run-id>/.
                                   Uses the Hypothesis profile 'ci' unless --hypothesis-profile
                                   is given. Exit status 0 only when the gate passed.
  onnx-gate compare [RUN_A] [RUN_B]
                                   compare benchmark runs (default: previous vs latest): one
                                   verdict per benchmark and speedup ratio (regressed, improved,
                                   no detectable change) with its interval; exit 1 only when a
                                   speedup ratio regressed. --history N: the trend of the last N.
  onnx-gate bench-results [RUN] --format customSmallerIsBetter
                                   a run's figures for github-action-benchmark dashboards.
  onnx-gate debug [--case CASE | --inputs FILE.npz | --from-report RUN]
                                   name the module where ONNX Runtime starts to disagree with
                                   PyTorch (default: the failing case of the latest report);
                                   writes debug.md, debug.png and a replay bundle.
  onnx-gate stack up|down|status   local SeaweedFS S3 + MLflow on 127.0.0.1 for publishing.

  With --gate-publish, a session in which every required check ran and passed uploads the
  ONNX file to S3 and registers it in MLflow (alias 'staging').
  With --gate-baseline models:/NAME@ALIAS, the registered production model is timed beside the
  candidate (rounds alternating) and the outputs' drift from it is reported.

The model comes from [tool.onnx-gate] in the nearest pyproject.toml (default: Heimdall's
LocalizationNet), a file given with --gate-config, or --gate-* options; `pytest --help` lists
them under "onnx-gate".
"""


def run(pytest_args: Sequence[str]) -> int:
    import pytest

    args = with_gate_run_profile([_installed_suite_path(a) for a in pytest_args])
    # Paths the user names replace the whole gate (e.g. one conformance file while debugging).
    named_paths = [
        a for a in positional_arguments(args)
        if Path(a).is_dir() or a.split("::")[0].endswith(".py")
    ]  # fmt: skip
    return int(pytest.main([*([] if named_paths else gate_test_paths()), *args]))


# pytest's own options (and its usual plugins') that take a value as the next argument.
PYTEST_VALUE_OPTIONS = frozenset({
    "-k", "-m", "-p", "-c", "-o", "-W", "-n", "--tb", "--dist", "--maxfail", "--durations", "--rootdir",
    "--basetemp", "--confcutdir", "--deselect", "--ignore", "--ignore-glob", "--junitxml", "--junit-xml",
    "--junit-prefix", "--override-ini", "--pythonwarnings", "--log-level", "--log-file", "--import-mode",
    "--capture", "--color", "--config-file", "--inifile", "--hypothesis-profile", "--hypothesis-seed",
    "--hypothesis-verbosity", "--benchmark-json", "--benchmark-save", "--benchmark-compare",
    "--benchmark-sort", "--benchmark-columns", "--maxprocesses", "--max-worker-restart", "--tx",
})  # fmt: skip


def gate_value_options() -> frozenset[str]:
    """The plugin's options that take a value, read from its own pytest_addoption."""
    names: set[str] = set()

    class Recorder:
        def getgroup(self, *args: object, **kwargs: object) -> Recorder:
            return self

        def addoption(self, *opts: str, **attrs: object) -> None:
            if attrs.get("action") not in ("store_true", "store_false", "count"):
                names.update(opts)

    pytest_addoption(Recorder())  # type: ignore[arg-type]
    return frozenset(names)


def positional_arguments(args: Sequence[str]) -> list[str]:
    """The arguments pytest takes as test paths: not options, and not the value of an option
    given as ``--opt value`` (``--gate-report-dir reports`` names no tests, even once reports/ exists)."""
    takes_value = PYTEST_VALUE_OPTIONS | gate_value_options()
    positional, skip = [], False
    for argument in args:
        if skip:
            skip = False
        elif argument.startswith("-"):
            skip = argument in takes_value  # "--opt=value" and "-kEXPR" carry their value inside
        else:
            positional.append(argument)
    return positional


def _installed_suite_path(argument: str) -> str:
    """``conformance/test_parity.py`` names the installed suite's file when the user's folder has
    no such path: the README's debugging commands work from any project."""
    path, sep, rest = argument.partition("::")
    if argument.startswith("-") or Path(path).parts[:1] not in [(d,) for d in GATE_DIRS] or Path(path).exists():
        return argument
    installed = PACKAGE_ROOT / path
    return f"{installed}{sep}{rest}" if installed.exists() else argument


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnx-gate", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "run", help="run the gate (extra arguments go to pytest)", add_help=False,
        description="Run the gate; every further argument is passed to pytest.",
    )  # fmt: skip
    compare = commands.add_parser(
        "compare", help="compare two benchmark runs (default: the previous and the latest)",
        description="Judge per benchmark and per speedup ratio whether it regressed, improved or did not change "
        "detectably: a bootstrap interval of the ratio of medians from the runs' per-round samples, plus an "
        "effect-size floor. Writes compare.md (fits a pull-request comment), compare.json and trend.png into "
        "reports/compare/<base>__<head>/. Exit 1 only when a speedup ratio regressed (or, with "
        "latency_regression_fails, an absolute latency on the same machine).",
    )  # fmt: skip
    compare.add_argument("base", nargs="?", metavar="RUN_A", help="run id (or prefix) or benchmark.json. Default: the previous run")
    compare.add_argument("head", nargs="?", metavar="RUN_B", help="run id (or prefix) or benchmark.json. Default: the latest run")
    compare.add_argument("--report-dir", metavar="DIR", type=Path, default=None,
                         help="reports folder. Default: report_dir from [tool.onnx-gate], else reports/")
    compare.add_argument("--max-ratio-regression", metavar="FRACTION", type=_fraction, default=None,
                         help="effect-size floor: the smallest change that counts. "
                         "Default: [tool.onnx-gate.bench] max_ratio_regression, else 0.10")
    compare.add_argument("--history", metavar="N", type=_at_least_two, default=None,
                         help="instead of two runs, plot each speedup ratio over the last N runs with the "
                         "regressions marked (reports/compare/history/). Default: %(default)r")
    results = commands.add_parser(
        "bench-results", help="write a run's benchmark figures for a benchmark dashboard",
        description="Write one run's median latencies and its ONNX Runtime / PyTorch time ratios as JSON that "
        "github-action-benchmark reads with tool: customSmallerIsBetter.",
    )  # fmt: skip
    results.add_argument("run", nargs="?", metavar="RUN", help="run id (or prefix) or benchmark.json. Default: the latest run")
    results.add_argument("--format", required=True, choices=("customSmallerIsBetter",), help="output format")
    results.add_argument("--output", "-o", metavar="FILE", type=Path, required=True, help="where to write it")
    results.add_argument("--report-dir", metavar="DIR", type=Path, default=None,
                         help="reports folder. Default: report_dir from [tool.onnx-gate], else reports/")
    _add_debug_parser(commands)
    stack = commands.add_parser(
        "stack", help="start, stop or show the local SeaweedFS S3 + MLflow servers (data under .stack/)",
        description="Local services on 127.0.0.1 for publishing: SeaweedFS (S3 API, keys enforced) and an "
        "MLflow tracking server (SQLite, artifacts on that S3). `up` prints the environment to export.",
    )  # fmt: skip
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument("--dir", type=Path, default=Path(".stack"), metavar="DIR", help="state and data folder. Default: .stack")
    return parser


def stack(arguments: argparse.Namespace) -> int:
    services = Stack(arguments.dir)
    if arguments.action == "up":
        state = services.up()
        print(f"# SeaweedFS S3 at {state.endpoint}, MLflow at {state.tracking_uri}; data in {services.root}")
        print(f"# to use them: source {services.env_file}   (or export these)")
        print("\n".join(services.env_lines(state)))
        return 0
    if arguments.action == "down":
        print("stopped" if services.down() else "not running")
        return 0
    state = services.running()
    if state is None:
        print("not running")
        return 3
    print(f"running: S3 {state.endpoint} (pid {state.weed_pid}), MLflow {state.tracking_uri} (pid {state.mlflow_pid})")
    return 0


def _fraction(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number like 0.1, got {value!r}") from None
    if not 0 <= fraction < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value!r}")
    return fraction


def _at_least_two(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of runs like 10, got {value!r}") from None
    if count < 2:
        raise argparse.ArgumentTypeError(f"a trend needs at least 2 runs, got {value!r}")
    return count


def compare(arguments: argparse.Namespace) -> int:
    loaded = gate_config.load(invocation_dir=Path.cwd())
    report_dir = arguments.report_dir or loaded.report_dir
    floor = loaded.bench.max_ratio_regression if arguments.max_ratio_regression is None else arguments.max_ratio_regression
    settings = CompareSettings(floor, loaded.bench.significance, loaded.bench.latency_regression_fails)
    if arguments.history is not None:
        if arguments.base or arguments.head:
            raise GateError("--history takes the last N runs; name no runs with it (got "
                            f"{' '.join(n for n in (arguments.base, arguments.head) if n)!r})")

        lines, out_dir = history_report(report_dir, history(report_dir)[-arguments.history:], settings)
        print("\n".join(lines))
        print(f"report: {out_dir / 'history.md'}")
        return 0
    # One run named: it is the base, compared against the latest.
    comparison, out_dir = compare_runs(report_dir, arguments.base, arguments.head, settings)
    print("\n".join(comparison.lines()))
    print(f"report: {out_dir / 'compare.md'}")
    return 1 if comparison.regressions else 0


def bench_results(arguments: argparse.Namespace) -> int:
    loaded = gate_config.load(invocation_dir=Path.cwd())
    report_dir = arguments.report_dir or loaded.report_dir
    if arguments.run:
        path = resolve_run(report_dir, arguments.run)
    else:
        runs = history(report_dir)
        if not runs:
            raise GateError(f"no benchmark runs in {report_dir / 'history'}; run `onnx-gate run` first or name a benchmark.json")
        path = runs[-1]
    written = write_results(path, arguments.output, arguments.format, loaded.bench.significance)
    print(f"wrote {written} ({arguments.format})")
    return 0


def _add_debug_parser(commands: Any) -> None:
    debug = commands.add_parser(
        "debug", help="name the module that introduced a parity mismatch",
        description="Run PyTorch (fp32 and fp64) with a hook on every named module and ONNX Runtime once with "
        "those modules' values as extra outputs; report per module the error, PyTorch's own fp32 noise and "
        "their ratio, name the first module that exceeds noise_factor while its inputs are within it, confirm "
        "it on its own subgraph, and check whether the mismatch needs ONNX Runtime's optimisation. Writes "
        "debug.md, debug.png and a replay bundle (culprit.onnx, culprit_inputs.npz, test_culprit_replay.py) "
        "into the report's folder. Exit 1 when ONNX Runtime disagrees with PyTorch on the input.",
    )  # fmt: skip
    source = debug.add_mutually_exclusive_group()
    source.add_argument("--case", metavar="CASE", default=None,
                        help="an input case as the gate prints it, e.g. 'normal inputs (batch=1, seed=5)' or "
                        "'large batch=2 seed=7 magnitude=1000'. Default: %(default)r (the report's failing case)")
    source.add_argument("--inputs", metavar="FILE.npz", type=Path, default=None,
                        help="explicit input arrays, one per model input, by name. Default: %(default)r")
    debug.add_argument("--from-report", metavar="RUN", default=None,
                       help="run id (or prefix) whose failing case to debug and whose folder gets the output. "
                       "Default: %(default)r (the latest run)")
    debug.add_argument("--gate-config", metavar="FILE", type=Path, default=None,
                       help="TOML file with the gate's config, as for `run`. Default: %(default)r")
    for option, (key, metavar) in OVERRIDE_OPTIONS.items():
        debug.add_argument(option, dest=key, metavar=metavar, default=None,
                           type=int if key == "opset" else None,
                           choices=("dynamo", "torchscript") if key == "exporter" else None,
                           help=f"as for `run` (config key {key!r}). Default: %(default)r")


def debug(arguments: argparse.Namespace) -> int:
    import tempfile

    keys = [key for key, _ in OVERRIDE_OPTIONS.values()]
    overrides = {key: getattr(arguments, key) for key in keys if getattr(arguments, key) is not None}
    loaded = gate_config.load(invocation_dir=Path.cwd(), config_file=arguments.gate_config, overrides=overrides)
    folder = None
    if arguments.inputs is not None:
        feeds, case = load_npz(arguments.inputs, loaded), f"arrays from {arguments.inputs.name}"
    else:
        if arguments.case is not None:
            chosen = parse_case(arguments.case, loaded)
        else:
            folder = report_folder(loaded.report_dir, arguments.from_report)
            chosen = failing_case(folder, loaded)
        feeds, case = chosen.materialize(loaded), describe_case(chosen)
    if folder is None:
        folder = report_folder(loaded.report_dir, arguments.from_report) if arguments.from_report else (
            loaded.report_dir / f"{new_run_id()}-debug")  # fmt: skip
    model = build_model(loaded.model, loaded.model_kwargs, loaded.checkpoint, loaded.search_dirs)
    with tempfile.TemporaryDirectory(prefix="onnx-gate-debug-") as scratch:
        onnx_path = loaded.onnx
        if onnx_path is None:
            # The same export the gate makes; written aside, the report folder keeps only the subgraph.
            onnx_path = Path(scratch) / "model.onnx"
            export_onnx(model, loaded, onnx_path)
        result = diagnose(DebugRequest(loaded, onnx_path, feeds, case, Path.cwd()), model)
    print(terminal_text(result))
    written = write_all(result, folder)
    print(f"report: {written[0]}")
    return 1 if result.mismatch else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "run":
        return run(argv[1:])
    arguments = parser.parse_args(argv)
    try:
        if arguments.command is None:
            parser.print_help()
            return 2
        if arguments.command == "compare":
            return compare(arguments)
        if arguments.command == "bench-results":
            return bench_results(arguments)
        if arguments.command == "debug":
            return debug(arguments)
        if arguments.command == "stack":
            return stack(arguments)
    except GateError as exc:
        print(f"onnx-gate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
