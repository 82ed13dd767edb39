"""Inputs as real models need them: ranges a user writes, masks and lengths with a padding side,
a pad id, don't-care output positions, real samples, quiet signals, honest range accounting, and
input sensitivity."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings

from harness.checks.sensitivity import check_sensitivity
from harness.core import config as gate_config
from harness.core.errors import ConfigError
from harness.core.inputs import FAMILIES, IN_RANGE_FAMILIES, InputCase, in_declared_domain
from harness.core.strategies import input_cases
from harness.gate.session import GateSession
from tests.conftest import HERE

TOKENS = """
model = "user_models:padded_sequence_net"
outputs = ["steps"]
exporter = "torchscript"
[[inputs]]
name = "tokens"
shape = ["batch", "sequence", 4]
range = [-1.0, 1.0]
dims = { batch = [1, 5], sequence = [2, 12] }
pad = { value = 0.0 }
[[inputs]]
name = "attention_mask"
shape = ["batch", "sequence"]
dtype = "int64"
mask = { padding = "%(padding)s", min_valid = %(min_valid)s }
"""


def _config(text: str, base: Path = HERE) -> gate_config.GateConfig:
    return gate_config.parse(tomllib.loads(text), base, search_dirs=(HERE,))


def _tokens(padding: str = "both", min_valid: int = 1, extra: str = "") -> gate_config.GateConfig:
    return _config(TOKENS % {"padding": padding, "min_valid": min_valid} + extra)


# --- ranges ------------------------------------------------------------------------------------


def test_a_normalised_image_range_is_rounded_inward_and_every_family_draws_from_it():
    config = _config("""
model = "m:f"
outputs = ["y"]
[[inputs]]
name = "pixel_values"
shape = ["batch", 3, 4, 4]
range = [-2.1, 2.6]
dims = { batch = [1, 2] }
""")
    [spec] = config.inputs
    assert -2.1 <= spec.low < -2.0999 and 2.5999 < spec.high <= 2.6
    assert np.float32(spec.low) == spec.low and np.float32(spec.high) == spec.high

    @settings(max_examples=40, deadline=None, database=None)
    @given(case=input_cases(config))
    def drawn(case):  # Hypothesis refused -2.6 as a float32 bound before
        feeds = case.materialize(config)
        if case.family in IN_RANGE_FAMILIES:
            assert in_declared_domain(config, feeds), case

    drawn()


@pytest.mark.parametrize(
    ("dtype", "value_range", "message"),
    [
        ("int64", "[0.2, 0.8]", "holds no int64 value"),
        ("float32", "[2.0, 1.0]", "low <= high"),
    ],
)
def test_a_range_that_holds_no_value_is_one_line_naming_the_input(dtype, value_range, message):
    with pytest.raises(ConfigError, match=message) as error:
        _config(f"""
model = "m:f"
outputs = ["y"]
[[inputs]]
name = "ids"
shape = ["batch"]
dtype = "{dtype}"
range = {value_range}
""")
    assert "'ids'" in str(error.value) and "\n" not in str(error.value)


def test_the_in_range_families_stay_inside_the_declared_range_and_the_stress_families_leave_it():
    config = _tokens()
    inside = {family: 0 for family in FAMILIES}
    for family in FAMILIES:
        for seed in range(20):
            case = InputCase(family, {"batch": 4, "sequence": 12}, seed=seed, constant=0.5, magnitude=100.0)
            inside[family] += in_declared_domain(config, case.materialize(config))
    assert all(inside[f] == 20 for f in IN_RANGE_FAMILIES), inside  # `normal` called 860 of 900 outside before
    assert inside["large"] == 0 and inside["spikes"] < 20, inside


def test_the_quiet_family_is_nearly_constant_but_never_exactly():
    config = _tokens()
    for dither in (1e-3, 1e-5):
        tokens = InputCase("quiet", {"batch": 2, "sequence": 12}, seed=3, constant=0.4, dither=dither).materialize(config)["tokens"]
        valid = tokens[tokens != 0.0]
        assert 0 < valid.std() < 3 * dither and abs(valid.mean() - 0.4) < 0.01


# --- masks, pad ids and lengths -----------------------------------------------------------------


def _rows(mask: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row) for row in mask]


@pytest.mark.parametrize("side", ["right", "left"])
def test_masks_have_a_valid_prefix_or_suffix_the_longest_row_full_and_the_pad_id_where_padded(side):
    config = _tokens(side, min_valid=2)
    for seed in range(30):
        feeds = InputCase("uniform", {"batch": 5, "sequence": 9}, seed=seed).materialize(config)
        mask = feeds["attention_mask"]
        assert mask.dtype == np.int64 and set(np.unique(mask)) <= {0, 1}
        for row in _rows(mask):
            ones = [i for i, v in enumerate(row) if v]
            assert len(ones) >= 2 and ones == list(range(ones[0], ones[-1] + 1)), row  # contiguous
            assert (ones[0] == 0) if side == "right" else (ones[-1] == 8), row
        assert mask.sum(axis=1).max() == 9  # a batch is padded to its longest sequence
        assert np.all(feeds["tokens"][mask == 0] == 0.0)
        assert np.all(feeds["tokens"][mask == 1] != 0.0)


@pytest.mark.checks
def test_hypothesis_reaches_one_valid_position_all_valid_and_left_padding():
    config = _tokens("both", min_valid=1)
    strategy = input_cases(config)
    options = settings(max_examples=500, database=None, suppress_health_check=list(HealthCheck))

    def mask_of(case):
        return case.materialize(config)["attention_mask"]

    one = find(strategy, lambda c: c.sizes["sequence"] > 2 and mask_of(c).sum(axis=1).min() == 1, settings=options)
    full = find(strategy, lambda c: c.sizes["batch"] > 1 and mask_of(c).all(), settings=options)
    left = find(strategy, lambda c: (mask_of(c)[:, 0] == 0).any(), settings=options)
    assert mask_of(one).sum(axis=1).min() == 1 and mask_of(full).all() and left.side == "left"


def test_a_padding_mask_marks_padding_with_true_when_asked():
    config = _config("""
