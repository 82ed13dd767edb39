"""onnx-gate: a pytest-based release gate for PyTorch models that ship as ONNX.

PYTEST_DONT_REWRITE: run as ``python -m harness.cli``, this package is imported before pytest marks
the plugin's distribution for assertion rewriting, and pytest would warn about it in every gate.
"""

from harness.api import GateResult, export_and_register_model

__version__ = "0.1.0"
__all__ = ["GateResult", "export_and_register_model"]
