"""One gate run: the configured model, its ONNX artifact, runners over both, and what the checks
found. Fixtures read from it; reports and publishing consume the same values the tests assert on."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from harness.align.capture import capture_runs
from harness.align.walk import ModuleWalk, run_and_walk, walk_capture
from harness.bench.measure import (
    LatencyRecord,
    activation_bytes,
    count_flops,
    last_level_cache_bytes,
    onnx_weight_bytes,
    read_bandwidth,
    sgemm_peak_flops,
)
from harness.checks.bias import BiasResult, bias_cases, check_bias
from harness.checks.declared import GateCheck, gate_checks
from harness.checks.fidelity import MAX_PARAMETERS, FidelityResult, check_fidelity, fidelity_cases
from harness.checks.latency import BENCH_CHECKS
from harness.checks.module_parity import (
    MAX_INPUT_ELEMENTS,
    check_module_parity,
    check_modules_in_float64,
    module_cases,
)
from harness.checks.parity import float64_can_be_spared, judge_parity
from harness.checks.parity_stats import ParityStats
from harness.checks.rollout import RolloutResult, judge_rollout
from harness.compare.rule import ParityResult
from harness.core.config import GateConfig
from harness.core.errors import ArtifactError, GateError, first_line
from harness.core.failure_budget import FailureBudget
from harness.core.inputs import STRESS_MAGNITUDES, InputCase, describe_case
from harness.core.ledger import Ledger
from harness.core.model_loader import build_model
from harness.core.timing import Stopwatch
from harness.runtime.cache import CacheOutcome, cached_export
from harness.runtime.case_runs import CaseRuns, run_case, run_case_in_float64
from harness.runtime.export import ArtifactInfo, example_feeds, export_onnx, inspect_onnx, self_contained_copy
from harness.runtime.lanes import LANES_MAX_BYTES, Lanes
from harness.runtime.rollout import RolloutCase, record_rollout
from harness.runtime.runners import NO_SPINNING, OrtRunner, TorchRunner, default_threads, output_name_problem
from harness.runtime.runs_memo import RunsMemo, feeds_key

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from torch import nn

    from harness.checks.module_parity import ModuleParityResult
    from harness.core.baseline_spec import BaselineSpec
    from harness.runtime.graph64 import Graph64


# The float64 graph is kept from the fidelity check for module parity below this many bytes of
# float32 weights (it holds them twice in float64); above, each check builds its own.
KEEP_GRAPH64_BYTES = 256 << 20
# Parity cases whose float64 run could change nothing still get one, one in this many: the
# report's noise figures and PyTorch's own instability ("unstable" findings) stay measured.
FLOAT64_SAMPLE_EVERY = 8
# The checks do not time ONNX Runtime, so their session does not spin (NO_SPINNING); the
# benchmarks' has ONNX Runtime's default, and shares the checks' session only above this size.
SHARED_SESSION_BYTES = 512 << 20


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def sampled_for_float64(case: InputCase) -> bool:
    """About one case in FLOAT64_SAMPLE_EVERY, chosen by what the case is rather than by when it
    runs, so that a gate spread over xdist workers samples the same cases as one process does."""
    identity = json.dumps({**vars(case), "sizes": dict(case.sizes), "note": ""}, sort_keys=True, default=str)
    return int(hashlib.sha256(identity.encode()).hexdigest()[:8], 16) % FLOAT64_SAMPLE_EVERY == 0


@dataclass(frozen=True)
class BenchPlan:
    """How long to measure: explicit warm-up, then rounds sized to a time budget per benchmark."""

    warmup_rounds: int
    budget_s: float
    min_rounds: int
    max_rounds: int

    @classmethod
    def full(cls) -> BenchPlan:
        return cls(warmup_rounds=5, budget_s=3.0, min_rounds=15, max_rounds=300)

    @classmethod
    def quick(cls) -> BenchPlan:
        return cls(warmup_rounds=2, budget_s=0.5, min_rounds=5, max_rounds=50)


@dataclass(frozen=True)
class RunOptions:
    """How this run was asked to go, read once from the command line or the Python API."""

    bench_plan: BenchPlan = field(default_factory=BenchPlan.full)  # --gate-bench-quick: BenchPlan.quick()
    baseline_spec: BaselineSpec | None = None  # --gate-baseline
    use_export_cache: bool = True  # --gate-no-cache turns it off
    publish_tags: Mapping[str, str] = field(default_factory=dict)  # extra tags on the registered version
    source_run_id: str | None = None  # the caller's training run (MLflow), the version's source run


@dataclass(frozen=True)
class NotRun:
    """A check that could not run here, and why (e.g. the GPU checks on a machine without CUDA)."""

    reason: str


class GateSession:
    """What is under test (config, model, artifact, runners) and what the checks recorded.

    The first part is set here only: by the constructor, ``prepare`` or, on an xdist worker,
    ``follow_controller``. The checks add their results through ``record``, ``record_latency``
    and the parity statistics' own methods; the session's end reads them once into a GateOutcome.
    """

    def __init__(
        self,
        config: GateConfig,
        *,
        work_dir: Path | None = None,
        run_id: str | None = None,
        model: nn.Module | None = None,
        options: RunOptions | None = None,
        candidate_set: Callable[[GateSession], Any] | None = None,
    ) -> None:
        self.config = config
        # The candidates package sits above the session and builds on it: its CandidateSet is
        # handed down (by the plugin) rather than imported here.
        self._candidate_set = candidate_set
        self.options = options or RunOptions()
        self.work_dir = work_dir
        self.run_id = run_id or new_run_id()
        self.report_dir = config.report_dir / self.run_id
        self.started = time.time()
        self.timing = Stopwatch()
        self.ledger = Ledger(check.name for check in gate_checks() if check.listed and check.own)
        self.artifact: ArtifactInfo | None = None
        self.artifact_error: str | None = None
        self.artifact_cache: CacheOutcome | None = None
        self.parity = ParityStats(config.outputs)  # what the parity checks found, for every report
        self.failure_budget = FailureBudget()  # what a failing parity test may spend after its first failure
        self._model = model
        self.model_given = model is not None  # by the Python API, rather than built from the config
        # Benchmarks (filled only when the session runs benchmarks/).
        self.latency: list[LatencyRecord] = []
        self.decode_latency: list[LatencyRecord] = []  # per-token benchmarks of a stateful model
        self._results: dict[str, Any] = {}  # by check name: typed results beyond pass/fail
        self._flops: dict[int, float] = {}
        self._activation_bytes: dict[int, float] = {}
        self._weight_bytes: dict[str, float] = {}
        self._kept_graph64: Graph64 | None = None  # shared by fidelity and module parity when small
        self._graph64_problem: str | None = None  # why the reference evaluator refused this file
        self._parity_runs = RunsMemo()  # a repeated parity case is judged from its earlier runs
        # Module parity's walks of the cases graph fidelity ran for it, by (case, source root).
        self._module_walks: dict[tuple[str, Path], ModuleWalk] = {}

    @property
    def bench_plan(self) -> BenchPlan:
        return self.options.bench_plan

    @property
    def baseline_spec(self) -> BaselineSpec | None:
        return self.options.baseline_spec

    # --- what the checks recorded ------------------------------------------------------------

    def record(self, check: str, result: Any) -> None:
        """A check's typed result (a BudgetResult, a ParityResult, a report section, NotRun)."""
        self._results[check] = result

    def recorded(self, check: str) -> Any:
        """What ``check`` recorded, or None."""
        return self._results.get(check)

    @property
    def benchmarks_collected(self) -> bool:
        """Whether the session runs the benchmarks (on the xdist controller: any worker collected them)."""
        return any(self.ledger.records[c].collected for c in BENCH_CHECKS if c in self.ledger.records)

    def measured_flops(self) -> dict[int, float]:
        """The model's FLOPs per call, per batch size, as far as the benchmarks counted them."""
        return dict(sorted(self._flops.items()))

    # --- what is under test ----------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = build_model(
                self.config.model, self.config.model_kwargs, self.config.checkpoint, self.config.search_dirs
            )
        return self._model

    def prepare(self, work_dir: Path | None = None) -> None:
        """Build the model (errors propagate: the gate cannot start) and produce the artifact in
        ``work_dir`` (errors are recorded: a defective ONNX fails the gate's artifact check, it
        does not crash)."""
        if work_dir is not None:
            self.work_dir = work_dir
        model = self.model
        try:
            if self.work_dir is None:
                raise ArtifactError("no working folder to export into")
            if self.config.onnx is not None:
                path, inlined = self_contained_copy(self.config.onnx, self.work_dir)
                self.artifact = inspect_onnx(path, "given", inlined_data_files=inlined)
            else:
                self.work_dir.mkdir(parents=True, exist_ok=True)
                path = self.work_dir / "model.onnx"
                seconds, self.artifact_cache = cached_export(
                    model, self.config, path, export_onnx, use_cache=self.options.use_export_cache
                )
                self.artifact = inspect_onnx(path, self.config.exporter, seconds)
        except ArtifactError as exc:
            self.artifact_error = str(exc)

    def follow_controller(self, run_id: str, report_dir: Path) -> None:
        """On an xdist worker: the controller's run id and report folder."""
        self.run_id, self.report_dir = run_id, report_dir

    def use_artifact(self, artifact: ArtifactInfo | None, error: str | None = None) -> None:
        """On an xdist worker: the artifact the controller made (or why the worker cannot use it)."""
        self.artifact, self.artifact_error = artifact, error

    @cached_property
    def output_name_problem(self) -> str | None:
        """Whether the model's own output names (if it names them) hold the config's outputs."""
        import torch

        tensors = self.torch_runner.to_tensors(example_feeds(self.config, self.config.trace_sizes))
        with torch.inference_mode():
            return output_name_problem(self.model(*tensors), self.config.outputs)

    @property
    def required_checks(self) -> tuple[str, ...]:
        """The checks this gate's verdict needs, each as its declaration says (harness/checks/declared.py)."""
        return tuple(check.name for check in self.session_checks() if check.required(self))

    def session_checks(self) -> list[GateCheck]:
        """The gate's own checks, and those of your own that this session collected a test of."""
        return [check for check in gate_checks() if check.own or check.name in self.ledger.records]

    @property
    def release_checks(self) -> tuple[str, ...]:
        """The checks a release needs: the required ones and, always, those declared for_release."""
        release = tuple(check.name for check in self.session_checks() if check.for_release)
        return tuple(name for name in self.required_checks if name not in release) + release

    @property
    def batch_dim(self) -> str | None:
        """The batch dimension: by convention the first symbolic axis of the first input."""
        for spec in self.config.inputs:
            if spec.symbolic_dims:
                return spec.symbolic_dims[0]
        return None

    def sizes_at(self, batch: int | None) -> dict[str, int]:
        """The trace sizes of every symbolic dimension, with the batch dimension at ``batch``."""
        return {**self.config.trace_sizes, **({self.batch_dim: batch} if self.batch_dim and batch is not None else {})}

    def pinned_batches(self) -> list[int]:
        """Batch sizes parity always covers: 1, 2 and one besides the trace size."""
        if self.batch_dim is None:
            return []
        dim = self.config.dims[self.batch_dim]
        wanted = {1, 2, dim.trace + 1 if dim.trace + 1 <= dim.high else dim.low}
        return sorted(s for s in wanted if dim.low <= s <= dim.high)

    # --- runners -------------------------------------------------------------------------------

    def io_names(self) -> tuple[list[str], list[str]]:
        """The config's input and output names, as the runners take them."""
        return [spec.name for spec in self.config.inputs], list(self.config.outputs)

    @cached_property
    def torch_runner(self) -> TorchRunner:
        return TorchRunner(self.model, *self.io_names())

    @cached_property
    def fp64_runner(self) -> TorchRunner | None:
        """PyTorch in float64, the yardstick for fp32 noise; None when the model cannot run so."""
        try:
            return TorchRunner(self.model, *self.io_names(), dtype="float64")
        except Exception as exc:  # a deepcopy or .double() the model does not support
            self._fp64_failed(exc)
            return None

    def _fp64_failed(self, exc: Exception) -> None:
        import warnings

        first = first_line(exc)
        self.parity.fp64_unavailable = f"{type(exc).__name__}: {first}"
        warnings.warn(
            f"onnx-gate: the model cannot run in float64 ({self.parity.fp64_unavailable}); parity falls back "
            "to the fixed atol/rtol/mae tolerance without the noise-floor check",
            stacklevel=2,
        )

    def _noise_factors(self) -> dict[str, float]:
        return {name: self.config.tolerance_for(name).noise_factor for name in self.config.outputs}

    def fp64_reference(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """PyTorch's outputs in float64 on ``feeds`` (timed into the parity statistics), or None
        where no output asks for the noise floor or the model cannot run in float64."""
        if not any(self._noise_factors().values()) or self.parity.fp64_unavailable:
            return None
        runner = self.fp64_runner
        if runner is None:
            return None
        started = time.perf_counter()
        try:
            return runner.infer(feeds)
        except Exception as exc:  # e.g. an op with no double kernel
            self._fp64_failed(exc)
            return None
        finally:
            self.parity.fp64_seconds += time.perf_counter() - started

    @cached_property
    def ort_runner(self) -> OrtRunner:
        return self.new_ort_runner(config_entries=NO_SPINNING)

    @property
    def lane_threads(self) -> int:
        """Each lane's threads where parity runs ONNX Runtime beside PyTorch on two lanes of half
        the cores (harness/runtime/lanes.py); 0 for one lane: on a single core, or for an
        artifact too large to load twice."""
        threads = default_threads()
        if threads < 2 or self.artifact is None or self.artifact.size_bytes > LANES_MAX_BYTES:
            return 0
        return threads // 2

    @cached_property
    def lanes(self) -> Lanes:
        return Lanes(self.lane_threads)

    @cached_property
    def lane_ort_runner(self) -> OrtRunner:
        """The ONNX Runtime session parity runs beside PyTorch, on one lane's threads; the gate's
        own session where there is one lane. The other checks (determinism, batch consistency,
        invariants, dynamic dimensions) run the gate's own session on every core, so both thread
        counts are run."""
        if not self.lanes.parallel:
            return self.ort_runner
        return self.new_ort_runner(threads=self.lanes.threads, config_entries=NO_SPINNING)

    def close_lanes(self) -> None:
        """End the background lane's thread once the checks are done: a training script that ran
        the gate (export_and_register_model) goes on in the same process."""
        lanes = self.__dict__.pop("lanes", None)
        if lanes is not None:
            lanes.close()

    def release_runners(self) -> None:
        """Drop the ONNX Runtime sessions and the float64 model copy once the checks are done, so
        that publishing (which loads the model once more) does not stack on top of them."""
        import gc

        for name in ("fp64_runner", "ort_runner", "lane_ort_runner", "bench_ort_runner"):
            self.__dict__.pop(name, None)
        self._parity_runs.clear()
        self.close_lanes()
        if self.candidates_in_use:
            self.candidates.release()
        gc.collect()

    def renew_ort_runner(self) -> OrtRunner:
        """Release the ONNX Runtime session, then load a fresh one in its place; returns it."""
        import gc

        old = self.__dict__.pop("ort_runner", None)
        self._parity_runs.clear()
        if self.__dict__.get("bench_ort_runner") is old:
            self.__dict__.pop("bench_ort_runner", None)
        del old
        gc.collect()
        return self.ort_runner

    def release_model(self) -> None:
        """Drop the PyTorch model once nothing needs it (publishing, for its last step, needs only
        the ONNX file): for a model of GBs that is GBs less while the file is serialised for MLflow.
        A later use builds it again from the config."""
        import gc

        self.__dict__.pop("torch_runner", None)
        self._parity_runs.clear()
        self._model = None
        gc.collect()

    def new_ort_runner(self, **options: Any) -> OrtRunner:
        if self.artifact is None:
            raise ArtifactError(self.artifact_error or "no ONNX artifact")
        return OrtRunner(self.artifact.path, *self.io_names(), **options)

    # --- benchmarks ----------------------------------------------------------------------------

    @cached_property
    def bench_threads(self) -> int:
        return self.config.bench.threads or default_threads()

    @cached_property
    def bench_ort_runner(self) -> OrtRunner:
        # Its own session, which spins as ONNX Runtime does by default (the checks' does not). For
        # a large artifact the checks' session when its threads are the same: a second one would
        # hold GBs of weights twice, for a model whose runs are far longer than a spin.
        assert self.artifact is not None
        if self.artifact.size_bytes > SHARED_SESSION_BYTES and self.ort_runner.threads == self.bench_threads:
            return self.ort_runner
        return self.new_ort_runner(threads=self.bench_threads)

    @cached_property
    def sgemm_peak(self) -> float:
        return sgemm_peak_flops(self.bench_threads)

    @cached_property
    def bandwidth(self) -> float:
        """Streaming read bandwidth with the benchmark's threads, measured once in this session."""
        return read_bandwidth(self.bench_threads)

    def _bench_tensors(self, batch: int) -> list[Any]:
        sizes = self.sizes_at(batch)
        return self.torch_runner.to_tensors(example_feeds(self.config, sizes))

    def flops_per_call(self, batch: int) -> float:
        if batch not in self._flops:
            self._flops[batch] = count_flops(self.model, self._bench_tensors(batch))
        return self._flops[batch]

    def bytes_per_call(self, batch: int, onnx_path: Path | None = None) -> float:
        """Bytes one call must move: the weights as stored (the ONNX file's initializers, or the
        PyTorch model's parameters and buffers without ``onnx_path``) plus the activations that
        do not fit the last-level cache, estimated from the PyTorch model in fp32."""
        key = str(onnx_path) if onnx_path is not None else "pytorch"
        if key not in self._weight_bytes:
            if onnx_path is not None:
                self._weight_bytes[key] = float(onnx_weight_bytes(onnx_path))
            else:
                tensors = [*self.model.parameters(), *self.model.buffers()]
                self._weight_bytes[key] = float(sum(t.nbytes for t in tensors))
        if batch not in self._activation_bytes:
            cache = last_level_cache_bytes()
            self._activation_bytes[batch] = float(activation_bytes(self.model, self._bench_tensors(batch), cache))
        return self._weight_bytes[key] + self._activation_bytes[batch]

    def measured_bandwidth(self) -> float | None:
        """The read bandwidth, if this session measured it (the benchmarks do, on first use)."""
        return self.__dict__.get("bandwidth")

    @property
    def candidates_in_use(self) -> bool:
        """Whether this session built its candidate set (``candidates``)."""
        return "candidates" in self.__dict__

    @cached_property
    def candidates(self) -> Any:
        """The candidate artifacts ([candidates] in the config): a CandidateSet
        (harness/candidates/session.py), built on first use."""
        if self._candidate_set is None:
            raise GateError("this gate session was made without candidates (GateSession(candidate_set=...))")
        return self._candidate_set(self)

    def record_latency(self, record: LatencyRecord) -> None:
        self.latency = [r for r in self.latency if r.key != record.key] + [record]

    # --- parity ----------------------------------------------------------------------------------

    def check_parity(self, case: InputCase) -> ParityResult:
        """The parity check on ``case``, its statistics recorded for the reports. Inside a Hypothesis
        test, the example is rejected once that test has spent its budget after its first failure
        (harness/core/failure_budget.py). (Admitted here, not in the property tests: a derandomized
        profile seeds from the test function's source, and any edit there changes every example.)"""
        from hypothesis import currently_in_test_context

        if currently_in_test_context():
            self.failure_budget.admit(case)
        result = judge_parity(
            self.case_runs(case, spare_float64=True), self.config,
            runtime_only=self.fidelity_judged, operators=self.output_operators,
        )  # fmt: skip
        self.parity.record(result, case)
        spend = self.failure_budget.observe(case, bool(result))
        if spend is not None:
            self.parity.after_first_failure[spend.test] = spend.to_dict()
        return result

    def case_runs(self, case: InputCase, *, spare_float64: bool = False) -> CaseRuns:
        """``case`` run once on PyTorch fp32, ONNX Runtime and (where the noise floor asks for it)
        PyTorch float64, each timed into its part.

        ``spare_float64`` (parity): the float64 run, most of a gate's time, is made only where it
        could change the verdict or a finding (``float64_can_be_spared``, for the rule that judges
        here: the runtime's alone where graph fidelity judges the graph, else the whole rule), and
        on about one case in FLOAT64_SAMPLE_EVERY besides (``sampled_for_float64``), so the
        report's noise figures and PyTorch's own instability are still measured. An input parity
        has run before is answered from its runs (harness/runtime/runs_memo.py)."""
        ort_runner = self.lane_ort_runner
        if not spare_float64:
            return run_case(
                case, self.config, self.torch_runner, ort_runner, fp64_reference=self.fp64_reference,
                timing=self.timing, lanes=self.lanes,
            )  # fmt: skip
        feeds = case.materialize(self.config)
        key = feeds_key(feeds)
        kept = self._parity_runs.get(key)
        if kept is not None:
            if kept.torch64 is None:  # spared again, as it would be: the same runs
                self.parity.fp64_spared += 1
            return replace(kept, case=case)
        runs = run_case(case, self.config, self.torch_runner, ort_runner, timing=self.timing, lanes=self.lanes, feeds=feeds)
        if not sampled_for_float64(case) and float64_can_be_spared(runs, self.config, runtime_only=self.fidelity_judged):
            self.parity.fp64_spared += 1
        else:
            runs = replace(runs, torch64=self.timing.call("torch_fp64", self.fp64_reference, dict(runs.feeds)))
        self._parity_runs.keep(key, runs)
        return runs

    def bias_cases(self) -> list[InputCase]:
        """The bias check's fixed sample (harness/checks/bias.py) at the pinned batch sizes."""
        return bias_cases(self.config, [self.sizes_at(b) for b in self.pinned_batches() or [None]])

    def check_bias(self) -> list[BiasResult] | None:
        """The systematic-error check (harness/checks/bias.py) per float output over
        ``bias_cases``; None without a float64 reference."""
        checked = [name for name, factor in self._noise_factors().items() if factor]
        results = check_bias(self.config, checked, self.bias_cases(), self.case_runs)
        if results is not None:
            self.parity.bias = [str(result) for result in results]
        return results

    def graph64(self) -> Graph64 | str:
        """The exported graph in float64 (harness/runtime/graph64.py), or why the gate cannot evaluate it.
        It holds the weights twice in float64: kept for the next check (fidelity, then module
        parity) only below KEEP_GRAPH64_BYTES of weights, else built per check and dropped."""
        from harness.runtime.graph64 import Graph64, model_constants  # defers onnx
        unavailable = self.fidelity_unavailable
        if unavailable is not None:
            return unavailable
        if self._kept_graph64 is not None:
            return self._kept_graph64
        if self._graph64_problem is not None:  # the same file, refused again: not loaded twice
            return self._graph64_problem
        assert self.artifact is not None
        named = model_constants(self.model)
        graph = Graph64(self.artifact.path, self.config.outputs, named)
        if not graph.available:
            self._graph64_problem = graph.problem or "the graph cannot be evaluated"
            return self._graph64_problem
        if sum(array.nbytes for array in named.values()) <= KEEP_GRAPH64_BYTES:
            self._kept_graph64 = graph
        return graph

    @cached_property
    def graph_outline(self) -> onnx.ModelProto | None:
        """The artifact's graph without its weights' data, read once: the readers that need only
        nodes, names and metadata share it."""
        from harness.runtime.graph64 import graph_without_weights  # defers onnx
        return graph_without_weights(self.artifact.path) if self.artifact is not None else None

    @cached_property
    def output_operators(self) -> dict[str, str]:
        """The op that makes each output, looking through ops that only move values (findings name it)."""
        from harness.runtime.graph64 import producing_operators  # defers onnx
        if self.graph_outline is None:
            return {}
        return producing_operators(self.graph_outline, self.config.outputs)

    @cached_property
    def fidelity_judged(self) -> bool:
        """Whether graph fidelity judges this artifact: the parity check then judges only the
        runtime's precision (harness/checks/parity.py). A graph small enough to keep is built here
        (fidelity and module parity reuse it), so that one the reference evaluator refuses to load,
        its ops all supported, is judged whole by parity instead of by neither check. Above
        KEEP_GRAPH64_BYTES the ops decide: building a graph of GBs twice costs more than that rare case."""
        from harness.runtime.graph64 import unsupported_ops  # defers onnx
        if isinstance(self.fidelity_unavailable, str) or self.graph_outline is None:
            return False
        if unsupported_ops(self.graph_outline):
            return False
        assert self.artifact is not None
        if self.artifact.size_bytes <= KEEP_GRAPH64_BYTES:
            return not isinstance(self.graph64(), str)
        return True

    @property
    def fidelity_unavailable(self) -> str | None:
        """Why graph fidelity cannot judge before the graph is read: no float64 run, too large."""
        if self.artifact is None:
            return self.artifact_error or "no ONNX artifact"
        if self.fp64_runner is None or self.parity.fp64_unavailable:
            return f"the model cannot run in float64 ({self.parity.fp64_unavailable or 'no float64 copy'})"
        parameters = sum(t.numel() for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point())
        if parameters > MAX_PARAMETERS:
            return f"the model has {parameters:,} parameters and buffers, over this check's limit of {MAX_PARAMETERS:,}"
        return None

    def check_fidelity(self, *, root: Path) -> FidelityResult:
        """Graph fidelity (harness/checks/fidelity.py) on its fixed sample of cases."""
        graph = self.graph64()
        if isinstance(graph, str):
            result = FidelityResult(not_judged=graph)
        else:
            assert self.artifact is not None and self.fp64_runner is not None
            cases = fidelity_cases(self.config, self.batch_dim, self.pinned_batches())
            assert self.graph_outline is not None
            result = check_fidelity(
                self.config, graph, self.graph_outline, self.torch_runner, self.fp64_runner, cases, root=root,
                runs_for=self._fidelity_runs(graph, root),
            )  # fmt: skip
        self.parity.fidelity = result.to_dict()
        return result

    def _fidelity_runs(self, graph: Graph64, root: Path) -> Callable[[InputCase, Sequence[str]], CaseRuns]:
        """Graph fidelity's runs of a case, made once for module parity too where that check
        has the same case ahead (``run_and_walk``): its walk is kept for it, without the
        activations."""
        assert self.fp64_runner is not None and self.graph_outline is not None
        runner64, outline = self.fp64_runner, self.graph_outline
        shared = self._module_cases(in_float64=True) if self.config.module_parity else []

        def runs_for(case: InputCase, values: Sequence[str]) -> CaseRuns:
            feeds = case.materialize(self.config) if case in shared else {}
            if not feeds or sum(int(array.size) for array in feeds.values()) > MAX_INPUT_ELEMENTS:
                return run_case_in_float64(case, self.config, self.torch_runner, runner64, graph, values)
            runs, walk = run_and_walk(
                self.config, graph, outline, self.torch_runner, runner64, case, root, values, feeds=feeds
            )  # fmt: skip
            self._module_walks[(describe_case(case), root)] = walk
            return runs

        return runs_for

    def check_rollout(self, rollout: RolloutCase, *, root: Path | None = None, report: bool = False) -> RolloutResult:
        """Rollout parity (harness/checks/rollout.py) on ``rollout``: PyTorch fp32, ONNX Runtime,
        and where the gate has them PyTorch float64 and the graph in float64, each feeding back
        its own state. Where the graph leaves the model, the module where it first departs is
        named, on the float64 run's own inputs at that step (``root``: sources are shown relative
        to it). ``report``: this is the rollout the report shows."""
        graph = self.graph64() if self.fidelity_judged else None
        names = tuple(self.config.outputs)

        def graph_call(feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
            assert graph is not None and not isinstance(graph, str)
            evaluation = graph.infer(feeds)
            return {n: evaluation.values[n] for n in names}, {n: evaluation.storage_effect(n) for n in names}

        fp64 = None if self.parity.fp64_unavailable else self.fp64_runner
        with self.timing.measure("rollout"):
            runs = record_rollout(
                self.config, rollout, self.torch_runner.infer, self.ort_runner.infer,
                torch64=fp64.infer if fp64 is not None else None,
                graph64=graph_call if graph is not None and not isinstance(graph, str) else None,
            )  # fmt: skip
            result = judge_rollout(runs, self.config, operators=self.output_operators)
        if result.fidelity_step is not None and runs.torch64 is not None and graph is not None and not isinstance(graph, str):
            result = replace(result, departure=self._departure(graph, runs.torch64.feeds[result.fidelity_step], root or Path.cwd()))
        if report:
            self.parity.rollout = result.to_dict()
        return result

    def _departure(self, graph: Graph64, feeds: Mapping[str, np.ndarray], root: Path) -> str:
        """Where the graph first departs from the model on ``feeds``, in words ("" if no module does)."""
        assert self.fp64_runner is not None and self.graph_outline is not None
        # The float64 run's state, as the declared dtype: both runs of the walk take the same inputs.
        declared = {spec.name: spec.dtype for spec in self.config.inputs}
        feeds = {name: values.astype(declared[name], copy=False) for name, values in feeds.items()}
        runs = capture_runs(self.torch_runner, self.fp64_runner, feeds, root=root)
        departure = walk_capture(self.config, graph, self.graph_outline, runs, "", self.model, root).departure()
        return str(departure) if departure is not None else ""

    def _module_cases(self, *, in_float64: bool) -> list[InputCase]:
        """Module parity's cases: by the float64 rule, stress inputs as large as graph fidelity's."""
        magnitude = max(STRESS_MAGNITUDES) if in_float64 else 1.0
        return module_cases(self.config, self.batch_dim, self.pinned_batches(), stress_magnitude=magnitude)

    def check_module_parity(self, *, root: Path) -> ModuleParityResult:
        """Module-level parity (harness/checks/module_parity.py) on its fixed sample of cases."""
        if self.artifact is None:
            raise ArtifactError(self.artifact_error or "no ONNX artifact")
        graph = self.graph64() if self.fidelity_judged else None
        in_float64 = graph is not None and not isinstance(graph, str)
        cases = self._module_cases(in_float64=in_float64)
        if in_float64:
            assert self.fp64_runner is not None and self.graph_outline is not None
            walks = {label: walk for (label, walked_root), walk in self._module_walks.items() if walked_root == root}
            result = check_modules_in_float64(
                self.config, graph, self.graph_outline, self.torch_runner, self.fp64_runner, cases, root=root,
                walks=walks,
            )  # fmt: skip
            self._module_walks.clear()
            self._kept_graph64 = None  # the last check that reads it
            self.parity.module_parity = result.to_dict()
            return result
        noise = any(self._noise_factors().values()) and not self.parity.fp64_unavailable
        result = check_module_parity(
            self.config, self.artifact.path, self.torch_runner, self.fp64_runner if noise else None,
            cases, root=root, threads=self.ort_runner.threads, fp64_unavailable=self.parity.fp64_unavailable,
        )  # fmt: skip
        self.parity.module_parity = result.to_dict()
        return result

    def parity_summary(self) -> dict[str, Any]:
        """gate.json's "parity" section."""
        return self.parity.summary({name: self.config.tolerance_for(name) for name in self.config.outputs})