model = "m:f"
outputs = ["y"]
[[inputs]]
name = "tokens"
shape = ["batch", "sequence", 16]
dims = { batch = [1, 4], sequence = [2, 10] }
[[inputs]]
name = "padding"
shape = ["batch", "sequence"]
dtype = "bool"
mask = { marks = "padding" }
""")
    padding = InputCase("uniform", {"batch": 4, "sequence": 10}, seed=5, valid="fewest").materialize(config)["padding"]
    assert padding.dtype == bool and _rows(~padding) == [(1,) + (0,) * 9] * 4


def test_lengths_never_exceed_their_dimension_and_agree_with_a_mask_on_it():
    config = _config("""
model = "m:f"
outputs = ["y"]
[[inputs]]
name = "frames"
shape = ["batch", 4, "time"]
dims = { batch = [1, 6], time = [3, 40] }
[[inputs]]
name = "lengths"
shape = ["batch"]
dtype = "int64"
lengths = { dim = "time", min_valid = 2 }
[[inputs]]
name = "frame_mask"
shape = ["batch", 1, "time"]
dtype = "int32"
mask = { dim = "time", min_valid = 2 }
""")
    lengths_spec = config.inputs[1]
    assert (lengths_spec.low, lengths_spec.high) == (2.0, 40.0)  # its range is the dimension's

    @settings(max_examples=60, deadline=None, database=None)
    @given(case=input_cases(config))
    def consistent(case):
        feeds = case.materialize(config)
        time = case.sizes["time"]
        assert feeds["lengths"].shape == (case.sizes["batch"],)
        assert np.all((2 <= feeds["lengths"]) & (feeds["lengths"] <= time))
        assert np.array_equal(feeds["frame_mask"][:, 0, :].sum(axis=1), feeds["lengths"])

    consistent()


@pytest.mark.parametrize(
    ("extra_input", "message"),
    [
        ('mask = { padding = "middle" }', "padding must be one of"),
        ('mask = { dim = "nope" }', "must name a symbolic dimension"),
        ('lengths = { dim = "sequence" }', "must have an integer dtype"),
        ("mask = { min_valid = 99 }", "at most 12 long"),
    ],
)
def test_a_wrong_mask_or_lengths_declaration_is_one_line(extra_input, message):
    text = TOKENS.replace('mask = { padding = "%(padding)s", min_valid = %(min_valid)s }', extra_input)
    if "lengths" in extra_input:
        text = text.replace('dtype = "int64"\n' + extra_input, 'dtype = "float32"\n' + extra_input)
    with pytest.raises(ConfigError, match=message) as error:
        _config(text)
    assert "\n" not in str(error.value)


def test_padded_outputs_must_name_a_mask_or_lengths_input():
    with pytest.raises(ConfigError, match="must name a mask or lengths input.*valid: attention_mask"):
        _tokens(extra='[padded_outputs]\nsteps = { by = "tokens", axis = 1 }\n')


# --- don't-care output positions ----------------------------------------------------------------


@pytest.fixture(scope="module")
def padded_session(tmp_path_factory):
    """The export computes values at padded positions, eager PyTorch writes zeros there."""
    work = tmp_path_factory.mktemp("padded")
    session = GateSession(_tokens(extra='[padded_outputs]\nsteps = { by = "attention_mask", axis = 1 }\n'), work_dir=work)
    session.prepare()
    assert session.artifact is not None, session.artifact_error
    return session


@pytest.mark.checks
def test_padded_positions_declared_dont_care_are_left_out_and_counted(padded_session):
    case = InputCase("uniform", {"batch": 3, "sequence": 8}, seed=2, valid="fewest")
    result = padded_session.check_parity(case)
    assert result, str(result)
    assert result.left_out == {"steps": 3 * 7 * 2} and result.compared == {"steps": 3 * 1 * 2}
    assert padded_session.parity_summary()["outputs"]["steps"]["values_left_out_as_padding"] >= 42


@pytest.mark.checks
def test_without_the_declaration_the_padded_positions_block(padded_session):
    from dataclasses import replace

    whole = replace(padded_session.config, padded_outputs={})
    case = InputCase("uniform", {"batch": 3, "sequence": 8}, seed=2, valid="fewest")
    from harness.checks.parity import check_parity

    result = check_parity(case, whole, padded_session.torch_runner, padded_session.ort_runner)
    assert not result and "values exceed" in str(result)


@pytest.mark.checks
def test_a_mismatch_at_valid_positions_still_blocks(padded_session, tmp_path):
    import onnx
    from onnx import numpy_helper

    from harness.checks.parity import check_parity
    from harness.runtime.runners import OrtRunner

    model = onnx.load(str(padded_session.artifact.path))
    weight = next(i for i in model.graph.initializer if len(i.dims) == 2)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1e-3
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(tmp_path / "defect.onnx"))
    runner = OrtRunner(tmp_path / "defect.onnx", ["tokens", "attention_mask"], ["steps"])
    case = InputCase("uniform", {"batch": 3, "sequence": 8}, seed=2)
    result = check_parity(case, padded_session.config, padded_session.torch_runner, runner, fp64_reference=padded_session.fp64_reference)
    assert not result and result.left_out["steps"] > 0, str(result)


# --- real samples -------------------------------------------------------------------------------


def _write_samples(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for index, (batch, sequence) in enumerate([(2, 6), (3, 12)]):
        mask = np.ones((batch, sequence), np.int64)
        mask[0, sequence // 2:] = 0
        tokens = rng.normal(0, 0.3, (batch, sequence, 4)).astype(np.float32) * mask[..., None]
        np.savez(folder / f"batch{index}.npz", tokens=tokens, attention_mask=mask)


@pytest.mark.checks
def test_samples_are_drawn_as_they_are_resized_to_the_batch_and_perturbed(tmp_path):
    _write_samples(tmp_path)
    config = _config('samples = ["batch*.npz"]\n' + TOKENS % {"padding": "right", "min_valid": 1}, tmp_path)
    assert [p.name for p in config.samples] == ["batch0.npz", "batch1.npz"]
    as_is = InputCase("samples", {"batch": 5, "sequence": 4}, sample=1, perturb="none").materialize(config)
    assert as_is["tokens"].shape == (3, 12, 4)
    batched = InputCase("samples", {"batch": 5, "sequence": 4}, sample=0, perturb="batched").materialize(config)
    assert batched["tokens"].shape == (5, 6, 4) and batched["attention_mask"].shape == (5, 6)
    noisy = InputCase("samples", {"batch": 2, "sequence": 4}, sample=0, perturb="noise", seed=1).materialize(config)
    assert noisy["tokens"].shape[0] == 2 and np.array_equal(noisy["attention_mask"].sum(), noisy["attention_mask"].sum())

    # Hypothesis's defaults, not the profile an earlier in-process gate left loaded.
    quiet = settings(settings.get_profile("default"), max_examples=80, deadline=None, database=None)

    @quiet
    @given(case=input_cases(config))
    def every_drawn_case_materializes(case):
        case.materialize(config)

    every_drawn_case_materializes()
    # find() searches until a sample case turns up: an 80-draw sweep can miss one family by chance.
    drawn_sample = find(input_cases(config), lambda case: case.family == "samples",
                        settings=settings(quiet, max_examples=2000))
    assert drawn_sample.materialize(config)["tokens"].shape[-1] == 4


@pytest.mark.parametrize(
    ("samples", "content", "message"),
    [
        ('["missing*.npz"]', None, "matches no file"),
        ('["bad.npz"]', {"tokens": np.zeros((1, 3, 4), np.float32)}, "lacks input\\(s\\) \\['attention_mask'\\]"),
        ('["bad.npz"]', {"tokens": np.zeros((1, 3, 5), np.float32), "attention_mask": np.ones((1, 3))}, "axis 2 is 5"),
    ],
)
def test_a_bad_sample_is_one_line_before_any_check(tmp_path, samples, content, message):
    if content is not None:
        np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(ConfigError, match=message) as error:
        config = _config(f"samples = {samples}\n" + TOKENS % {"padding": "right", "min_valid": 1}, tmp_path)
        from harness.core.samples import load_samples

        load_samples(config)
    assert "\n" not in str(error.value) and str(tmp_path) not in str(error.value)


# --- input sensitivity --------------------------------------------------------------------------

IGNORING = """
model = "user_models:%(model)s"
outputs = ["estimate"]
%(top)s
[[inputs]]
name = "spectrum"
shape = ["batch", 1, 16, 16]
range = [0.0, 1.0]
dims = { batch = [1, 4] }
[[inputs]]
name = "receivers"
shape = ["batch", 6]
range = [-90.0, 90.0]
%(receivers)s
"""


def _sensitivity(model: str, *, top: str = "", receivers: str = ""):
    from harness.core.model_loader import build_model
    from harness.runtime.runners import TorchRunner

    config = _config(IGNORING % {"model": model, "top": top, "receivers": receivers})
    runner = TorchRunner(build_model(config.model, {}, None, (HERE,)), ["spectrum", "receivers"], ["estimate"])
    return check_sensitivity(config, runner)


def test_a_model_that_ignores_an_input_gets_a_finding_naming_it():
    result = _sensitivity("ignores_receivers_net")
    [finding] = result.findings
    assert finding.kind == "ignored_input" and finding.output == "receivers" and not finding.blocking
    assert result, "a finding, not a block, unless the config asks"
    assert _sensitivity("two_input_net").findings == () and _sensitivity("two_input_net").checked == ("spectrum", "receivers")


def test_the_ignored_input_finding_blocks_when_the_config_asks_and_is_skipped_when_allowed():
    assert not _sensitivity("ignores_receivers_net", top="block_on_ignored_inputs = true")
    allowed = _sensitivity("ignores_receivers_net", top="block_on_ignored_inputs = true", receivers="may_be_ignored = true")
    assert allowed and allowed.findings == () and "receivers (may_be_ignored)" in allowed.skipped


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=input_cases(gate_config.parse(tomllib.loads(TOKENS % {"padding": "both", "min_valid": 1}), HERE)))
def test_a_case_as_the_gate_prints_it_rebuilds_the_same_inputs(case):
    """A failure names its case; ``onnx-gate debug --case`` must rebuild it from that text. A spike
    case's size and density were missing: "spikes inputs (batch=3, seed=0)" read back at size 1,
    where the failing one was 1e4."""
    from harness.core.inputs import describe_case
    from harness.debug.inputs import parse_case

    config = gate_config.parse(tomllib.loads(TOKENS % {"padding": "both", "min_valid": 1}), HERE)
    rebuilt = parse_case(describe_case(case), config)
    for name, values in case.materialize(config).items():
        np.testing.assert_array_equal(rebuilt.materialize(config)[name], values, err_msg=describe_case(case))


def test_the_largest_input_counts_float_values_only_and_leaves_pads_out():
    from harness.core.inputs import largest_input

    config = gate_config.parse(tomllib.loads(TOKENS % {"padding": "right", "min_valid": 1}), HERE)
    spikes = InputCase("spikes", {"batch": 2, "sequence": 6}, seed=1, magnitude=1e4, spike_fraction=0.05)
    feeds = spikes.materialize(config)
    assert largest_input(config, feeds) == 1e4
    # The mask (int64, structural) never counts, whatever it holds; nor does a pad value.
    inside = InputCase("uniform", {"batch": 2, "sequence": 6}, seed=1).materialize(config)
    assert largest_input(config, {**inside, "attention_mask": feeds["attention_mask"] * 1000}) <= 1.0
    far_pad = TOKENS.replace("pad = { value = 0.0 }", "pad = { value = 50.0 }") % {"padding": "right", "min_valid": 1}
    config = gate_config.parse(tomllib.loads(far_pad), HERE)
    padded = InputCase("uniform", {"batch": 3, "sequence": 8}, seed=2, valid="fewest").materialize(config)
    assert (padded["tokens"] == 50.0).any(), "the premise: some positions hold the pad value"
    assert largest_input(config, padded) <= 1.0


def test_a_stress_case_of_graph_fidelity_always_leaves_the_range():
    """A sparse spikes case on a small input can draw no spike: graph fidelity would then never
    see the stress it is there to judge (2 values per row here, 1% spikes)."""
    from harness.core.inputs import leaving_range

    config = gate_config.parse(tomllib.loads(TOKENS % {"padding": "right", "min_valid": 1}), HERE)
    sparse = InputCase("spikes", {"batch": 1, "sequence": 2}, seed=4, magnitude=1e4)
    assert in_declared_domain(config, sparse.materialize(config)), "the premise: this seed draws no spike"
    moved = leaving_range(config, sparse)
    assert not in_declared_domain(config, moved.materialize(config)) and moved.seed % 1000 == 4
