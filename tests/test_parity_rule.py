"""The parity verdict, property by property (issue: no false blocks on real architectures).

Unit level: ``judge_output`` on arrays made to stand in for ONNX Runtime, PyTorch fp32 and the
float64 reference, so each property is tested at any magnitude without a model in the way.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.compare.rule import (
    at_input_scale, float64_cannot_matter, for_inputs_outside_range, judge_output, judge_runtime,
)  # fmt: skip
from harness.core.config import Tolerance

TOLERANCE = Tolerance()


def _runs(exact: np.ndarray, torch_error: np.ndarray, onnx_error: np.ndarray):
    return (exact + onnx_error), (exact + torch_error), exact


@settings(max_examples=200, deadline=None)
@given(
    magnitude=st.sampled_from([1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6]),
    torch_relative_noise=st.sampled_from([1e-8, 1e-6, 1e-4, 1e-2, 1e-1]),
    closeness=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_onnx_as_close_to_float64_as_pytorch_is_never_blocked(magnitude, torch_relative_noise, closeness, seed):
    """Property 1, at any magnitude and any conditioning: ONNX Runtime's error against float64 is
    at most ``closeness`` (<= 2) times PyTorch fp32's on every value."""
    rng = np.random.default_rng(seed)
    exact = rng.normal(0.0, magnitude, 64)
    torch_error = rng.normal(0.0, 1.0, 64) * torch_relative_noise * np.abs(exact)
    onnx_error = torch_error * closeness * rng.choice([-1.0, 1.0], 64) * rng.uniform(0.0, 1.0, 64)
    actual, expected, exact = _runs(exact, torch_error, onnx_error)
    judgement = judge_output(
        "y", actual.astype(np.float32), expected.astype(np.float32), exact, TOLERANCE, in_range=False
    )
    assert judgement.comparison, str(judgement.comparison)
    assert judgement.noise is not None and judgement.noise, str(judgement.noise)


def test_case_1_a_value_pytorch_itself_misses_by_more_than_rtol_does_not_block_and_is_reported():
    """The ResNet case: PyTorch fp32 is 1.4e-3 relative off one value; ONNX Runtime is closer."""
    exact = np.linspace(0.04, 0.06, 512)  # the reported value was 0.05046
    expected = exact.copy()
    expected[17] = exact[17] * (1 + 1.4e-3)
    actual = exact.copy()
    actual[17] = exact[17] * (1 + 0.5e-3)
    judgement = judge_output("last_hidden_state", actual.astype(np.float32), expected.astype(np.float32), exact, TOLERANCE)
    assert judgement.comparison and judgement.noise
    [finding] = judgement.findings
    assert finding.kind == "unstable" and not finding.blocking
    assert "PyTorch fp32 deviates from float64" in str(finding)


def test_case_2_an_ill_conditioned_input_is_a_finding_that_blocks_only_when_asked():
    rng = np.random.default_rng(0)
    exact = rng.normal(0.0, 1.0, 400)
    torch_error = rng.normal(0.0, 1.6e-2, 400)
    actual, expected, exact = _runs(exact, torch_error, 6 * torch_error * rng.uniform(-1, 1, 400))
    relaxed = judge_output("h", actual.astype(np.float32), expected.astype(np.float32), exact, TOLERANCE,
                           context="constant inputs (batch=1, seed=0)")
    assert relaxed.comparison and relaxed.noise
    assert [f.kind for f in relaxed.findings] == ["unstable"]
    assert "on constant inputs (batch=1, seed=0)" in str(relaxed.findings[0])
    strict = judge_output("h", actual.astype(np.float32), expected.astype(np.float32), exact,
                          Tolerance(block_on_unstable=True))
    assert strict.findings[0].blocking


def test_a_defect_where_pytorch_is_precise_is_blocked_by_both_the_fixed_bound_and_the_noise_floor():
    rng = np.random.default_rng(1)
    exact = rng.normal(0.0, 1.0, 256)
    torch_error = rng.normal(0.0, 1e-7, 256) * np.abs(exact)
    onnx_error = torch_error.copy()
    onnx_error[7] += 5e-3 * abs(exact[7])
    actual, expected, exact = _runs(exact, torch_error, onnx_error)
    judgement = judge_output("y", actual, expected, exact, TOLERANCE)
    assert not judgement.comparison and not judgement.noise
    assert "1 of 256 values exceed atol+rtol*|ref|; worst at (7,)" in judgement.comparison.reason


