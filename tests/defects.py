"""Export defects the gate must block, each made the way it happens in real life."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from harness.models import localization_net

INPUT = "mel_spectrogram"
OUTPUTS = ["positions", "uncertainties"]


def small_model() -> torch.nn.Module:
    return localization_net("test")


def example() -> tuple[torch.Tensor]:
    return (torch.randn(2, 3, 128, 32, generator=torch.Generator().manual_seed(0)),)


def export(path: Path, *, training: bool = False, dynamic: bool = True, output_names=OUTPUTS) -> Path:
    model = small_model()
    if training:
        model.train()
    axes = {INPUT: {0: "batch"}, **{name: {0: "batch"} for name in output_names}} if dynamic else None
    torch.onnx.export(
        model, example(), str(path), dynamo=False, input_names=[INPUT], output_names=list(output_names),
        dynamic_axes=axes, opset_version=17,
        training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL,
        do_constant_folding=not training,
    )  # fmt: skip
    return path


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def perturb_one_weight(source: Path, target: Path, *, output: str = "positions", delta: float = 1e-3) -> Path:
    """Add ``delta`` to one element of the weight of the layer that produces ``output``."""
    model = onnx.load(str(source))
    initializers = _initializers(model)
    producers = {name: node for node in model.graph.node for name in node.output}
    node = producers[output]
    while not any(name in initializers and initializers[name].dims and len(initializers[name].dims) > 1 for name in node.input):
        node = producers[node.input[0]]
    weight = next(initializers[n] for n in node.input if n in initializers and len(initializers[n].dims) > 1)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += np.float32(delta)
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(target))
    return target


def round_weights_through_fp16(source: Path, target: Path) -> Path:
    model = onnx.load(str(source))
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(target))
    return target


def strip_scopes(source: Path, target: Path) -> Path:
    """The file as a post-processing tool leaves it: no node names, no node metadata."""
    model = onnx.load(str(source))
    for node in model.graph.node:
        node.name = ""
        del node.metadata_props[:]
    onnx.save(model, str(target))
    return target


def truncate(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def add_random_op(source: Path, target: Path, *, output: str = "positions") -> Path:
    """positions + 0 * RandomUniformLike(positions): numerically harmless, but not deterministic by
    construction, which no release should accept."""
    model = onnx.load(str(source))
    producer = next(node for node in model.graph.node if output in node.output)
    inner = f"{output}_before_noise"
    producer.output[list(producer.output).index(output)] = inner
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero_for_noise")
    model.graph.initializer.append(zero)
    model.graph.node.extend([
        helper.make_node("RandomUniformLike", [inner], ["noise"], name="noise_source"),
        helper.make_node("Mul", ["noise", "zero_for_noise"], ["muted_noise"]),
        helper.make_node("Add", [inner, "muted_noise"], [output]),
    ])  # fmt: skip
    onnx.save(model, str(target))
    return target


# --- small defects: inside atol 1e-5 / rtol 1e-3, far above fp32 rounding noise ---------------------


def truncate_mantissas(source: Path, target: Path, *, bits: int = 19) -> Path:
    """Weights that silently lost precision: every fp32 weight keeps only ``bits`` of its 23
    mantissa bits, as a lossy weight-compression step would leave them."""
    model = onnx.load(str(source))
    mask = np.uint32((0xFFFFFFFF << (23 - bits)) & 0xFFFFFFFF)
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(init).copy()
            values.view(np.uint32)[...] &= mask
            init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(target))
    return target


def export_variant(path: Path, edit) -> Path:
    """Export the small model after ``edit(model)`` changed it, e.g. an op swapped in a port."""
    model = small_model()
    edit(model)
    torch.onnx.export(
        model.eval(), example(), str(path), dynamo=False, input_names=[INPUT], output_names=OUTPUTS,
        dynamic_axes={INPUT: {0: "batch"}},
    )  # fmt: skip
    return path


def gelu_tanh_in_last_block(model: torch.nn.Module) -> None:
    """An activation replaced by a close approximation: tanh-GELU for erf-GELU in one block."""
    from harness.models.convnext import ConvNeXtBlock

    blocks = [m for m in model.modules() if isinstance(m, ConvNeXtBlock)]
    blocks[-1].act = torch.nn.GELU(approximate="tanh")


def batchnorm_eps_doubled(model: torch.nn.Module) -> None:
    """A normalisation epsilon changed: 1e-5 -> 2e-5 in the heads' BatchNorm."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.eps = 2e-5


def scale_output(source: Path, target: Path, *, output: str = "positions", factor: float = 1 + 3e-6) -> Path:
    """``output`` multiplied by ``factor``: a constant a few ppm off, well inside every per-value
    bound, the same sign and relative size on every value."""
    model = onnx.load(str(source))
    producer = next(node for node in model.graph.node if output in node.output)
    inner = f"{output}_unscaled"
    producer.output[list(producer.output).index(output)] = inner
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "ppm_scale"))
    model.graph.node.append(helper.make_node("Mul", [inner, "ppm_scale"], [output], name="ppm_scale"))
    onnx.save(model, str(target))
    return target
