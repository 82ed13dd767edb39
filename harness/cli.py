"""``onnx-gate``: run the gate, compare benchmark runs, manage the local service stack."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from harness.errors import GateError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
GATE_DIRS = ("conformance", "benchmarks")

DESCRIPTION = """\
onnx-gate: a release gate for PyTorch models that ship as ONNX.

  onnx-gate run [PYTEST_ARGS...]   export the configured model to ONNX, check it (contract,
                                   Hypothesis parity vs PyTorch, batch consistency, determinism,
                                   dynamic dimensions, invariants) and write reports/<run-id>/.
                                   Uses the Hypothesis profile 'ci' unless --hypothesis-profile
                                   is given. Exit status 0 only when the gate passed.
  onnx-gate compare [RUN_A] [RUN_B]
                                   compare benchmark runs (default: previous vs latest);
                                   exit 1 when a speedup ratio regressed.
  onnx-gate stack up|down|status   local SeaweedFS S3 + MLflow on 127.0.0.1 for publishing.

  With --gate-publish, a session in which every required check ran and passed uploads the
  ONNX file to S3 and registers it in MLflow (alias 'staging').

The model comes from [tool.onnx-gate] in the nearest pyproject.toml (default: Heimdall's
LocalizationNet), a file given with --gate-config, or --gate-* options; `pytest --help` lists
them under "onnx-gate".
"""


def gate_test_paths() -> list[str]:
    return [str(PACKAGE_ROOT / name) for name in GATE_DIRS if (PACKAGE_ROOT / name).is_dir()]


def run(pytest_args: Sequence[str]) -> int:
    import pytest

    from harness.profiles import GATE_RUN_PROFILE

    args = [_installed_suite_path(a) for a in pytest_args]
    if not any(a == "--hypothesis-profile" or a.startswith("--hypothesis-profile=") for a in args):
        args.append(f"--hypothesis-profile={GATE_RUN_PROFILE}")
    # Paths the user names replace the whole gate (e.g. one conformance file while debugging).
    named_paths = [
        a for a in args
        if not a.startswith("-") and (Path(a).is_dir() or a.split("::")[0].endswith(".py"))
    ]  # fmt: skip
    return int(pytest.main([*([] if named_paths else gate_test_paths()), *args]))


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
        description="Print per benchmark the change in median latency and in the ONNX Runtime speedup "
        "ratio, write reports/compare/<base>__<head>/compare.md and trend.png, and exit 1 when a speedup "
        "ratio fell by more than max_ratio_regression.",
    )  # fmt: skip
    compare.add_argument("base", nargs="?", metavar="RUN_A", help="run id (or prefix) or benchmark.json. Default: the previous run")
    compare.add_argument("head", nargs="?", metavar="RUN_B", help="run id (or prefix) or benchmark.json. Default: the latest run")
    compare.add_argument("--report-dir", metavar="DIR", type=Path, default=None,
                         help="reports folder. Default: report_dir from [tool.onnx-gate], else reports/")
    compare.add_argument("--max-ratio-regression", metavar="FRACTION", type=_fraction, default=None,
                         help="allowed fall of a speedup ratio. Default: [tool.onnx-gate.bench] max_ratio_regression, else 0.10")
    stack = commands.add_parser(
        "stack", help="start, stop or show the local SeaweedFS S3 + MLflow servers (data under .stack/)",
        description="Local services on 127.0.0.1 for publishing: SeaweedFS (S3 API, keys enforced) and an "
        "MLflow tracking server (SQLite, artifacts on that S3). `up` prints the environment to export.",
    )  # fmt: skip
    stack.add_argument("action", choices=("up", "down", "status"))
    stack.add_argument("--dir", type=Path, default=Path(".stack"), metavar="DIR", help="state and data folder. Default: .stack")
    return parser


def stack(arguments: argparse.Namespace) -> int:
    from harness.stack import Stack

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


def compare(arguments: argparse.Namespace) -> int:
    from harness import config as gate_config
    from harness.bench_report import compare_runs

    loaded = gate_config.load(invocation_dir=Path.cwd())
    report_dir = arguments.report_dir or loaded.report_dir
    threshold = loaded.bench.max_ratio_regression if arguments.max_ratio_regression is None else arguments.max_ratio_regression
    # One run named: it is the base, compared against the latest.
    comparison, out_dir = compare_runs(report_dir, arguments.base, arguments.head, threshold)
    print("\n".join(comparison.lines()))
    print(f"report: {out_dir / 'compare.md'}")
    return 1 if comparison.regressions else 0


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
        if arguments.command == "stack":
            return stack(arguments)
    except GateError as exc:
        print(f"onnx-gate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