def test_the_fixed_bound_never_overrules_a_passing_noise_check():
    """Where PyTorch's own error leaves the bound less than noise_factor x headroom, values that
    exceed it are the noise check's to judge: here ONNX is 6.5x PyTorch's noise on values of 1e-3."""
    rng = np.random.default_rng(2)
    exact = rng.normal(0.0, 1e-3, 512)
    torch_error = rng.normal(0.0, 3e-6, 512)
    onnx_error = 6.5 * torch_error[::-1]
    actual, expected, exact = _runs(exact, torch_error, onnx_error)
    judgement = judge_output("y", actual, expected, exact, TOLERANCE)
    assert judgement.noise and judgement.comparison, str(judgement.comparison)
    assert judgement.comparison.excused > 0


def test_a_saturation_defect_visible_only_far_outside_the_range_is_blocked():
    """A missing clamp: equal inside the range, far off for large inputs, where PyTorch is precise."""
    inputs = np.linspace(-1000.0, 1000.0, 101)
    exact = np.tanh(np.clip(inputs, -5, 5) / 5)
    expected = exact.astype(np.float32)
    actual = np.tanh(inputs / 5).astype(np.float32)
    judgement = judge_output("y", actual, expected, exact, TOLERANCE, in_range=False)
    assert not judgement.comparison or not judgement.noise


@pytest.mark.parametrize("noise_factor", [16.0, 0.0])
def test_nan_that_only_onnx_produces_always_blocks(noise_factor):
    exact = np.linspace(-1, 1, 16)
    actual = exact.astype(np.float32)
    actual[3] = np.nan
    judgement = judge_output("y", actual, exact.astype(np.float32), exact if noise_factor else None,
                             Tolerance(noise_factor=noise_factor))
    assert not judgement.comparison
    assert "ONNX Runtime produces NaN/Inf in 1 of 16 values where PyTorch does not" in judgement.comparison.reason


@pytest.mark.parametrize("with_float64", [True, False])
def test_nan_the_model_produces_itself_is_a_blocking_finding_unless_allowed(with_float64):
    with np.errstate(invalid="ignore", divide="ignore"):
        exact = np.log(np.linspace(-1, 1, 16))  # NaN for the negative half, as log(x) on [-1, 1]
    values = exact.astype(np.float32)
    blocking = judge_output("y", values.copy(), values.copy(), exact if with_float64 else None, TOLERANCE)
    assert blocking.comparison  # ONNX agrees with PyTorch: the export is not at fault
    [finding] = blocking.findings
    assert finding.kind == "non_finite" and finding.blocking
    assert "PyTorch itself produces NaN/Inf in" in str(finding)
    allowed = judge_output("y", values.copy(), values.copy(), exact if with_float64 else None,
                           Tolerance(allow_non_finite=True))
    assert not allowed.findings[0].blocking
    # Allowed or not, ONNX Runtime must agree with PyTorch on where the model is non-finite.
    disagreeing = values.copy()
    disagreeing[0] = 0.0
    assert not judge_output("y", disagreeing, values.copy(), exact if with_float64 else None,
                            Tolerance(allow_non_finite=True)).comparison


def test_without_float64_the_fixed_bound_judges_every_value():
    exact = np.linspace(0.04, 0.06, 512)
    expected = exact.copy()
    expected[17] *= 1 + 1.4e-3
    judgement = judge_output("y", exact.astype(np.float32), expected.astype(np.float32), None, TOLERANCE)
    assert not judgement.comparison and judgement.noise is None


def test_out_of_range_inputs_can_be_judged_looser_or_stricter():
    tolerance = Tolerance(out_of_range_scale=10.0)
    stress = for_inputs_outside_range(tolerance)
    assert (stress.atol, stress.rtol, stress.mae, stress.noise_factor) == (1e-4, 1e-2, 1e-4, 160.0)
    assert for_inputs_outside_range(Tolerance()) == Tolerance()


def test_on_an_input_where_the_model_is_unstable_the_noise_check_reports_but_does_not_block():
    """Wav2Vec2 on constant audio: PyTorch fp32 is 1e-2 off, ONNX Runtime 15x that. Neither fp32
    answer means much; the finding says so, and blocks only when the config asks."""
    rng = np.random.default_rng(3)
    exact = rng.normal(0.0, 1.0, 300)
    torch_error = rng.normal(0.0, 1e-2, 300)
    actual, expected, exact = _runs(exact, torch_error, 20 * torch_error[::-1])
    relaxed = judge_output("h", actual, expected, exact, TOLERANCE)
    assert relaxed.noise and relaxed.noise.waived and relaxed.comparison
    assert "not blocking: the model is unstable on this input" in str(relaxed.noise)
    strict = judge_output("h", actual, expected, exact, Tolerance(block_on_unstable=True))
    assert any(f.blocking for f in strict.findings)


