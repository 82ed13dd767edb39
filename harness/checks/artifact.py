"""The artifact check: the ONNX file was produced (or given) and passed ``onnx.checker``
(harness/runtime/export.py), its bytes are still the ones hashed into its identity, and ONNX Runtime loads
it (conformance/test_artifact.py). Every other check of the export needs it."""

from __future__ import annotations

from harness.checks.declared import declare_check

CHECK = declare_check("artifact", order=10)
