"""Roofline efficiency on a synthetic model whose bytes and FLOPs are known by construction."""

import math

import pytest

from harness.bench.measure import (
    LatencyRecord,
    Roofline,
    activation_bytes,
    count_flops,
    last_level_cache_bytes,
    onnx_weight_bytes,
    read_bandwidth,
)  # fmt: skip
from harness.report.bench import flop_efficiency_cell, roofline_cell

WIDTH = 1024  # one bias-free 1024x1024 fp32 matmul: 4 MiB of weights, 2*1024*1024 FLOPs per sample


def _matmul_onnx(path, dtype):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}[dtype]
    weight = numpy_helper.from_array(np.ones((WIDTH, WIDTH), dtype), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])], "synthetic",
        [helper.make_tensor_value_info("x", elem, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", elem, ["batch", WIDTH])], [weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("dtype_name, itemsize", [("float32", 4), ("float16", 2)])
def test_weight_bytes_are_the_initializers_in_their_stored_type(tmp_path, dtype_name, itemsize):
    import numpy as np

    path = _matmul_onnx(tmp_path / "m.onnx", getattr(np, dtype_name))
    assert onnx_weight_bytes(path) == WIDTH * WIDTH * itemsize


def test_weight_bytes_count_external_data_by_its_declared_length(tmp_path):
    import numpy as np
    import onnx

    path = _matmul_onnx(tmp_path / "m.onnx", np.float32)
    model = onnx.load(str(path))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0)
    assert onnx_weight_bytes(tmp_path / "ext.onnx") == WIDTH * WIDTH * 4


def test_activation_bytes_count_inputs_outputs_and_only_activations_larger_than_the_cache():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH, bias=False), torch.nn.ReLU())
    x = torch.ones(4, WIDTH)
    tensor = 4 * WIDTH * 4
    assert activation_bytes(model, [x], cache_bytes=2**40) == 2 * tensor  # in and out only
    # Linear's and ReLU's outputs no longer fit: each is written once and read once.
    assert activation_bytes(model, [x], cache_bytes=0) == 2 * tensor + 2 * (2 * tensor)


def test_the_flop_count_and_the_bound_follow_the_batch():
    import torch

    model = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    peak, bandwidth = 100e9, 10e9  # ridge point: 10 FLOPs per byte
    bounds = {}
    for batch in (1, 512):
        flops = count_flops(model, [torch.ones(batch, WIDTH)])
        assert flops == 2 * batch * WIDTH * WIDTH
        moved = WIDTH * WIDTH * 4 + activation_bytes(model, [torch.ones(batch, WIDTH)], cache_bytes=2**40)
        bounds[batch] = Roofline(flops, peak, moved, bandwidth)
    one, many = bounds[1], bounds[512]
    assert one.bound == "memory" and one.seconds == pytest.approx((WIDTH * WIDTH * 4 + 2 * WIDTH * 4) / bandwidth)
    assert one.intensity < peak / bandwidth
    assert many.bound == "compute" and many.seconds == pytest.approx(2 * 512 * WIDTH * WIDTH / peak)


def test_a_record_reports_roofline_efficiency_and_hides_the_flop_figure_where_memory_bounds():
    flops, moved = 2.0 * WIDTH * WIDTH, 4.0 * WIDTH * WIDTH
    record = LatencyRecord.from_times("onnxruntime", "cpu", 1, [2e-3] * 5, flops=flops, peak_flops=100e9,
                                      bytes_moved=moved, bandwidth=4e9)
    assert record.roofline_efficiency == pytest.approx(moved / 4e9 / 2e-3)  # ~52%: memory allows 1.05 ms
    assert record.efficiency == pytest.approx(flops / 2e-3 / 100e9)  # ~1%: the misleading FLOP-only figure
    row = record.to_dict()
    assert row["bound"] == "memory" and row["roofline_ms"] == pytest.approx(moved / 4e9 * 1e3)
    assert roofline_cell(row) == "52% (memory-bound)"
    assert flop_efficiency_cell(row) == "n/a (memory-bound)"
    compute = LatencyRecord.from_times("onnxruntime", "cpu", 512, [0.02] * 5, flops=512 * flops, peak_flops=100e9,
                                       bytes_moved=moved, bandwidth=4e9).to_dict()
    assert compute["bound"] == "compute" and flop_efficiency_cell(compute) == roofline_cell(compute).split(" ")[0]


def test_without_a_measured_bandwidth_the_roofline_says_not_measured():
    record = LatencyRecord.from_times("onnxruntime", "cuda", 1, [1e-3] * 5, flops=1e9, peak_flops=50e12)
    assert record.roofline is None and math.isnan(record.roofline_efficiency)
    assert roofline_cell(record.to_dict()) == "not measured"
    assert flop_efficiency_cell(record.to_dict()) == "2%"


def test_read_bandwidth_and_cache_size_are_measured_on_this_machine():
    bandwidth = read_bandwidth(1, size_bytes=64 * 2**20, repeats=3)
    assert 0.2e9 < bandwidth < 2e12  # a plausible memory system, not a cache and not a stall
    assert last_level_cache_bytes() >= 2**16
