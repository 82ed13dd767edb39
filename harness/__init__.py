"""onnx-gate: a pytest-based release gate for PyTorch models that ship as ONNX."""

from harness.api import GateResult, export_and_register_model

__version__ = "0.1.0"
__all__ = ["GateResult", "export_and_register_model"]