def test_where_pytorch_happens_to_be_exact_a_few_ulps_from_onnx_do_not_block():
    """Zeros in, biases out: PyTorch's floor can be 0 while ONNX Runtime's order is 8 ulps off."""
    exact = np.full(8, 0.05)
    expected = exact.astype(np.float32)
    actual = (exact + 8 * np.spacing(np.float32(0.05))).astype(np.float32)
    judgement = judge_output("y", actual, expected, exact, TOLERANCE)
    assert judgement.noise and judgement.comparison, str(judgement.noise)


def test_one_unstable_value_does_not_disarm_the_checks_for_the_rest_of_the_output():
    """One value where PyTorch is 3e-5 off must not let a 1e-4 error on 47 small values through."""
    rng = np.random.default_rng(5)
    exact = np.concatenate([rng.uniform(0.01, 0.1, 47), rng.uniform(0.5, 1.0, 465)])
    torch_error = rng.normal(0.0, 1e-8, 512)
    torch_error[500] = 3e-5
    onnx_error = torch_error.copy()
    onnx_error[:47] += 1e-4
    actual, expected, exact = _runs(exact, torch_error, onnx_error)
    judgement = judge_output("y", actual, expected, exact, TOLERANCE)
    assert not judgement.comparison, str(judgement.comparison)
    assert "exceed atol+rtol*|ref|" in judgement.comparison.reason


# --- sparing the float64 run where it cannot matter (float64_cannot_matter) ---------------------


def _mixed_scales(rng: np.random.Generator, size: int, decades: int) -> np.ndarray:
    """Values over ``decades`` decades, exact zeros among them: the rule's scale sets are filled."""
    values = rng.choice([-1.0, 1.0], size) * 10.0 ** rng.uniform(-decades, 0, size)
    values[rng.uniform(size=size) < 0.1] = 0.0
    return values


