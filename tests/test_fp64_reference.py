"""The float64 reference's faster stand-ins compute what the modules they replace compute."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.runtime.runners import TorchRunner, _fast_fp64_stand_in, _with_fast_fp64_convolutions


def _double_conv(seed: int, *args, **kwargs) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(*args, **kwargs).double().eval()


def _inputs(shape: tuple[int, ...], channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(7).normal(size=shape))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


DEPTHWISE = {
    "convnext-7x7": dict(kernel_size=7, padding=3),
    "3x3": dict(kernel_size=3, padding=1),
    "5x3-no-padding": dict(kernel_size=(5, 3), padding=0),
    "7x7-no-bias": dict(kernel_size=7, padding=3, bias=False),
    "3x3-wider-padding": dict(kernel_size=3, padding=2),
}
PATCH = {
    "convnext-stem-4x4": dict(kernel_size=4, stride=4),
    "convnext-downsample-2x2": dict(kernel_size=2, stride=2),
    "3x2-no-bias": dict(kernel_size=(3, 2), stride=(3, 2), bias=False),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("kind", DEPTHWISE)
def test_the_shifted_depthwise_stand_in_computes_the_depthwise_convolution(kind, channels_last):
    conv = _double_conv(1, 12, 12, groups=12, **DEPTHWISE[kind])
    stand_in = _fast_fp64_stand_in(conv)
    assert type(stand_in).__name__ == "ShiftedDepthwise"
    x = _inputs((3, 12, 17, 9), channels_last)
    with torch.inference_mode():
        expected, actual = conv(x), stand_in(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("kind", PATCH)
def test_the_patch_matmul_stand_in_computes_the_strided_convolution(kind, channels_last):
    conv = _double_conv(2, 6, 10, **PATCH[kind])
    stand_in = _fast_fp64_stand_in(conv)
    assert type(stand_in).__name__ == "PatchMatmul"
    x = _inputs((2, 6, 17, 13), channels_last)  # sizes the kernel does not divide: conv drops the rest
    with torch.inference_mode():
        expected, actual = conv(x), stand_in(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 4, 3, padding=1, groups=4, stride=2),  # strided depthwise
        nn.Conv2d(4, 8, 3, padding=1),  # dense 3x3: PyTorch's own im2col + dgemm
        nn.Conv2d(4, 8, 2, stride=2, padding=1),  # padded patches overlap the border
        nn.Conv2d(4, 8, 2, stride=2, dilation=2),
        nn.Conv2d(4, 8, 2, stride=2, padding_mode="reflect"),
        nn.Conv2d(4, 4, 3, padding="same", groups=4),
    ],
    ids=["strided-depthwise", "dense-3x3", "padded-patches", "dilated", "reflect-padding", "same-padding"],
)
def test_convolutions_without_an_exact_stand_in_are_left_as_they_are(conv):
    assert _fast_fp64_stand_in(conv) is None
    model = nn.Sequential(conv)
    assert _with_fast_fp64_convolutions(model)[0] is conv


def test_a_conv2d_subclass_with_its_own_forward_is_left_as_it_is():
    class Scaled(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    assert _fast_fp64_stand_in(Scaled(4, 4, 7, padding=3, groups=4)) is None


@pytest.mark.checks
@pytest.mark.parametrize("size", ["test", "atto"])
def test_the_fast_float64_localization_net_computes_the_plain_double_model(size):
    from harness.models import localization_net

    model = localization_net(size)
    runner = TorchRunner(model, ["mel_spectrogram"], ["positions", "uncertainties"], dtype="float64")
    used = {type(m).__name__ for m in runner.model.modules()}
    assert {"ShiftedDepthwise", "PatchMatmul"} <= used and "Conv2d" not in used
    feeds = {"mel_spectrogram": np.random.default_rng(3).normal(size=(3, 3, 128, 32)).astype(np.float32)}
    fast = runner.infer(feeds)
    with torch.inference_mode():
        plain = copy.deepcopy(model).double()(torch.from_numpy(feeds["mel_spectrogram"]).double())
    for name, expected in zip(["positions", "uncertainties"], plain):
        assert fast[name].dtype == np.float64
        np.testing.assert_allclose(fast[name], expected.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "make", [lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6), lambda: nn.Conv2d(6, 8, 2, stride=2)],
    ids=["depthwise", "patch"],
)
def test_a_stand_in_keeps_every_attribute_of_the_convolution_it_replaces(make):
    conv = make().double()
    stand_in = _fast_fp64_stand_in(conv)
    assert isinstance(stand_in, nn.Conv2d)
    for name, value in vars(conv).items():
        assert hasattr(stand_in, name), name
    for name in ("stride", "kernel_size", "dilation", "padding", "groups", "in_channels", "out_channels"):
        assert getattr(stand_in, name) == getattr(conv, name), name
    assert stand_in.weight is conv.weight
    # What the stand-in adds stays its own: the convolution it copied is unchanged.
    assert set(dict(conv.named_buffers())) == set() and "taps" not in vars(conv)["_buffers"]


@pytest.mark.checks
def test_a_library_model_that_reads_its_convolutions_attributes_runs_in_float64_with_the_stand_ins():
    """transformers' MobileNetV2 reads each convolution's .stride for TF-style padding."""
    pytest.importorskip("transformers")
    from tests import real_models

    model = real_models.mobilenet_v2()
    runner = TorchRunner(model, ["pixel_values"], ["last_hidden_state", "pooler_output"], dtype="float64")
    assert "ShiftedDepthwise" in {type(m).__name__ for m in runner.model.modules()}
    feeds = {"pixel_values": np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype(np.float32)}
    fast = runner.infer(feeds)
    with torch.inference_mode():
        plain = copy.deepcopy(model).double()(torch.from_numpy(feeds["pixel_values"]).double())
    for name in ("last_hidden_state", "pooler_output"):
        np.testing.assert_allclose(fast[name], plain[name].numpy(), rtol=0, atol=1e-12)


@pytest.mark.checks
@pytest.mark.slow
def test_the_gate_keeps_its_noise_check_on_a_library_model_that_needs_the_stand_ins(tmp_path):
    pytest.importorskip("transformers")
    import tomllib

    from harness.core import config as gate_config
    from harness.core.strategies import InputCase
    from harness.gate.session import GateSession
    from tests.conftest import HERE

    section = tomllib.loads(MOBILENET_V2)
    session = GateSession(gate_config.parse(section, tmp_path, search_dirs=(HERE,)), work_dir=tmp_path)
    session.prepare()
    assert session.artifact is not None, session.artifact_error
    for family in ("normal", "large"):
        result = session.check_parity(InputCase(family=family, sizes={"batch": 2}, seed=1, magnitude=100.0))
        assert result, str(result)
        assert result.noise, "the noise check must have run"
    assert session.parity.fp64_unavailable is None


MOBILENET_V2 = """
model = "real_models:mobilenet_v2"
exporter = "torchscript"
outputs = ["last_hidden_state", "pooler_output"]
[[inputs]]
name = "pixel_values"
shape = ["batch", 3, 32, 32]
range = [-2.0, 2.0]
dims = { batch = [1, 4] }
"""


@pytest.mark.checks
@pytest.mark.parametrize("name", ["bert", "vit", "resnet", "convnext", "wav2vec2", "lstm"])
def test_the_float64_reference_of_a_large_model_casts_as_it_runs_and_computes_the_double_model(name, monkeypatch):
    """Above LAZY_FP64_BYTES the reference holds no double copy; here the limit is lowered so that
    the real architectures take that path and are compared with the double copy."""
    import tomllib

    from harness.core import config as gate_config
    from harness.runtime import fp64_lazy
    from harness.runtime.export import example_feeds
    from tests import real_models
    from tests.real_architectures import CONFIGS

    config = gate_config.parse(tomllib.loads(CONFIGS[name]), Path("."))
    model = getattr(real_models, name)()
    names = ([spec.name for spec in config.inputs], list(config.outputs))
    feeds = example_feeds(config, config.trace_sizes, seed=5)
    before = {key: (value, value.dtype) for key, value in model.state_dict(keep_vars=True).items()}
    copied = TorchRunner(model, *names, dtype="float64").infer(feeds)
    monkeypatch.setattr(fp64_lazy, "LAZY_FP64_BYTES", 0)
    monkeypatch.setattr(fp64_lazy, "UNIT_BYTES", 0)  # module by module: the finest slices
    runner = TorchRunner(model, *names, dtype="float64")
    assert type(runner.model).__name__ == "CastAsItRuns"
    lazy = runner.infer(feeds)
    print(f"{name}: {runner.model.fallback or 'cast as it runs'}")
    for output in config.outputs:
        assert lazy[output].dtype == np.float64
        np.testing.assert_allclose(lazy[output], copied[output], rtol=0, atol=1e-12)
    after = model.state_dict(keep_vars=True)
    # The float32 model is left as it was: the same tensors, in float32.
    assert all(after[key] is value and value.dtype == dtype for key, (value, dtype) in before.items())


class _ReturnsItsOwnWeight(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[: x.shape[0]]  # a view of the weight, not a copy


class _UsesAWeightViewAfterTheNextUnitRan(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = _ReturnsItsOwnWeight()
        self.second = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.first(x)
        return self.second(x) * rows  # `rows` read after `second` cast its weights


@pytest.mark.unit
def test_casting_as_it_runs_keeps_a_weight_view_a_unit_returned_and_reuses_its_buffers_call_after_call(monkeypatch):
    """The double weights live in buffers kept between calls, one per depth: a unit's output that
    is a view of them must not be overwritten by the next unit, and a second call must compute as
    the first did."""
    from harness.runtime import fp64_lazy

    torch.manual_seed(0)
    model = _UsesAWeightViewAfterTheNextUnitRan().eval()
    copied = TorchRunner(model, ["x"], ["y"], dtype="float64")
    monkeypatch.setattr(fp64_lazy, "LAZY_FP64_BYTES", 0)
    monkeypatch.setattr(fp64_lazy, "UNIT_BYTES", 0)
    lazy = TorchRunner(model, ["x"], ["y"], dtype="float64")
    assert type(lazy.model).__name__ == "CastAsItRuns"
    for seed in (1, 2):
        feeds = {"x": np.random.default_rng(seed).normal(size=(3, 4)).astype(np.float32)}
        expected, got = copied.infer(feeds)["y"], lazy.infer(feeds)["y"]
        assert lazy.model.fallback is None
        np.testing.assert_array_equal(got, expected)
