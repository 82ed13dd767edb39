"""Content-addressed, verified, never-overwriting upload of the artifact to S3-compatible storage.

The same boto3 code talks to SeaweedFS locally and MinIO or AWS S3 in production.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

from harness.core.publish_outcome import PublishError
from harness.core.secrets import redact
from harness.runtime.artifact_files import ArtifactManifest

CHUNK = 8 << 20
# One streamed PUT up to this size (S3 allows 5 GB); multipart above it.
MULTIPART_THRESHOLD = 1 << 30
PART_SIZE = 64 << 20


def s3_client(endpoint: str | None, access_key: str | None, secret_key: str | None, *, attempts: int = 3, timeout_s: float = 10) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": attempts},
        connect_timeout=timeout_s,
        read_timeout=60,
        # boto3 >= 1.36 sends CRC checksums (and aws-chunked bodies) on every request by default,
        # which several S3-compatible servers reject; checksums are sent where this code asks.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        config=config, region_name="us-east-1",
    )  # fmt: skip


@dataclass(frozen=True)
class UploadResult:
    uri: str
    bucket: str
    key: str
    sha256: str
    size: int
    reused: bool  # the object was already there with the same bytes

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def object_key(prefix: str, model_name: str, sha256: str) -> str:
    """Where a self-contained artifact lives: one object named by its identity."""
    return f"{prefix.strip('/')}/{model_name}/{sha256}.onnx"


def folder_key(prefix: str, model_name: str, identity: str) -> str:
    """Where a graph with external data lives: ``<identity>/model.onnx``, each data file under
    its location beside it, and ``<identity>/manifest.txt`` (written last, once every file is
    verified: its presence says the folder is complete)."""
    return f"{prefix.strip('/')}/{model_name}/{identity}/"


MANIFEST_OBJECT = "manifest.txt"
GRAPH_OBJECT = "model.onnx"


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or type(exc).__name__


def explain(exc: Exception, endpoint: str, action: str) -> PublishError:
    """One safe line for a boto3/botocore failure."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    code = _error_code(exc)
    if isinstance(exc, EndpointConnectionError) or "Connect" in type(exc).__name__:
        message = f"cannot reach S3 at {endpoint} while {action}: is the server up and MLFLOW_S3_ENDPOINT_URL right?"
    elif isinstance(exc, NoCredentialsError):
        message = "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    elif code in ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "403", "InvalidToken"):
        message = (f"S3 access denied at {endpoint} while {action} ({code}): "
                   "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    elif code in ("NoSuchBucket", "404") and action.startswith("checking"):
        message = f"S3 bucket missing at {endpoint} while {action} ({code})"
    else:
        message = f"S3 error at {endpoint} while {action}: {code}: {exc}"
    return PublishError(redact(message))


def _sha256_of(stream: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class ArtifactStore:
    def __init__(self, client: Any, *, endpoint: str, bucket: str, prefix: str) -> None:
        self.client, self.endpoint, self.bucket, self.prefix = client, endpoint, bucket, prefix

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise explain(exc, self.endpoint, f"checking s3://{self.bucket}/{key}") from None

    def _same_bytes(self, head: Mapping[str, Any], sha256: str, size: int) -> bool:
        return head.get("Metadata", {}).get("sha256") == sha256 and int(head.get("ContentLength", -1)) == size

    def read_back_sha256(self, key: str) -> tuple[str, int]:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            return _sha256_of(body)
        finally:
            body.close()

    def upload(self, path: Path, *, sha256: str, metadata: Mapping[str, str], model_name: str) -> UploadResult:
        """Upload the self-contained file ``path`` under its sha256, verify it by reading it back,
        never overwrite."""
        return self.upload_object(path, object_key(self.prefix, model_name, sha256), sha256=sha256, metadata=metadata)

    def upload_artifact(
        self, graph: Path, manifest: ArtifactManifest, *, metadata: Mapping[str, str], model_name: str
    ) -> UploadResult:
        """Upload a graph and its external data files under the artifact's identity, each file
        verified as ``upload_object`` does, then the manifest. Never overwrites; a folder whose
        manifest is there already is reused."""
        folder = folder_key(self.prefix, model_name, manifest.identity)
        uri = f"s3://{self.bucket}/{folder}"
        text = manifest.text().encode()
        meta = {**metadata, "artifact-identity": manifest.identity}
        done = self._head(folder + MANIFEST_OBJECT)
        if done is not None:
            if not self._same_bytes(done, hashlib.sha256(text).hexdigest(), len(text)):
                raise PublishError(f"{uri} holds a different artifact's manifest; refusing to overwrite it")
            return UploadResult(uri, self.bucket, folder, manifest.identity, manifest.size, reused=True)
        self.upload_object(graph, folder + GRAPH_OBJECT, sha256=manifest.graph.sha256, metadata=meta)
        for data in manifest.data:
            self.upload_object(graph.parent / data.name, folder + data.name, sha256=data.sha256, metadata=meta)
        with tempfile.TemporaryDirectory(prefix="onnx-gate-manifest-") as scratch:
            listing = Path(scratch) / MANIFEST_OBJECT
            listing.write_bytes(text)
            self.upload_object(listing, folder + MANIFEST_OBJECT, sha256=hashlib.sha256(text).hexdigest(), metadata=meta)
        return UploadResult(uri, self.bucket, folder, manifest.identity, manifest.size, reused=False)

    def upload_object(self, path: Path, key: str, *, sha256: str, metadata: Mapping[str, str]) -> UploadResult:
        """Upload one file under ``key``, verify it by reading it back, never overwrite."""
        from botocore.exceptions import ClientError

        size = path.stat().st_size
        uri = f"s3://{self.bucket}/{key}"
        head = self._head(key)
        if head is not None:
            if not self._same_bytes(head, sha256, size):
                raise PublishError(f"{uri} exists with different content; refusing to overwrite it")
            return UploadResult(uri, self.bucket, key, sha256, size, reused=True)
        meta = {**metadata, "sha256": sha256, "size": str(size)}
        try:
            if size <= MULTIPART_THRESHOLD:
                with path.open("rb") as body:  # streamed from disk, not read whole
                    self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=body, ContentLength=size, Metadata=meta,
                        ContentType="application/octet-stream", IfNoneMatch="*",
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                    )  # fmt: skip
            else:
                self._multipart(path, key, meta)
        except ClientError as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                # Someone uploaded this key meanwhile: fine if it is the same bytes.
                head = self._head(key)
                if head is not None and self._same_bytes(head, sha256, size):
                    return UploadResult(uri, self.bucket, key, sha256, size, reused=True)
                raise PublishError(f"{uri} appeared with different content during upload; refusing") from None
            raise explain(exc, self.endpoint, f"uploading {uri}") from None
        except Exception as exc:
            raise explain(exc, self.endpoint, f"uploading {uri}") from None
        try:
            read_sha, read_size = self.read_back_sha256(key)
        except Exception as exc:
            read_sha, read_size = f"unreadable ({_error_code(exc)})", -1
        if (read_sha, read_size) != (sha256, size):
            self.client.delete_object(Bucket=self.bucket, Key=key)
            raise PublishError(
                f"verification failed: {uri} read back as sha256 {read_sha[:16]}… ({read_size} bytes), "
                f"expected {sha256[:16]}… ({size} bytes); the object was removed"
            )
        return UploadResult(uri, self.bucket, key, sha256, size, reused=False)

    def _multipart(self, path: Path, key: str, meta: Mapping[str, str]) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=dict(meta))
        parts = []
        try:
            with path.open("rb") as handle:
                number = 1
                while chunk := handle.read(PART_SIZE):
                    response = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=chunk
                    )
                    parts.append({"ETag": response["ETag"], "PartNumber": number})
                    number += 1
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload["UploadId"],
                MultipartUpload={"Parts": parts}, IfNoneMatch="*",
            )  # fmt: skip
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
            raise

    # --- a claim: one registrant per artifact across processes and machines ---------------------

    def claim(self, key: str, owner: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=owner.encode(), IfNoneMatch="*")
            return True
        except ClientError as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise explain(exc, self.endpoint, f"claiming s3://{self.bucket}/{key}") from None

    def read_claim(self, key: str) -> tuple[str, float] | None:
        """The claim's owner text and seconds since it was written (or last refreshed), or None."""
        import datetime as dt

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise explain(exc, self.endpoint, f"reading s3://{self.bucket}/{key}") from None
        with response["Body"] as body:
            owner = body.read(4096).decode(errors="replace")
        return owner, (dt.datetime.now(dt.timezone.utc) - response["LastModified"]).total_seconds()

    def refresh_claim(self, key: str, owner: str) -> None:
        """Rewrite the claim so its age stays low while its owner works; only while still ours."""
        state = self.read_claim(key)
        if state is not None and state[0] == owner:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=owner.encode())

    def release_if(self, key: str, owner: str) -> bool:
        """Delete a claim only while it still holds ``owner``: two waiters that both judged it stale
        must not delete the claim the faster one has just taken."""
        state = self.read_claim(key)
        if state is None or state[0] != owner:
            return False
        self.release(key)
        return True

    def release(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception:  # a leftover claim only expires; never mask the real outcome
            pass

    def list_keys(self) -> list[str]:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys
