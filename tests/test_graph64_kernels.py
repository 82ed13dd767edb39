"""harness/runtime/graph64.py: the float64 kernels that stand in for onnx.reference's slow or
float32-narrowing ones compute what the ONNX operator specifies."""

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from harness.runtime.graph64 import _float64_kernels


def _conv_transpose_graph(rank: int, attributes: dict, bias: bool) -> onnx.ModelProto:
    inputs = ["X", "W", "B"] if bias else ["X", "W"]
    node = helper.make_node("ConvTranspose", inputs, ["Y"], **attributes)
    graph = helper.make_graph(
        [node], "conv_transpose",
        [helper.make_tensor_value_info(name, TensorProto.DOUBLE, None) for name in inputs],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, None)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@st.composite
def conv_transposes(draw):
    rank = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 2]))
    size = [draw(st.integers(1, 4)) for _ in range(rank)]
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 2)) for _ in range(rank)]
    # ONNX asks output_padding < stride; pads may differ at the two ends, and leave at least one cell.
    output_padding = [draw(st.integers(0, s - 1)) for s in strides]
    begin, end = [], []
    for axis in range(rank):
        reach = (kernel[axis] - 1) * dilations[axis] + 1
        full = strides[axis] * (size[axis] - 1) + reach + output_padding[axis]
        begin.append(draw(st.integers(0, min(reach - 1, full - 1))))
        end.append(draw(st.integers(0, min(reach - 1, full - 1 - begin[-1]))))
    attributes = {"strides": strides, "dilations": dilations, "group": group, "pads": begin + end}
    if any(output_padding):
        attributes["output_padding"] = output_padding
    if draw(st.booleans()):
        attributes["kernel_shape"] = kernel
    channels_in, channels_out = 2 * group, draw(st.integers(1, 2)) * group
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    feeds = {
        "X": rng.standard_normal([draw(st.integers(1, 2)), channels_in, *size]),
        "W": rng.standard_normal([channels_in, channels_out // group, *kernel]),
    }
    if draw(st.booleans()):
        feeds["B"] = rng.standard_normal(channels_out)
    return rank, attributes, feeds


def _reference(rank: int, attributes: dict, feeds: dict) -> np.ndarray:
    """onnx.reference's own ConvTranspose, one group at a time: it handles only group = 1, and a
    grouped transposed convolution is, by definition, its groups side by side."""
    group = attributes["group"]
    one_group = {**attributes, "group": 1}
    parts = []
    for g, (x, w) in enumerate(zip(np.split(feeds["X"], group, axis=1), np.split(feeds["W"], group, axis=0), strict=True)):
        part = {"X": x, "W": w}
        if "B" in feeds:
            part["B"] = np.split(feeds["B"], group)[g]
        parts.append(ReferenceEvaluator(_conv_transpose_graph(rank, one_group, "B" in feeds)).run(None, part)[0])
    return np.concatenate(parts, axis=1)


@pytest.mark.checks
@settings(max_examples=150, deadline=None, derandomize=True)
@given(conv_transposes())
def test_the_float64_conv_transpose_is_the_operator_onnx_specifies(drawn):
    rank, attributes, feeds = drawn
    model = _conv_transpose_graph(rank, attributes, "B" in feeds)
    expected = _reference(rank, attributes, feeds)
    (fast,) = ReferenceEvaluator(model, new_ops=_float64_kernels()).run(None, feeds)
    assert fast.dtype == np.float64 and fast.shape == expected.shape
    np.testing.assert_allclose(fast, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "attributes",
    [
        {"strides": [2, 1], "auto_pad": "VALID", "group": 1},  # the fast kernel, VALID meaning no pads
        {"strides": [2, 2], "output_shape": [7, 6], "group": 1},  # onnx.reference's own kernel
        {"strides": [2, 1], "auto_pad": "SAME_UPPER", "group": 1},  # onnx.reference's own kernel
    ],
    ids=["valid", "output-shape", "same-upper"],
)
def test_the_attributes_the_float64_conv_transpose_leaves_to_onnx_reference_still_give_its_result(attributes):
    rng = np.random.default_rng(0)
    feeds = {"X": rng.standard_normal([1, 2, 3, 3]), "W": rng.standard_normal([2, 3, 3, 2]), "B": rng.standard_normal(3)}
    model = _conv_transpose_graph(2, attributes, bias=True)
    expected = _reference(2, attributes, feeds)
    (fast,) = ReferenceEvaluator(model, new_ops=_float64_kernels()).run(None, feeds)
    assert fast.shape == expected.shape
    np.testing.assert_allclose(fast, expected, rtol=1e-12, atol=1e-12)
