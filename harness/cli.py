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

The model comes from [tool.onnx-gate] in the nearest pyproject.toml (default: Heimdall's
LocalizationNet), a file given with --gate-config, or --gate-* options; `pytest --help` lists
them under "onnx-gate".
"""


def gate_test_paths() -> list[str]:
    return [str(PACKAGE_ROOT / name) for name in GATE_DIRS if (PACKAGE_ROOT / name).is_dir()]


def run(pytest_args: Sequence[str]) -> int:
    import pytest

    from harness.profiles import GATE_RUN_PROFILE

    args = list(pytest_args)
    if not any(a == "--hypothesis-profile" or a.startswith("--hypothesis-profile=") for a in args):
        args.append(f"--hypothesis-profile={GATE_RUN_PROFILE}")
    # Paths the user names replace the whole gate (e.g. one conformance file while debugging).
    named_paths = [a for a in args if not a.startswith("-") and Path(a.split("::")[0]).exists()]
    return int(pytest.main([*([] if named_paths else gate_test_paths()), *args]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnx-gate", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "run", help="run the gate (extra arguments go to pytest)", add_help=False,
        description="Run the gate; every further argument is passed to pytest.",
    )  # fmt: skip
    return parser


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
    except GateError as exc:
        print(f"onnx-gate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
