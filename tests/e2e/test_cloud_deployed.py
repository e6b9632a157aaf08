"""The deployed stack, end to end: drop a file into its input bucket and wait for its execution.

Runs only with ``-m deployed`` style intent: it is skipped unless AWS credentials (keys or a
profile) and ``AWS_SAM_STACK_NAME`` were set when pytest started, e.g.
``AWS_PROFILE=dev AWS_SAM_STACK_NAME=nwb2pennsieve .venv/bin/pytest -m deployed tests/e2e``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cloud_fixtures import REAL_AWS_ENV

pytestmark = [
    pytest.mark.deployed,
    pytest.mark.skipif(
        "AWS_SAM_STACK_NAME" not in REAL_AWS_ENV
        or not ({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(REAL_AWS_ENV) or "AWS_PROFILE" in REAL_AWS_ENV),
        reason="needs AWS credentials and AWS_SAM_STACK_NAME (a deployed stack)",
    ),
]


@pytest.fixture
def session() -> Any:
    import boto3

    return boto3.Session(
        aws_access_key_id=REAL_AWS_ENV.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=REAL_AWS_ENV.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=REAL_AWS_ENV.get("AWS_SESSION_TOKEN"),
        profile_name=None if "AWS_ACCESS_KEY_ID" in REAL_AWS_ENV else REAL_AWS_ENV.get("AWS_PROFILE"),
        region_name=REAL_AWS_ENV.get("AWS_REGION") or REAL_AWS_ENV.get("AWS_DEFAULT_REGION"),
    )


def test_a_dropped_file_is_converted(session: Any, example_nwb: Path) -> None:
    stack = REAL_AWS_ENV["AWS_SAM_STACK_NAME"]
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    }
    s3 = session.client("s3")
    sfn = session.client("stepfunctions")
    key = f"incoming/deployed-test-{uuid.uuid4().hex[:8]}.nwb"
    started = time.time()
    s3.put_object(Bucket=outputs["InputBucket"], Key=key, Body=example_nwb.read_bytes())
    execution = None
    deadline = time.time() + 600
    while time.time() < deadline:
        for e in sfn.list_executions(stateMachineArn=outputs["StateMachineArn"], maxResults=50)["executions"]:
            if e["startDate"].timestamp() >= started - 5 and execution is None:
                detail = sfn.describe_execution(executionArn=e["executionArn"])
                if key in detail.get("input", ""):
                    execution = e["executionArn"]
        if execution:
            status = sfn.describe_execution(executionArn=execution)
            if status["status"] != "RUNNING":
                break
        time.sleep(5)
    assert execution, f"no execution started for s3://{outputs['InputBucket']}/{key}"
    assert status["status"] == "SUCCEEDED", status.get("cause")
    prefix = "converted/" + key.removesuffix(".nwb") + "/"
    listed = s3.list_objects_v2(Bucket=outputs["OutputBucket"], Prefix=prefix).get("KeyCount", 0)
    assert listed > 0
