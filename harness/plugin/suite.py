"""Where the gate's own test suite lives: conformance/ and benchmarks/, beside the harness package,
installed with it. The CLI and the Python API both run it; the plugin recognises its tests."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
GATE_DIRS = ("conformance", "benchmarks")
GATE_TEST_DIRS = tuple(PACKAGE_ROOT / name for name in GATE_DIRS)


def gate_test_paths() -> list[str]:
    return [str(path) for path in GATE_TEST_DIRS if path.is_dir()]
