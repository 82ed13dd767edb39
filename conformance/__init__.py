"""The gate's checks, one pytest test each. Run them with `onnx-gate run`."""
