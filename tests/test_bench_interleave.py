"""The interleaved measurement loop and the machine-load record, as logic (no model runs)."""

from __future__ import annotations

from harness.bench.interleave import measure_interleaved
from harness.bench.load import CpuTimes, LoadSnapshot, describe_load, load_between


def test_each_round_gives_every_function_one_untimed_call_then_a_block_and_the_order_reverses():
    calls: list[str] = []
    functions = {name: (lambda name=name: calls.append(name)) for name in ("pytorch", "onnxruntime", "int8")}
    times = measure_interleaved(functions, rounds=2, block=2)
    assert {name: len(measured) for name, measured in times.items()} == {"pytorch": 4, "onnxruntime": 4, "int8": 4}
    per_function = 1 + 2  # the untimed call, then the block
    first, second = calls[: 3 * per_function], calls[3 * per_function:]
    assert first == ["pytorch"] * 3 + ["onnxruntime"] * 3 + ["int8"] * 3
    assert second == ["int8"] * 3 + ["onnxruntime"] * 3 + ["pytorch"] * 3
    assert all(seconds >= 0 for measured in times.values() for seconds in measured)


def test_the_load_record_reads_steal_as_a_share_of_the_interval():
    before = LoadSnapshot(0.5, CpuTimes(total=10_000, steal=100))
    after = LoadSnapshot(1.75, CpuTimes(total=12_000, steal=400))
    record = load_between(before, after)
    assert record["cpu_steal_share"] == 0.15
    assert record["load_1min_before"] == 0.5 and record["load_1min_after"] == 1.75
    assert describe_load(record).startswith("load 0.50 -> 1.75 on ") and "CPU steal 15.0%" in describe_load(record)


def test_where_the_system_does_not_say_the_record_says_unknown():
    record = load_between(LoadSnapshot(None, None), LoadSnapshot(None, None))
    assert record["cpu_steal_share"] is None
    assert describe_load(record).startswith("load unknown on ")


def test_this_machine_gives_a_snapshot():
    snapshot = LoadSnapshot.now()
    assert snapshot.load_1min is None or snapshot.load_1min >= 0
    assert snapshot.cpu is None or snapshot.cpu.total >= snapshot.cpu.steal >= 0
