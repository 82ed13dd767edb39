"""Checks that read the ONNX graph itself, without running it."""
