"""Several functions timed in one interleaved loop, so that load from other processes falls on all
of them alike and their ratios hold within the run.

Each round gives each function a short block: one untimed call that brings its runtime back to a
warm state (caches, allocator, thread pool), then ``block`` timed calls. The order of the
functions reverses every round, so none always runs right after the same other one. Strict
one-call alternation measured PyTorch eager up to 2x slower than alone on a 2-core machine,
while ONNX Runtime was not: the alternation itself, not the model, set the number.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from harness.bench.measure import time_calls

BLOCK = 3


def measure_interleaved(
    functions: Mapping[str, Callable[[], Any]], rounds: int, *, block: int = BLOCK
) -> dict[str, list[float]]:
    """Per function, ``rounds * block`` call times in seconds, in the order they were taken:
    the k-th time of every function comes from the same round."""
    names = list(functions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            functions[name]()  # untimed: back to a warm state after the others ran
            times[name] += time_calls(functions[name], block)
    return times
