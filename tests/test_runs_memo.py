"""harness/runtime/runs_memo.py: an input Hypothesis draws again is judged and counted again from
the runs it had, and only the very same input is."""

import tomllib
from dataclasses import replace

import numpy as np
import pytest

from harness.core import config as gate_config
from harness.core.inputs import InputCase
from harness.runtime.case_runs import CaseRuns
from harness.runtime.runs_memo import RunsMemo, feeds_key
from tests.conftest import HERE, SMALL_LOCALIZATION_NET

CASE = InputCase(family="normal", sizes={"batch": 2}, seed=3)


def _feeds(value: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": np.full((2, 3), value, np.float32), "lengths": np.array([3, 1], np.int64)}


def test_the_key_is_the_feeds_byte_for_byte():
    assert feeds_key(_feeds()) == feeds_key(dict(reversed(list(_feeds().items()))))
    one_ulp = _feeds()
    one_ulp["x"][1, 2] = np.nextafter(np.float32(0), np.float32(1))
    other_dtype = {**_feeds(), "lengths": np.array([3, 1], np.int32)}
    other_shape = {**_feeds(), "x": np.zeros((3, 2), np.float32)}
    renamed = {"y" if k == "x" else k: v for k, v in _feeds().items()}
    transposed = {**_feeds(), "x": np.zeros((3, 2), np.float32).T}  # the same shape, not contiguous
    keys = [feeds_key(f) for f in (_feeds(), one_ulp, other_dtype, other_shape, renamed)]
    assert len(set(keys)) == len(keys)
    assert feeds_key(transposed) == feeds_key(_feeds())


def _runs(values: int) -> CaseRuns:
    array = np.zeros(values, np.float32)
    return CaseRuns(CASE, {"x": array}, {"y": array}, {"y": array}, None, "PyTorch", "ONNX Runtime")


def test_the_memo_keeps_inputs_up_to_its_bytes_and_forgets_them_when_the_runners_change():
    memo = RunsMemo(max_bytes=3 * 4000)
    memo.keep(b"first", _runs(1000))  # 3 arrays of 4000 bytes: exactly the budget
    memo.keep(b"second", _runs(1000))
    assert memo.get(b"first") is not None and memo.get(b"second") is None
    assert memo.held_bytes == 12000
    memo.clear()
    assert memo.get(b"first") is None and memo.held_bytes == 0


@pytest.mark.checks
def test_a_repeated_case_is_judged_and_counted_again_without_running_either_framework(tmp_path, monkeypatch):
    from harness.gate import session as session_module

    section = tomllib.loads(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"})
    session = session_module.GateSession(gate_config.parse(section, tmp_path, search_dirs=(HERE,)), work_dir=tmp_path)
    session.prepare()
    ran = []
    real_run_case = session_module.run_case
    monkeypatch.setattr(session_module, "run_case", lambda case, *a, **k: ran.append(case) or real_run_case(case, *a, **k))
    case = InputCase(family="normal", sizes={"batch": 2}, seed=1)

    first = session.check_parity(case)
    again = session.check_parity(replace(case, note="drawn again"))
    assert len(ran) == 1 and str(again) == str(first) and bool(again) == bool(first)
    assert session.parity.examples == 2  # both examples count, as before
    session.check_parity(replace(case, seed=2))
    assert len(ran) == 2  # another seed is another input
    zeros = InputCase(family="zeros", sizes={"batch": 2}, seed=5)
    session.check_parity(zeros)
    session.check_parity(replace(zeros, seed=6))  # zeros at any seed: the same input
    assert len(ran) == 3 and session.parity.examples == 5
    session.renew_ort_runner()
    session.check_parity(case)
    assert len(ran) == 4  # a fresh ONNX Runtime session runs it again
