#!/usr/bin/env bash
# Fill the GPU table in one call, on a machine with an NVIDIA GPU:
#
#     bash tools/gpu_smoke.sh            # from anywhere; PYTHON=/path/to/python to pick one
#
# It checks the environment first and says what is missing (a CUDA build of torch, onnxruntime-gpu,
# the test dependencies), then runs the gate (conformance + benchmarks) on the default model with
# tools/gpu_smoke.toml, and prints the latency section of summary.md: PyTorch eager, PyTorch CUDA
# graph, ONNX Runtime CUDA and ONNX Runtime CUDA graph, their ratios in words, the GPU efficiency.
# Reports go to $OUT/gpu-smoke when OUT is set (the device tool brings $OUT back), else
# reports/gpu-smoke. GPU_SMOKE_PATHS="benchmarks" skips the conformance checks (faster; the
# verdict then says they did not run). GPU_SMOKE_FORCE=1 runs the gate even where the GPU path
# cannot run (the GPU tests then skip, saying why): a dry run of this script on a CPU machine.
# Exit status: pytest's, or 3 when the GPU path cannot run.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
REPORTS="${OUT:-$ROOT/reports}/gpu-smoke"
cd "$ROOT" || exit 2

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"

echo "== Python environment ($PY)"
PYTHONPATH="$ROOT" "$PY" - <<'PYEOF'
import importlib, sys
print("python", sys.version.split()[0])
missing = []
for name in ("numpy", "onnx", "onnxscript", "pytest", "pytest_benchmark", "hypothesis", "matplotlib"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError:
        missing.append(name)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0))
except ImportError:
    missing.append("torch")
try:
    import onnxruntime as ort
    print("onnxruntime", ort.__version__, "providers", ort.get_available_providers())
except ImportError:
    missing.append("onnxruntime-gpu")
from harness import gpu
reason = gpu.unavailable_reason() if "torch" not in missing and "onnxruntime-gpu" not in missing else None
if missing or reason:
    print("GPU smoke cannot run:", ", ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "", reason or ""])))
    print("Needs: a CUDA build of torch, onnxruntime-gpu (instead of onnxruntime), and the packages above.")
    sys.exit(3)
PYEOF
preflight=$?
if [ "$preflight" -ne 0 ] && [ "${GPU_SMOKE_FORCE:-0}" != 1 ]; then
    exit "$preflight"
fi

echo "== gate run (reports in $REPORTS)"
# shellcheck disable=SC2086  # GPU_SMOKE_PATHS is a list of paths
PYTHONPATH="$ROOT" "$PY" -m pytest ${GPU_SMOKE_PATHS:-conformance benchmarks} -p no:cacheprovider -rs \
    --gate-config tools/gpu_smoke.toml --gate-report-dir "$REPORTS" --hypothesis-profile=smoke \
    --benchmark-columns=min,median,max,rounds
status=$?

SUMMARY="$(ls -td "$REPORTS"/*/ 2>/dev/null | head -1)summary.md"
if [ -f "$SUMMARY" ]; then
    echo "== $SUMMARY"
    head -3 "$SUMMARY"
    sed -n '/^## Latency/,/^!\[latency\]/p' "$SUMMARY"
else
    echo "no summary.md was written under $REPORTS"
fi
exit "$status"
