"""``onnx-gate debug``: name the module where ONNX Runtime starts to disagree with PyTorch.

capture (PyTorch module outputs, fp32 and fp64) -> align (modules to ONNX values) -> probe (one
ONNX Runtime session with those values as outputs) -> verdict (error vs noise floor per module,
the culprit) -> isolate (the culprit's subgraph on PyTorch's own inputs) -> report.
"""

from harness.debug.diagnose import DebugRequest, diagnose

__all__ = ["DebugRequest", "diagnose"]
