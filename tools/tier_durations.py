"""Print where `make test`'s time went, by tier, from tests/tier_durations.json (written by the
last whole run of the suite: tests/conftest.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RECORD = Path(__file__).resolve().parent.parent / "tests" / "tier_durations.json"


def main() -> int:
    if not RECORD.is_file():
        print(f"no {RECORD.name} yet: it is written by a whole run of the suite (make test)")
        return 0
    record = json.loads(RECORD.read_text())
    workers = record["workers"] or 1
    print(f"make test: {record['wall_s']:.0f} s wall on {workers} worker(s); seconds per tier, summed over tests:")
    for tier, entry in record["tiers"].items():
        print(f"  {tier:<7} {entry['tests']:>4} tests  {entry['seconds']:>7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
