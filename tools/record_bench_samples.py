"""Record real benchmark runs for the `compare` statistics tests (tests/data/bench/).

    .venv/bin/python tools/record_bench_samples.py tests/data/bench

Builds the tests' small LocalizationNet (size "test"), exports it once with the gate's exporter,
and measures it the way benchmarks/test_cpu_latency.py does (warm-up, then PyTorch and ONNX Runtime
interleaved in one loop on the same inputs and threads) four times, writing each run as the gate
writes benchmark.json's "onnx_gate" section:

- base.json:  ONNX Runtime with full graph optimisation (the gate's setting);
- noise.json: the same artifact and settings again: pure noise against base.json;
- slow.json:  the same artifact with ONNX Runtime's graph optimisation off (ORT_DISABLE_ALL): a
  real slowdown of the ONNX Runtime path, which the speedup ratio must show as a regression;
- burst.json: base's settings again, with two other processes busy on every core for part of the
  measurement: a neighbour's job on a shared runner, which the ratios must not show as a change.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from harness.bench.interleave import BLOCK, measure_interleaved
from harness.bench.load import LoadSnapshot, load_between
from harness.bench.measure import LatencyRecord, time_calls
from harness.report.bench import gate_bench_section
from harness.core.config import load
from harness.runtime.export import example_feeds
from harness.gate.session import GateSession

CONFIG = """
model = "harness.models:localization_net"
model_kwargs = { size = "test" }
exporter = "torchscript"
outputs = ["positions", "uncertainties"]

[[inputs]]
name = "mel_spectrogram"
shape = ["batch", 3, 128, 32]
dtype = "float32"
range = [-4.0, 4.0]
dims = { batch = [1, 4] }

[bench]
batches = [1, 4]
threads = 1  # one thread: on a shared 2-core machine a second thread waits on whoever holds the other core
"""
ROUNDS = 600  # timed calls per backend and batch size
RUNS = {"base": "ORT_ENABLE_ALL", "noise": "ORT_ENABLE_ALL", "slow": "ORT_DISABLE_ALL", "burst": "ORT_ENABLE_ALL"}
BURST_AFTER_S, BURST_S = 0.5, 1.0  # of each batch size's measurement, which takes about 2 s


def _spin(go: Any, seconds: float) -> None:
    go.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


@contextmanager
def cpu_burst(active: bool) -> Iterator[None]:
    """One busy process per core for BURST_S seconds, from BURST_AFTER_S into what the block measures."""
    if not active:
        yield
        return
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    workers = [context.Process(target=_spin, args=(go, BURST_S)) for _ in range(len(os.sched_getaffinity(0)))]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # the workers' interpreters start before the measurement does
    timer = threading.Timer(BURST_AFTER_S, go.set)
    timer.start()
    try:
        yield
    finally:
        timer.join()
        for worker in workers:
            worker.join()


def record(gate: GateSession, run_id: str, optimisation: str) -> dict:
    import torch

    torch.set_num_threads(gate.bench_threads)
    gate.run_id = run_id
    gate.latency = []
    ort = gate.new_ort_runner(threads=gate.bench_threads, graph_optimization=optimisation)
    gate.__dict__["bench_ort_runner"] = ort  # the section reports this runner's optimisation level
    for batch in gate.config.bench.batches:
        feeds = example_feeds(gate.config, {**gate.config.trace_sizes, gate.batch_dim: batch}, seed=batch)
        tensors = gate.torch_runner.to_tensors(feeds)
        functions = {"pytorch": lambda: gate.torch_runner.forward(tensors), "onnxruntime": lambda: ort.session.run(None, feeds)}
        for function in functions.values():
            time_calls(function, gate.bench_plan.warmup_rounds)
        before = LoadSnapshot.now()
        with cpu_burst(run_id.endswith("-burst")):
            measured = measure_interleaved(functions, ROUNDS // BLOCK)
        load = load_between(before, LoadSnapshot.now())
        for backend, times in measured.items():
            gate.record_latency(LatencyRecord.from_times(
                backend, "cpu", batch, times, peak_flops=gate.sgemm_peak,
                extra={"interleaved_with": list(functions), "block": BLOCK, "load": load},
            ))
    return {"benchmarks": [], "onnx_gate": gate_bench_section(gate)}


def main(out_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="onnx-gate-samples-") as scratch:
        config_path = Path(scratch) / "gate.toml"
        config_path.write_text(CONFIG, encoding="utf-8")
        config = load(invocation_dir=Path(scratch), config_file=config_path, overrides={})
        gate = GateSession(config, work_dir=Path(scratch) / "work")
        gate.prepare()
        if gate.artifact is None:
            raise SystemExit(f"export failed: {gate.artifact_error}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, optimisation in RUNS.items():
            document = record(gate, f"20261130T0000{list(RUNS).index(name)}0Z-{name}", optimisation)
            (out_dir / f"{name}.json").write_text(json.dumps(document) + "\n", encoding="utf-8")
            ratios = document["onnx_gate"]["speedups"]["cpu"]
            print(f"{name}: ORT {optimisation}, speedups {ratios}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
