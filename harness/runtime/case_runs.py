"""What the runtimes gave on one input case, recorded once as a value that every check judges
instead of running the model itself (Polygraphy's ``RunResults`` and torch.onnx's
``VerificationInfo`` are the models):

- parity and the bias check: the feeds, PyTorch fp32, ONNX Runtime, and PyTorch float64 (the
  noise floor's reference) where it is run (``run_case``);
- graph fidelity: PyTorch fp32 and float64, the exported graph evaluated in float64, and the
  float inputs of PyTorch's argmax/argmin/topk calls (``run_case_in_float64``);
- module parity and `onnx-gate debug`: PyTorch fp32 and float64 with every named module's inputs
  and outputs (``modules``, made by harness/align/capture.py's ``capture_case``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from harness.runtime.lanes import Lanes

if TYPE_CHECKING:
    import numpy as np

    from harness.core.config import GateConfig
    from harness.core.inputs import InputCase
    from harness.core.timing import Stopwatch
    from harness.runtime.graph64 import Evaluation, Graph64
    from harness.runtime.runners import Runner, TorchRunner

Outputs = Mapping[str, "np.ndarray"]


@dataclass(frozen=True)
class CaseRuns:
    case: InputCase | None  # None: feeds a user handed over (`onnx-gate debug --inputs`)
    feeds: Outputs
    torch32: Outputs  # the reference every runtime is compared with
    onnxruntime: Outputs | None  # None: ONNX Runtime was not asked (fidelity, module parity)
    torch64: Outputs | None  # None: no float64 run (none asked for, or the model cannot run in it)
    reference: str  # the runners' names, for the messages
    candidate: str
    graph64: Evaluation | None = None  # the exported graph in float64: its outputs and asked-for values
    # The float input of each argmax/argmin/topk call PyTorch made, in call order (fp32, float64).
    discrete32: tuple[np.ndarray, ...] = ()
    discrete64: tuple[np.ndarray, ...] = ()
    # Every named module's inputs and outputs in fp32 and float64: an align.capture.Capture (typed
    # loosely: that layer sits above this one).
    modules: Any = None


def run_case(
    case: InputCase,
    config: GateConfig,
    torch_runner: Runner,
    ort_runner: Runner,
    *,
    fp64_reference: Callable[[dict[str, np.ndarray]], Outputs | None] | None = None,
    timing: Stopwatch | None = None,
    lanes: Lanes | None = None,
    feeds: Outputs | None = None,
) -> CaseRuns:
    """Run ``case`` once on PyTorch fp32, ONNX Runtime and (where ``fp64_reference`` gives one)
    PyTorch float64; ``timing`` adds each runtime's time to its part. With ``lanes`` (two),
    ONNX Runtime runs beside PyTorch fp32 and its part holds only the wait for it: the wall time
    it added. The float64 run comes after, on every core. ``feeds``: the case's, already built."""

    def call(part: str, function: Callable[..., Any], *args: Any) -> Any:
        return timing.call(part, function, *args) if timing is not None else function(*args)

    feeds = case.materialize(config) if feeds is None else feeds
    with (lanes or Lanes.sequential()).beside(ort_runner.infer, feeds) as onnxruntime:
        expected = call("torch_fp32", torch_runner.infer, feeds)
        actual = call("onnxruntime", onnxruntime.result)
    exact = call("torch_fp64", fp64_reference, feeds) if fp64_reference is not None else None
    return CaseRuns(case, feeds, expected, actual, exact, torch_runner.name, ort_runner.name)


def run_case_in_float64(
    case: InputCase,
    config: GateConfig,
    runner32: TorchRunner,
    runner64: TorchRunner,
    graph: Graph64,
    values: Sequence[str] = (),
) -> CaseRuns:
    """Run ``case`` once on PyTorch fp32 and float64 and on the graph in float64, with the graph's
    ``values`` (the float inputs of its ArgMax/ArgMin/TopK nodes) and, where there are any,
    PyTorch's matching argmax/argmin/topk inputs."""
    feeds = case.materialize(config)
    # Recording runs a torch function mode (~15% of a pass): only where there are discrete ops.
    if values:
        exact, discrete64 = runner64.infer_recording_discrete(feeds)
        expected, discrete32 = runner32.infer_recording_discrete(feeds)
    else:
        exact, discrete64, expected, discrete32 = runner64.infer(feeds), [], runner32.infer(feeds), []
    return CaseRuns(
        case, feeds, expected, None, exact, runner32.name, "graph-float64", graph64=graph.infer(feeds, list(values)),
        discrete32=tuple(discrete32), discrete64=tuple(discrete64),
    )  # fmt: skip
