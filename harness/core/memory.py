"""This process's peak resident memory, per phase of the gate.

Linux keeps a high-water mark of the resident set (VmHWM) that a process may reset by writing
"5" to /proc/self/clear_refs; resetting it when a phase starts and reading it when the phase ends
gives that phase's own peak. Elsewhere the peak since start-up (ru_maxrss) stands in for it.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Start a new high-water mark at the current resident size; False where the OS cannot."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The resident high-water mark since the last reset (or since start-up)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
