"""harness/publish/stack.py: `stack down` stops both servers at once, and one that hangs in its
graceful stop (SeaweedFS 4 waits ~25 s on its own gRPC streams) is killed after its grace."""

import subprocess
import sys
import time

from harness.publish import stack
from harness.publish.stack import _alive, _stop

HANGS_ON_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, lambda *_: None); print('ready', flush=True); time.sleep(60)"


def _started(code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"  # its handler is set
    return process


def test_two_servers_that_hang_in_their_graceful_stop_are_waited_for_once_and_killed(monkeypatch):
    monkeypatch.setattr(stack, "STOP_GRACE_S", {"mlflow": 1.0, "weed": 1.0})
    weed, mlflow = _started(HANGS_ON_SIGTERM), _started(HANGS_ON_SIGTERM)
    started = time.monotonic()
    _stop({"mlflow": mlflow.pid, "weed": weed.pid})
    took = time.monotonic() - started
    assert not _alive(weed.pid) and not _alive(mlflow.pid)
    # One grace for both, not one after the other (2 s), and SIGTERM alone did not stop them.
    assert 1.0 <= took < 1.9, took
