"""The gate's command-line options: one group, every option with the ``--gate-`` prefix, and the config
overrides they make (the option table is harness/core/config/sources.py's OVERRIDE_OPTIONS)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pytest

from harness.core.config import OVERRIDE_OPTIONS

if TYPE_CHECKING:
    pass


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


def option_overrides(config: pytest.Config) -> dict[str, Any]:
    values = {key: config.getoption(option.removeprefix("--").replace("-", "_")) for option, (key, _) in OVERRIDE_OPTIONS.items()}
    return {key: value for key, value in values.items() if value is not None}