def _three_runs(
    seed: int, decades: int, onnx_ulps: float, torch_relative: float, torch_exact_share: float, magnitude: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX Runtime (fp32) within ``onnx_ulps`` of PyTorch fp32, and a float64 run that PyTorch
    misses by up to ``torch_relative`` per value, or hits exactly by luck on a share of them, as at
    a ReLU's kink: (actual, expected, float64)."""
    rng = np.random.default_rng(seed)
    exact = _mixed_scales(rng, 4096, decades) * magnitude
    expected = exact.astype(np.float32)
    steps = rng.uniform(-onnx_ulps, onnx_ulps, exact.size) * np.spacing(np.abs(expected))
    actual = (expected + steps.astype(np.float32)).astype(np.float32)
    torch_error = rng.normal(0.0, torch_relative, exact.size) * np.abs(exact)
    torch_error[rng.uniform(size=exact.size) < torch_exact_share] = 0.0
    return actual, expected, expected.astype(np.float64) - torch_error


_RUNS = dict(
    seed=st.integers(0, 2**32 - 1),
    decades=st.sampled_from([3, 6, 12]),
    onnx_ulps=st.sampled_from([0.0, 0.5, 2.0, 8.0, 64.0]),
    torch_relative=st.sampled_from([0.0, 1e-9, 1e-7, 1e-4, 0.1]),
    torch_exact_share=st.floats(0.0, 1.0),
)


@settings(max_examples=300, deadline=None)
@given(runs=st.builds(_three_runs, **_RUNS))
def test_where_the_float64_run_is_spared_it_could_change_neither_verdict_nor_finding(runs):
    """Soundness: whenever ``float64_cannot_matter`` spares the float64 run, judge_runtime with any
    plausible float64 run (PyTorch off by up to 10% per value, or exact by luck on a share of them,
    as at a ReLU's kink) passes the output and raises no runtime finding."""
    actual, expected, float64 = runs
    if not float64_cannot_matter(actual, expected, TOLERANCE):
        return
    judgement = judge_runtime("y", actual.astype(np.float64), expected.astype(np.float64), float64, TOLERANCE)
    assert judgement.comparison.passed, judgement.comparison.reason
    assert not [f for f in judgement.findings if f.kind == "runtime"], [str(f) for f in judgement.findings]


@settings(max_examples=300, deadline=None)
@given(runs=st.builds(_three_runs, **_RUNS, magnitude=st.sampled_from([1e-3, 1.0, 300.0])))
def test_where_the_whole_rule_spares_the_float64_run_it_could_change_neither_verdict_nor_noise_check(runs):
    """Soundness where graph fidelity cannot judge (contrib ops, a model over its size limit):
    whenever ``float64_cannot_matter(runtime_only=False)`` spares the float64 run, judge_output's
    whole rule with any plausible float64 run passes the output, its noise check included, and
    raises no blocking finding; without float64 it passes too."""
    actual, expected, float64 = runs
    if not float64_cannot_matter(actual, expected, TOLERANCE, runtime_only=False):
        return
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    judgement = judge_output("y", a, e, float64, TOLERANCE)
    assert judgement.comparison.passed, judgement.comparison.reason
    assert judgement.noise is None or judgement.noise.passed, str(judgement.noise)
    assert not [f for f in judgement.findings if f.blocking], [str(f) for f in judgement.findings]
    assert judge_output("y", a, e, None, TOLERANCE).comparison.passed


def test_the_whole_rule_keeps_the_float64_run_where_one_value_alone_reaches_the_mean_bound():
    """judge_output blocks on the mean error over the values PyTorch computes stably, which only
    float64 names: one value at the mean's bound could be that whole subset."""
    expected = np.full(1000, 4.0, np.float32)
    actual = expected.copy()
    # 10 ulps off on one value: within the fixed bound and the noise check's slack, and 5e-9 on
    # the mean over every value; but 5e-6 on that value alone, over the mean's bound of 4e-6.
    actual[0] += np.float32(5e-6)
    tolerance = replace(TOLERANCE, mae=1e-6)
    assert float64_cannot_matter(actual, expected, tolerance)
    assert not float64_cannot_matter(actual, expected, tolerance, runtime_only=False)


def test_agreement_to_an_ulp_spares_the_float64_run_and_a_disagreeing_tail_does_not():
    rng = np.random.default_rng(0)
    expected = rng.normal(0.0, 1.0, 4096).astype(np.float32)
    one_ulp = (expected + np.spacing(expected)).astype(np.float32)
    assert float64_cannot_matter(one_ulp, expected, TOLERANCE)
    # A sigmoid's tail: values far below the peak, 5e-3 relative apart though 1e-9 absolute.
    tail = np.concatenate([expected, np.full(512, 2e-7, np.float32)])
    off_in_the_tail = tail.copy()
    off_in_the_tail[-512:] *= np.float32(1.005)
    assert not float64_cannot_matter(off_in_the_tail, tail, TOLERANCE)


@pytest.mark.parametrize(
    "actual, why",
    [
        (np.array([1.0, np.nan], np.float32), "a NaN only ONNX Runtime has"),
        (np.array([1.0, 0.5 + 1e-3], np.float32), "beyond the fixed bound"),
        (np.array([1.0, 0.5 + 3e-6], np.float32), "within the fixed bound but far beyond the slack"),
    ],
)
def test_the_float64_run_is_kept_where_it_can_matter(actual, why):
    expected = np.array([1.0, 0.5], np.float32)
    assert not float64_cannot_matter(actual, expected, TOLERANCE), why


def test_integer_outputs_never_need_the_float64_run():
    tags = np.array([3, 1, 4], np.int64)
    assert float64_cannot_matter(tags, tags.copy(), TOLERANCE)


def test_a_block_on_the_mean_alone_still_names_the_worst_value():
    expected = np.linspace(0.5, 1.0, 64)
    actual = expected + 5e-4 * np.linspace(0.5, 1.0, 64)  # every value within atol + rtol*|ref|; the mean is not
    judgement = judge_runtime("y", actual, expected, expected.copy(), TOLERANCE)
    assert not judgement.comparison.passed
    reason = judgement.comparison.reason
    assert "mean abs error" in reason and "worst at (63,): " in reason and "rel error" in reason, reason


def test_on_stress_inputs_the_runtime_bound_is_an_ulp_at_the_inputs_magnitude_and_larger_errors_still_block():
    """The streaming GRU fed a state of 1e4 (range [-1, 1]): ONNX Runtime's saturated update gate
    is 3.5e-8 where the true value is 0, times the state. PyTorch is exact there. Judged at the
    in-range bound that blocked a correct export; at one ulp of 1e4 (1.2e-3) it is a finding.
    A probability off by 0.01, on outputs no larger than 1, still blocks there."""
    assert at_input_scale(TOLERANCE, 1.0) is TOLERANCE  # an ulp at 1 is below atol
    scaled = at_input_scale(TOLERANCE, 1e4)
    assert scaled.atol == scaled.mae == 1e4 * 2.0**-23 and scaled.rtol == TOLERANCE.rtol
    rng = np.random.default_rng(0)
    exact = rng.uniform(0.0, 0.1, 64)
    expected = exact.astype(np.float32)
    gate_tail = exact.copy()
    gate_tail[:8] += 3.5e-8 * 1e4 * rng.choice([-1.0, 1.0], 8)
    actual = gate_tail.astype(np.float32)
    assert not judge_runtime("h_next", actual, expected, exact, TOLERANCE, in_range=False).comparison
    at_scale = judge_runtime("h_next", actual, expected, exact, scaled, in_range=False)
    assert at_scale.comparison, str(at_scale.comparison)
    assert [finding.kind for finding in at_scale.findings] == ["runtime"]
    off = exact.copy()
    off[3] += 0.01
    assert not judge_runtime("probabilities", off.astype(np.float32), expected, exact, scaled, in_range=False).comparison
