"""onnx-gate: a pytest-based release gate for PyTorch models that ship as ONNX."""

__version__ = "0.1.0"
