"""What the runtimes gave on one input case, recorded once as a value: the feeds, PyTorch fp32,
PyTorch float64 (the noise floor's reference) and ONNX Runtime. The parity rule and the bias check
judge this value instead of each running the model (Polygraphy's ``RunResults`` and torch.onnx's
``VerificationInfo`` are the models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig
    from harness.core.inputs import InputCase
    from harness.core.timing import Stopwatch
    from harness.runtime.runners import Runner

Outputs = Mapping[str, "np.ndarray"]


@dataclass(frozen=True)
class CaseRuns:
    case: InputCase
    feeds: Outputs
    torch32: Outputs  # the reference every runtime is compared with
    onnxruntime: Outputs
    torch64: Outputs | None  # None: no float64 run (none asked for, or the model cannot run in it)
    reference: str  # the runners' names, for the messages
    candidate: str


def run_case(
    case: InputCase,
    config: GateConfig,
    torch_runner: Runner,
    ort_runner: Runner,
    *,
    fp64_reference: Callable[[dict[str, np.ndarray]], Outputs | None] | None = None,
    timing: Stopwatch | None = None,
) -> CaseRuns:
    """Run ``case`` once on PyTorch fp32, ONNX Runtime and (where ``fp64_reference`` gives one)
    PyTorch float64; ``timing`` adds each runtime's time to its part."""

    def call(part: str, function: Callable[..., Any], *args: Any) -> Any:
        return timing.call(part, function, *args) if timing is not None else function(*args)

    feeds = case.materialize(config)
    expected = call("torch_fp32", torch_runner.infer, feeds)
    actual = call("onnxruntime", ort_runner.infer, feeds)
    exact = call("torch_fp64", fp64_reference, feeds) if fp64_reference is not None else None
    return CaseRuns(case, feeds, expected, actual, exact, torch_runner.name, ort_runner.name)
