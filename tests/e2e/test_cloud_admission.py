"""Admission under AWS-like conditions: the Starter fed from an SQS queue in moto, the real ASL
executed by moto with our handlers as its Lambdas, and what real AWS does that moto does not:

- a Lambda concurrency cap for the account: an invocation over it raises
  ``TooManyRequestsException`` (what Step Functions sees as ``Lambda.TooManyRequestsException``);
- the same S3 event delivered twice;
- S3 answering ``503 Slow Down`` to a fraction of PutObject calls (a botocore hook, seeded).

moto's interpreter really sleeps each Retry interval: here the waits are scaled down 1,000 times
(the retry budgets themselves are checked in tests/unit/test_cloud_contracts.py).
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.starter import app as starter_app
from tests.cloud_fixtures import INPUT_BUCKET, OUTPUT_BUCKET, REGION, FakeLambdaContext, Stack, load_event, make_nwb
from tests.expected import differing_objects


@pytest.fixture(autouse=True)
def quick_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class ScaledTime:
        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(seconds / 1000)

    monkeypatch.setattr(retrier_decl, "time", ScaledTime)


class Throttled(Exception):
    """Raised in place of an invocation over the cap (becomes moto's LambdaClientError below)."""


def concurrency_cap(monkeypatch: pytest.MonkeyPatch, cap: int) -> dict[str, int]:
    """At most ``cap`` Lambda invocations at once in the account; the others are throttled."""
    from moto.awslambda.exceptions import LambdaClientError
    from moto.awslambda.models import LambdaFunction

    class TooMany(LambdaClientError):
        code = 429

        def __init__(self) -> None:
            super().__init__("TooManyRequestsException", "Rate exceeded")

    invoke = LambdaFunction._invoke_lambda
    lock = threading.Lock()
    seen = {"running": 0, "peak": 0, "throttled": 0}

    def capped(self: Any, event: Any = None) -> Any:
        with lock:
            if seen["running"] >= cap:
                seen["throttled"] += 1
                raise TooMany()
            seen["running"] += 1
            seen["peak"] = max(seen["peak"], seen["running"])
        try:
            time.sleep(0.01)  # long enough for invocations of other executions to overlap
            return invoke(self, event)
        finally:
            with lock:
                seen["running"] -= 1

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", capped)
    return seen


def object_created(key: str, version: str) -> dict[str, Any]:
    event = load_event("s3_object_created.json")
    event["detail"]["object"]["key"] = key
    event["detail"]["object"]["version-id"] = version
    return event


class Admission:
    """The admission queue and the Starter, driven the way Lambda's SQS event source does."""

    def __init__(self, stack: Stack, monkeypatch: pytest.MonkeyPatch, *, max_running: int) -> None:
        self.stack = stack
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.url = self.sqs.create_queue(
            QueueName=stack.refs["AdmissionQueue.QueueName"], Attributes={"VisibilityTimeout": "30"}
        )["QueueUrl"]
        self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        monkeypatch.setenv("STATE_MACHINE_ARN", stack.state_machine_arn)
        monkeypatch.setenv("MAX_RUNNING_EXECUTIONS", str(max_running))
        monkeypatch.setenv("ADMISSION_RETRY_SECONDS", "1")
        self.responses: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps(event))

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The SQS event Lambda's event source makes of ``messages``: records shaped as in events/starter.json."""
        (template, *_) = load_event("starter.json")["Records"]
        records = [
            template
            | {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": template["attributes"] | m.get("Attributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSourceARN": self.arn,
            }
            for m in messages
        ]
        return {"Records": records}

    def drain(self, timeout: float = 300.0) -> list[dict[str, Any]]:
        """Run the Starter on what the queue holds until it is empty and no execution runs."""
        sfn = self.stack.sfn
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
            )
            messages = got.get("Messages", [])
            if messages:
                response = starter_app.lambda_handler(self.event(messages), FakeLambdaContext("StarterFunction"))
                self.responses.append(response)
                failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
                for m in messages:  # what the event source does with a partial batch response
                    if m["MessageId"] not in failed:
                        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
            running = sfn.list_executions(stateMachineArn=self.stack.state_machine_arn, statusFilter="RUNNING")
            left = self.sqs.get_queue_attributes(
                QueueUrl=self.url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            if not running["executions"] and not messages and not any(int(v) for v in left.values()):
                return sfn.list_executions(stateMachineArn=self.stack.state_machine_arn)["executions"]
            time.sleep(0.05)
        raise AssertionError(f"the queue did not drain in {timeout} s")


def test_a_burst_under_a_lambda_concurrency_cap_queues_and_every_file_converts(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in {"CHUNK_SIZE_MB": "0.05", "MAX_ITEM_MB": "0.1", "BATCH_MB": "0.1"}.items():
        monkeypatch.setenv(k, v)
    seen = concurrency_cap(monkeypatch, cap=2)
    admission = Admission(stack, monkeypatch, max_running=2)
    keys = [f"incoming/burst-{i}.nwb" for i in range(5)]
    for i, key in enumerate(keys):
        path = make_nwb(tmp_path / f"{i}.nwb", channels=4, samples=12_000, second_series=False, seed=i)
        version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=path.read_bytes())["VersionId"]
        admission.send(object_created(key, version))

    executions = admission.drain()

    assert len(executions) == len(keys)
    for e in executions:
        desc = stack.sfn.describe_execution(executionArn=e["executionArn"])
        assert desc["status"] == "SUCCEEDED", desc.get("cause")
    for key in keys:
        stem = key[: -len(".nwb")]
        names = stack.objects(OUTPUT_BUCKET, f"converted/{stem}/")
        assert any(n.endswith(".metadata.json") for n in names) and any(n.endswith(".bin.gz") for n in names)
    assert seen["peak"] <= 2
    assert seen["throttled"] > 0  # the cap was really hit, and waited out
    # The Starter held files back while the cap of running executions was reached.
    assert any(r["batchItemFailures"] for r in admission.responses)


def test_the_same_event_twice_starts_one_conversion(
    stack: Stack, example_nwb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admission = Admission(stack, monkeypatch, max_running=5)
    key = "incoming/sub-01_ses-01.nwb"
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=example_nwb.read_bytes())["VersionId"]
    event = object_created(key, version)
    admission.send(event)
    admission.send(event)  # S3 and EventBridge deliver at least once
    first = admission.drain()
    admission.send(dict(event, id="another-delivery-id"))  # a late duplicate with another event id
    executions = admission.drain()

    assert len(first) == len(executions) == 1
    assert executions[0]["status"] == "SUCCEEDED"
    assert [f for f, _ in stack.invocations].count("PlanFunction") == 1
    assert [f for f, _ in stack.invocations].count("FinalizeFunction") == 1


def slow_down_puts(client: Any, fraction: float, seed: int) -> dict[str, int]:
    """``503 Slow Down`` for ``fraction`` of the client's PutObject calls (before moto sees them)."""
    from botocore.awsrequest import AWSResponse
    from moto.core.botocore_stubber import MockRawResponse

    rng = random.Random(seed)
    lock = threading.Lock()
    counts = {"puts": 0, "slowed": 0}
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )

    def hook(request: Any, **kwargs: Any) -> AWSResponse | None:
        with lock:
            counts["puts"] += 1
            if rng.random() >= fraction:
                return None
            counts["slowed"] += 1
        return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, MockRawResponse(body))

    client.meta.events.register_first("before-send.s3.PutObject", hook)
    return counts


def test_s3_slow_down_on_a_fraction_of_puts_still_gives_identical_bytes(
    stack: Stack, example_nwb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.finalize import app as finalize_app
    from functions.plan import app as plan_app
    from functions.write_chunks import app as write_app

    for k, v in {"CHUNK_SIZE_MB": "0.05", "MAX_ITEM_MB": "0.2", "BATCH_MB": "0.4"}.items():
        monkeypatch.setenv(k, v)
    key = "incoming/sub-01_ses-01.nwb"
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=example_nwb.read_bytes())["VersionId"]
    assert stack.run(object_created(key, version))["status"] == "SUCCEEDED"
    clean = stack.objects(OUTPUT_BUCKET, "converted/")
    for name in list(clean):
        stack.s3.delete_object(Bucket=OUTPUT_BUCKET, Key=name)

    counts = [slow_down_puts(m.s3, 0.1, seed) for seed, m in enumerate((plan_app, write_app, finalize_app))]
    desc = stack.run(object_created(key, version))

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert sum(c["slowed"] for c in counts) >= 5  # the 503s really happened
    assert differing_objects(stack.objects(OUTPUT_BUCKET, "converted/"), clean) == []
