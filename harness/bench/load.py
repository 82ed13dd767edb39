"""What the machine was doing while a benchmark ran: the load average and the share of CPU time
the hypervisor gave to other guests (steal), read before and after. A shared CI runner is
busy in ways the benchmark's own rounds cannot show; the report says so next to the figures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time of the whole machine, in clock ticks (Linux ``/proc/stat``)."""

    total: int
    steal: int

    @classmethod
    def read(cls) -> CpuTimes | None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                fields = handle.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        ticks = [int(value) for value in fields[1:]]
        # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
        steal = ticks[7] if len(ticks) > 7 else 0
        return cls(sum(ticks[:8]), steal)


@dataclass(frozen=True)
class LoadSnapshot:
    load_1min: float | None
    cpu: CpuTimes | None

    @classmethod
    def now(cls) -> LoadSnapshot:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = None
        return cls(load, CpuTimes.read())


def load_between(before: LoadSnapshot, after: LoadSnapshot) -> dict[str, Any]:
    """The record a benchmark keeps: load average before and after, the cores it could use, and
    the steal share over the interval (None where the system does not say)."""
    steal = None
    if before.cpu is not None and after.cpu is not None and after.cpu.total > before.cpu.total:
        steal = round((after.cpu.steal - before.cpu.steal) / (after.cpu.total - before.cpu.total), 4)
    return {
        "load_1min_before": before.load_1min, "load_1min_after": after.load_1min,
        "cores_available": len(os.sched_getaffinity(0)), "cpu_steal_share": steal,
    }  # fmt: skip


def describe_load(record: dict[str, Any]) -> str:
    """One line for summary.md and `compare`: "load 0.4 -> 1.9 on 2 cores, steal 0%"."""
    before, after = record.get("load_1min_before"), record.get("load_1min_after")
    text = f"load {before:.2f} -> {after:.2f}" if before is not None and after is not None else "load unknown"
    text += f" on {record.get('cores_available', '?')} cores"
    steal = record.get("cpu_steal_share")
    return text + (f", CPU steal {steal:.1%}" if steal is not None else "")
