"""harness/publish/stack.py: what `make gate` stored survives `stack down` and `stack up`, although
SeaweedFS is killed 2 s into its graceful stop."""

import uuid

import pytest

from harness.publish.s3 import s3_client
from harness.publish.stack import ARTIFACT_BUCKET, Stack


@pytest.mark.slow  # two stack starts, ~25 s
def test_an_object_written_just_before_stack_down_is_read_back_after_stack_up(tmp_path):
    services = Stack(tmp_path / "stack")
    key, body = f"models/{uuid.uuid4().hex}.onnx", uuid.uuid4().bytes * 4096
    try:
        state = services.up()
        client = s3_client(state.endpoint, state.access_key, services.secret())
        client.put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=body)
        assert services.down()
        state = services.up()
        client = s3_client(state.endpoint, state.access_key, services.secret())
        assert client.get_object(Bucket=ARTIFACT_BUCKET, Key=key)["Body"].read() == body
    finally:
        services.down()
