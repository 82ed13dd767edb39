"""Two lanes: ONNX Runtime beside PyTorch, on half the cores each (harness/runtime/lanes.py)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from harness.runtime.lanes import Lanes


def test_two_lanes_run_the_call_beside_the_block_on_the_lane_threads_then_restore_pytorch_s():
    lanes = Lanes(1)
    before = torch.get_num_threads()
    seen: dict[str, object] = {}

    def background() -> str:
        seen["thread"] = threading.current_thread().name
        return "onnxruntime"

    try:
        with lanes.beside(background) as other:
            seen["torch threads in the block"] = torch.get_num_threads()
            value = other.result()
    finally:
        lanes.close()
    assert value == "onnxruntime" and str(seen["thread"]).startswith("onnx-gate-lane")
    assert seen["torch threads in the block"] == 1 and torch.get_num_threads() == before


def test_one_lane_makes_the_call_only_when_its_value_is_read():
    calls: list[str] = []
    lanes = Lanes.sequential()
    with lanes.beside(calls.append, "onnxruntime") as other:
        calls.append("pytorch")
        other.result()
    assert not lanes.parallel and calls == ["pytorch", "onnxruntime"]


def test_an_error_in_the_background_lane_is_raised_by_its_result():
    lanes = Lanes(1)

    def failing() -> None:
        raise ValueError("ONNX Runtime failed on inputs {'x': (2, 3)}")

    try:
        with pytest.raises(ValueError, match="ONNX Runtime failed"), lanes.beside(failing) as other:
            other.result()
    finally:
        lanes.close()


def test_a_failing_foreground_waits_for_the_background_call_before_its_error_propagates():
    lanes = Lanes(1)
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    try:
        with pytest.raises(RuntimeError, match="PyTorch failed"), lanes.beside(slow):
            raise RuntimeError("PyTorch failed")
        assert finished.is_set()  # nothing left running behind the error
    finally:
        lanes.close()


def test_pair_returns_the_background_value_then_the_foreground_one():
    lanes = Lanes(1)
    try:
        assert lanes.pair(lambda: "background", lambda: "foreground") == ("background", "foreground")
    finally:
        lanes.close()


def _session_with_artifact_of(size_bytes: int):
    import tomllib
    from types import SimpleNamespace

    from harness.core import config as gate_config
    from harness.gate.session import GateSession
    from tests.conftest import HERE
    from tests.test_module_parity import TAGGER

    session = GateSession(gate_config.parse(tomllib.loads(TAGGER), HERE, search_dirs=(HERE,)))
    session.artifact = SimpleNamespace(size_bytes=size_bytes)  # all that decides the lanes
    return session


@pytest.mark.parametrize(
    ("cores", "size_bytes", "threads_per_lane"),
    [(2, 100 << 20, 1), (16, 100 << 20, 8), (5, 100 << 20, 2), (1, 100 << 20, 0), (16, (1 << 30) + 1, 0)],
)
def test_two_lanes_need_two_cores_and_an_artifact_small_enough_to_load_twice(cores, size_bytes, threads_per_lane, monkeypatch):
    from harness.runtime import runners

    monkeypatch.setattr(runners, "_THREADS_OVERRIDE", cores)
    session = _session_with_artifact_of(size_bytes)
    assert session.lane_threads == threads_per_lane
    assert session.lanes.parallel == bool(threads_per_lane)
    session.lanes.close()


def test_the_lane_thread_ends_with_the_gate_session(monkeypatch):
    """A training script that ran the gate goes on in the same process: no lane thread is left."""
    from harness.runtime import runners

    monkeypatch.setattr(runners, "_THREADS_OVERRIDE", 2)  # as on two cores, whatever this worker's share
    session = _session_with_artifact_of(100 << 20)
    assert session.lanes.parallel
    lane, _ = session.lanes.pair(threading.current_thread, lambda: None)
    assert lane.name.startswith("onnx-gate-lane") and lane.is_alive()
    session.close_lanes()
    assert not lane.is_alive()
