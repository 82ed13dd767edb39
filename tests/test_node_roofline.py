"""The per-node roofline (harness/bench/nodes.py) as logic, on hand-made profile events, and once
on a real ONNX Runtime profile of a small artifact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.bench.nodes import node_flops, profile_nodes, roofline_from_profile

PEAK, BANDWIDTH, CACHE = 100e9, 10e9, 1 << 20


def _event(name, op, dur_us, ts, inputs, outputs, parameters=0, activations=0, written=0):
    return {
        "cat": "Node", "name": f"{name}_kernel_time", "dur": dur_us, "ts": ts,
        "args": {"op_name": op, "input_type_shape": [{"float": s} for s in inputs],
                 "output_type_shape": [{"float": s} for s in outputs], "parameter_size": str(parameters),
                 "activation_size": str(activations), "output_size": str(written)},
    }  # fmt: skip


def _runs(*starts):
    return [{"cat": "Session", "name": "model_run", "ts": ts, "dur": 1} for ts in starts]


def test_flops_follow_the_op_and_its_shapes():
    # Conv 3x3, 16 -> 32 channels, 8x8 output: 2 * (32*8*8) * (16*3*3)
    assert node_flops("Conv", [[1, 16, 8, 8], [32, 16, 3, 3], [32]], [[1, 32, 8, 8]]) == 2 * 32 * 64 * 144
    # MatMul (4, 64) x (64, 128): 2 * 4*128 * 64
    assert node_flops("MatMul", [[4, 64], [64, 128]], [[4, 128]]) == 2 * 512 * 64
    # Gemm with transB: A (4, 64), B (128, 64): K comes from A
    assert node_flops("Gemm", [[4, 64], [128, 64], [128]], [[4, 128]]) == 2 * 512 * 64
    assert node_flops("Relu", [[2, 10]], [[2, 10]]) == 20
    assert node_flops("LayerNormalization", [[2, 10], [10], [10]], [[2, 10]]) == 100


def test_each_node_gets_its_own_bound_and_the_limit_is_their_sum():
    events = _runs(0, 100, 200) + [
        # warm-up call (before the second model_run): left out
        _event("conv", "Conv", 999, 10, [[1, 16, 8, 8], [32, 16, 3, 3]], [[1, 32, 8, 8]], parameters=18432),
        # compute-bound: 2.36 MFLOP at 100 GFLOP/s = 23.6 us; measured 50 us twice
        _event("conv", "Conv", 50, 110, [[1, 16, 8, 8], [32, 16, 3, 3]], [[1, 32, 8, 8]], parameters=18432),
        _event("conv", "Conv", 50, 210, [[1, 16, 8, 8], [32, 16, 3, 3]], [[1, 32, 8, 8]], parameters=18432),
        # memory-bound: 4 MB of activations beyond the 1 MB cache at 10 GB/s = 400 us; measured 500 us
        _event("add", "Add", 500, 120, [[1 << 19], [1 << 19]], [[1 << 19]], activations=2 << 20, written=2 << 20),
        _event("add", "Add", 500, 220, [[1 << 19], [1 << 19]], [[1 << 19]], activations=2 << 20, written=2 << 20),
        # small activations stay in the cache: only its FLOPs bound it
        _event("relu", "Relu", 5, 130, [[1024]], [[1024]], activations=4096, written=4096),
        _event("relu", "Relu", 5, 230, [[1024]], [[1024]], activations=4096, written=4096),
    ]
    roofline = roofline_from_profile(events, peak_flops=PEAK, bandwidth=BANDWIDTH, cache_bytes=CACHE)
    nodes = {node.name: node for node in roofline.nodes}
    assert roofline.calls == 2 and nodes["conv"].seconds == pytest.approx(50e-6)
    assert nodes["conv"].bound == "compute" and nodes["conv"].bound_s == pytest.approx(2 * 32 * 64 * 144 / PEAK)
    assert nodes["add"].bound == "memory" and nodes["add"].bound_s == pytest.approx((4 << 20) / BANDWIDTH)
    assert nodes["relu"].bytes == 0 and nodes["relu"].bound == "compute"
    assert roofline.bound_s == pytest.approx(sum(n.bound_s for n in roofline.nodes))
    # The whole-model bound would be max(sum FLOPs / peak, sum bytes / bandwidth): below the sum of the nodes'.
    whole = max(sum(n.flops for n in roofline.nodes) / PEAK, sum(n.bytes for n in roofline.nodes) / BANDWIDTH)
    assert roofline.bound_s > whole
    assert [n.name for n in roofline.furthest(2)] == ["add", "conv"]
    assert nodes["add"].achieved(PEAK, BANDWIDTH) == "8.39 GB/s of 10 measured"
    summary = roofline.to_dict(median_s=1e-3)
    assert summary["efficiency"] == pytest.approx(roofline.bound_s / 1e-3) and len(summary["furthest"]) == 3


@pytest.mark.checks
def test_a_real_profile_gives_every_node_a_time_and_a_bound(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 10))
    path = tmp_path / "small.onnx"
    torch.onnx.export(model.eval(), torch.randn(1, 3, 32, 32), str(path), dynamo=False, input_names=["x"])
    events = profile_nodes(path, {"x": np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)},
                           threads=1, calls=3)  # fmt: skip
    roofline = roofline_from_profile(events, peak_flops=PEAK, bandwidth=BANDWIDTH, cache_bytes=CACHE)
    assert roofline.calls == 3 and roofline.nodes
    assert all(node.seconds > 0 and node.bound_s > 0 for node in roofline.nodes)
    ops = {node.op for node in roofline.nodes}
    assert ops & {"Conv", "FusedConv"} and ops & {"Gemm", "FusedGemm", "MatMul"}
    convolution = next(node for node in roofline.nodes if node.op in ("Conv", "FusedConv"))
    assert convolution.flops == pytest.approx(2 * 8 * 30 * 30 * 3 * 3 * 3)
