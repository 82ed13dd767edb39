"""harness/publish/stack.py: `stack down` stops both servers at once, and one that hangs in its
graceful stop (SeaweedFS 4 waits ~25 s on its own gRPC streams) is killed after its grace."""

import subprocess
import sys
import time

from harness.publish.stack import STOP_GRACE_S, _alive, _stop

HANGS_ON_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, lambda *_: None); print('ready', flush=True); time.sleep(60)"
EXITS_ON_SIGTERM = "import time; print('ready', flush=True); time.sleep(60)"


def _started(code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"  # its handler is set
    return process


def test_a_server_that_hangs_in_its_graceful_stop_is_killed_after_its_grace_and_the_other_stops_beside_it():
    weed, mlflow = _started(HANGS_ON_SIGTERM), _started(EXITS_ON_SIGTERM)
    started = time.monotonic()
    _stop({"mlflow": mlflow.pid, "weed": weed.pid})
    took = time.monotonic() - started
    assert not _alive(weed.pid) and not _alive(mlflow.pid)
    # One wait for both: the grace of the one that hangs, not the sum of both graces.
    assert STOP_GRACE_S["weed"] <= took < STOP_GRACE_S["weed"] + 3, took
