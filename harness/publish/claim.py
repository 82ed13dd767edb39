"""Who holds a registration claim, and whether that holder can still finish.

A claim names its owner (host, pid, gate run) so a waiting publisher can say whom it waits for,
and clear the claim at once when the owner was a process on the same machine that no longer runs.
Owners elsewhere refresh their claim while they work; one not refreshed for a while is stale.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path


def machine_id() -> str:
    """Equal for two processes only when each can see the other's pid: same host, same boot, same
    pid namespace. Two containers with one hostname differ here, so neither judges the other's pid."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(Path(path).read_text().strip() if path.endswith("boot_id") else str(os.stat(path).st_ino))
        except OSError:
            parts.append("?")
    return "/".join(parts)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class ClaimOwner:
    host: str
    machine: str
    pid: int
    run_id: str

    @classmethod
    def current(cls, run_id: str) -> ClaimOwner:
        return cls(socket.gethostname(), machine_id(), os.getpid(), run_id)

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> ClaimOwner | None:
        try:
            fields = json.loads(text)
            return cls(str(fields["host"]), str(fields["machine"]), int(fields["pid"]), str(fields["run_id"]))
        except (ValueError, KeyError, TypeError):
            return None  # written by an older gate, or by hand: judged by its age alone

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (gate run {self.run_id})"

    def is_gone(self) -> bool:
        """True only when certain: the owner ran on this machine and its pid no longer exists."""
        return self.machine == machine_id() and not pid_alive(self.pid)
