"""Record real benchmark runs for the `compare` statistics tests (tests/data/bench/).

    .venv/bin/python tools/record_bench_samples.py tests/data/bench

Builds the tests' small LocalizationNet (size "test"), exports it once with the gate's exporter,
and measures it the way benchmarks/test_cpu_latency.py does (warm-up, then timed rounds; PyTorch
and ONNX Runtime on the same inputs and threads) three times, writing each run as the gate writes
benchmark.json's "onnx_gate" section:

- base.json:  ONNX Runtime with full graph optimisation (the gate's setting);
- noise.json: the same artifact and settings again: pure noise against base.json;
- slow.json:  the same artifact with ONNX Runtime's graph optimisation off (ORT_DISABLE_ALL): a
  real slowdown of the ONNX Runtime path, which the speedup ratio must show as a regression.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from harness.bench.measure import LatencyRecord, time_calls
from harness.report.bench import gate_bench_section
from harness.core.config import load
from harness.runtime.export import example_feeds
from harness.gate.session import BenchPlan, GateSession

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
ROUNDS = 60
RUNS = {"base": "ORT_ENABLE_ALL", "noise": "ORT_ENABLE_ALL", "slow": "ORT_DISABLE_ALL"}


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
        for backend, function in functions.items():
            time_calls(function, gate.bench_plan.warmup_rounds)
            times = time_calls(function, ROUNDS)
            gate.record_latency(LatencyRecord.from_times(backend, "cpu", batch, times, peak_flops=gate.sgemm_peak))
    return {"benchmarks": [], "onnx_gate": gate_bench_section(gate)}


def main(out_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="onnx-gate-samples-") as scratch:
        config_path = Path(scratch) / "gate.toml"
        config_path.write_text(CONFIG, encoding="utf-8")
        config = load(invocation_dir=Path(scratch), config_file=config_path, overrides={})
        gate = GateSession(config, work_dir=Path(scratch) / "work")
        gate.bench_plan = BenchPlan.full()
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
