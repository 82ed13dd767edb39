"""Start-up policy: whether a pytest session is a gate session, and what is checked before it runs
(test paths, the report folder, the failures brief, imports beside the installed suite)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Generator

import pytest

from harness.core.errors import ConfigError
from harness.plugin.api_request import api_request
from harness.plugin.options import option_overrides
from harness.plugin.suite import GATE_TEST_DIRS
from harness.report.failures import Failures

FAILURES_KEY = pytest.StashKey["Failures"]()


def is_gate_session(config: pytest.Config) -> bool:
    """A session that collects the gate's own test folders, or names a --gate-* option."""
    if api_request(config) is not None:
        return True
    if option_overrides(config) or config.getoption("gate_config") or config.getoption("gate_publish"):
        return True
    invocation = config.invocation_params.dir
    for argument in config.args:
        path = Path(argument.split("::")[0])
        path = (path if path.is_absolute() else invocation / path).resolve()
        if any(path == d or d in path.parents for d in GATE_TEST_DIRS):
            return True
    return False


def brief_failures(config: pytest.Config) -> None:
    """Unless asked for detail (-v, --tb, -r), failed checks print one line each; see failures.py."""
    from _pytest.terminal import _REPORTCHARS_DEFAULT

    brief = config.option.tbstyle == "auto" and config.option.verbose <= 0
    config.stash[FAILURES_KEY] = Failures(brief)
    if brief and config.option.reportchars == _REPORTCHARS_DEFAULT:
        # pytest's "short test summary" repeats every failed test, cut to the terminal width;
        # the onnx-gate section lists them instead, one line per check.
        config.option.reportchars = "N"


def check_paths(config: pytest.Config) -> None:
    config_file = config.getoption("gate_config")
    if config_file and (config.invocation_params.dir / config_file).is_dir():
        raise ConfigError(
            f"--gate-config {config_file!r} is a folder; give the TOML file itself, e.g. {config_file}/pyproject.toml"
        )


def check_report_dir(report_dir: Path) -> None:
    for path in (report_dir, *report_dir.parents):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"report folder {str(report_dir)!r} cannot be created: {str(path)!r} is a file; "
                              "give a folder with --gate-report-dir or report_dir")
        if path.is_dir():
            return


@contextmanager
def imports_alongside(*modules: str) -> Generator[None, None, None]:
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
            except Exception:  # its user reports a missing module in its own words
                continue

    thread = threading.Thread(target=load, name="onnx-gate-warm-imports", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
