"""The parity check: ONNX Runtime's outputs against PyTorch's on one input case, judged by the
parity rule (harness/compare/rule.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Mapping

from harness.checks.declared import declare_check
from harness.checks.padded import output_validity
from harness.compare.rule import (
    ParityResult, at_input_scale, compare_outputs, float64_cannot_matter, for_inputs_outside_range,
)  # fmt: skip
from harness.core.config import GateConfig, Tolerance
from harness.core.inputs import describe_case, in_declared_domain, largest_input
from harness.runtime.case_runs import CaseRuns, run_case

if TYPE_CHECKING:
    import numpy as np

    from harness.core.inputs import InputCase
    from harness.core.timing import Stopwatch
    from harness.runtime.runners import Runner

CHECK = declare_check("parity", order=30)


def inputs_in_range(config: GateConfig, feeds: dict[str, np.ndarray]) -> bool:
    """Whether every input value lies inside its declared range: the normal operating region."""
    return in_declared_domain(config, feeds)


def keep_valid_positions(
    config: GateConfig, feeds: Mapping[str, np.ndarray], *runs: Mapping[str, np.ndarray] | None
) -> tuple[list[dict[str, np.ndarray] | None], dict[str, int], tuple[str, ...]]:
    """Each run's outputs with the padded positions of ``padded_outputs`` removed (flattened to
    the valid values), how many values that left out per output, and any declaration that does not
    fit the outputs. An output whose shapes disagree between runs is left whole for the shape check."""
    kept: list[dict[str, np.ndarray] | None] = [dict(run) if run is not None else None for run in runs]
    left_out: dict[str, int] = {}
    problems: list[str] = []
    for name in config.padded_outputs:
        shapes = {run[name].shape for run in kept if run is not None and name in run}
        if len(shapes) != 1:
            continue
        valid = output_validity(config, name, feeds, next(iter(shapes)))
        if isinstance(valid, str):
            problems.append(valid)
            continue
        if valid is None:
            continue
        for run in kept:
            if run is not None and name in run:
                run[name] = run[name][valid]
        left_out[name] = int(valid.size - valid.sum())
    return kept, left_out, tuple(problems)


def case_tolerances(
    config: GateConfig, feeds: Mapping[str, np.ndarray], *, runtime_only: bool
) -> tuple[dict[str, Tolerance], bool]:
    """Each output's tolerance on the case with ``feeds``, and whether its inputs are inside the
    declared range. Outside it, ``out_of_range_scale`` applies; and where graph fidelity judges
    the graph (``runtime_only``), the fixed bound is at least an fp32 ulp at the inputs'
    magnitude (``at_input_scale``): a kernel's absolute error grows with the values it computes on."""
    in_range = inputs_in_range(config, dict(feeds))
    tolerances = {name: config.tolerance_for(name) for name in config.outputs}
    if in_range:
        return tolerances, True
    largest = largest_input(config, feeds) if runtime_only else 0.0
    return {name: at_input_scale(for_inputs_outside_range(tol), largest) for name, tol in tolerances.items()}, False


def float64_can_be_spared(runs: CaseRuns, config: GateConfig, *, runtime_only: bool = True) -> bool:
    """Whether ``runs`` (without a float64 run) is judged exactly as it would be with one, every
    output's finding included (``float64_cannot_matter``): by ``judge_runtime`` where graph
    fidelity judges the graph (``runtime_only``), else by the whole rule. A tolerance that blocks
    on PyTorch's own instability needs float64 on every case."""
    feeds = runs.feeds
    tolerances, _ = case_tolerances(config, feeds, runtime_only=runtime_only)
    (actual, expected), _, problems = keep_valid_positions(config, feeds, runs.onnxruntime, runs.torch32)
    if problems or actual is None or expected is None:
        return False
    for name in config.outputs:
        tolerance = tolerances[name]
        if tolerance.block_on_unstable or name not in actual or name not in expected:
            return False
        if not float64_cannot_matter(actual[name], expected[name], tolerance, runtime_only=runtime_only):
            return False
    return True


def degenerate_inputs(feeds: Mapping[str, np.ndarray]) -> str:
    """"constant inputs" (or "all-zero inputs") when every input holds a single value, else "":
    the inputs on which normalisations see zero variance and PyTorch can be exact by luck."""
    import numpy as np

    arrays = [values for values in feeds.values() if values.size]
    if not arrays or any(not np.all(values == values.flat[0]) for values in arrays):
        return ""
    return "all-zero inputs" if all(not np.any(values) for values in arrays) else "constant inputs"


def check_parity(
    case: InputCase,
    config: GateConfig,
    torch_runner: Runner,
    ort_runner: Runner,
    *,
    fp64_reference: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray] | None] | None = None,
    timing: Stopwatch | None = None,
    runtime_only: bool = False,
    operators: Mapping[str, str] | None = None,
) -> ParityResult:
    """ONNX Runtime against PyTorch fp32 (and ``fp64_reference``'s float64 outputs, when it gives
    any) on one input case: ``judge_parity`` on the case's runs."""
    runs = run_case(case, config, torch_runner, ort_runner, fp64_reference=fp64_reference, timing=timing)
    return judge_parity(runs, config, runtime_only=runtime_only, operators=operators)


def judge_parity(
    runs: CaseRuns, config: GateConfig, *, runtime_only: bool = False, operators: Mapping[str, str] | None = None
) -> ParityResult:
    """The parity rule on one case's runs, on the valid positions of padded outputs. Outside the
    declared input range the tolerances relax. ``runtime_only`` where graph fidelity judges the
    graph (``judge_runtime``)."""
    feeds = runs.feeds
    (actual, expected, exact), left_out, problems = keep_valid_positions(
        config, feeds, runs.onnxruntime, runs.torch32, runs.torch64
    )
    assert actual is not None and expected is not None
    noise_checked = {name for name in config.outputs if config.tolerance_for(name).noise_factor}
    tolerances, in_range = case_tolerances(config, feeds, runtime_only=runtime_only)
    result = compare_outputs(
        actual, expected, config, candidate=runs.candidate, reference=runs.reference,
        context=describe_case(runs.case), tolerances=tolerances, in_range=in_range,
        degenerate=degenerate_inputs(feeds), runtime_only=runtime_only, operators=operators,
        # An output whose noise check is off is judged by the fixed bound alone, on every value.
        exact={name: values for name, values in (exact or {}).items() if name in noise_checked},
    )  # fmt: skip
    compared = {name: int(values.size) for name, values in expected.items()}
    return replace(result, failures=result.failures + problems, left_out=left_out, compared=compared)
