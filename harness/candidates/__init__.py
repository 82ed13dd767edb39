"""Candidate artifacts: faster variants of the plain export (offline-optimised graphs, fp16/bf16
weights, int8 quantisation), each judged by the gate's own checks at a tolerance that follows its
precision, benchmarked side by side, and publishable only when asked for by name or as
"fastest-passing". Opt-in: ``[tool.onnx-gate.candidates]``."""
