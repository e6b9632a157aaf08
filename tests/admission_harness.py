"""Admission as deployed, for moto: the queues and the slots table built from template.yaml, the
Starter driven the way Lambda's SQS event source drives it (up to two at once), and the
conversions' status-change events moto does not send.

Where moto is lenient the harness is strict:

- the queues have the template's ``RedrivePolicy`` (the real ``maxReceiveCount``, never scaled) and
  retention; only durations (the visibility timeout) are scaled down, by ``time_scale``;
- every receive is recorded with its ``ApproximateReceiveCount``;
- DynamoDB transactions are made atomic (:func:`atomic_transactions`): moto checks a transaction's
  conditions and applies it without a lock, AWS serializes them;
- status-change events (RUNNING and the end) are delivered at least once, a seeded share twice.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from functions.starter import app as starter_app
from nwb2pennsieve.cloud.admission import Admission, Starter
from statemachine.render import resolve
from tests.cloud_fixtures import REGION, FakeLambdaContext, Stack, load_event

STATUS_CHANGE = "Step Functions Execution Status Change"


@dataclass
class LambdaCaps:
    """What the Lambda service does at its concurrency limits, which moto never does: at most
    ``account`` invocations at once, and ``per_function`` for some; an invocation over a limit raises
    the 429 ``TooManyRequestsException`` (Step Functions: ``Lambda.TooManyRequestsException``).
    Records peaks and throttles per function, and the peak of writers per version folder."""

    account: int
    per_function: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    writers: dict[str, int] = field(default_factory=dict)  # version folder -> WriteChunks running now
    peak_writers: int = 0
    peak_account: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> LambdaCaps:
        from moto.awslambda.exceptions import LambdaClientError
        from moto.awslambda.models import LambdaFunction

        class TooMany(LambdaClientError):
            code = 429

            def __init__(self) -> None:
                super().__init__("TooManyRequestsException", "Rate exceeded")

        invoke = LambdaFunction._invoke_lambda
        caps = self

        def capped(function: Any, event: Any = None) -> Any:
            name = function.function_name
            payload = json.loads(event) if isinstance(event, str) else event or {}
            folder = str(payload.get("output", {}).get("prefix", "")) if name == "WriteChunksFunction" else ""
            with caps._lock:
                over = name in caps.per_function and caps.running.get(name, 0) >= caps.per_function[name]
                if over or sum(caps.running.values()) >= caps.account:
                    caps.throttled[name] = caps.throttled.get(name, 0) + 1
                    raise TooMany()
                caps.running[name] = caps.running.get(name, 0) + 1
                caps.peak[name] = max(caps.peak.get(name, 0), caps.running[name])
                caps.peak_account = max(caps.peak_account, sum(caps.running.values()))
                if folder:
                    caps.writers[folder] = caps.writers.get(folder, 0) + 1
                    caps.peak_writers = max(caps.peak_writers, caps.writers[folder])
            try:
                time.sleep(0.01)  # long enough for invocations of other executions to overlap
                return invoke(function, event)
            finally:
                with caps._lock:
                    caps.running[name] -= 1
                    if folder:
                        caps.writers[folder] -= 1

        monkeypatch.setattr(LambdaFunction, "_invoke_lambda", capped)
        return self


def barrier_on_first_starts(monkeypatch: pytest.MonkeyPatch, parties: int = 2) -> set[int]:
    """The Starters' first StartExecution calls wait for each other: all decided before any started.
    Returns the threads that reached it."""
    barrier = threading.Barrier(parties, timeout=20)
    first: set[int] = set()
    real = starter_app.sfn.start_execution

    def start(**kw: Any) -> Any:
        if threading.get_ident() not in first:
            first.add(threading.get_ident())
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        return real(**kw)

    monkeypatch.setattr(starter_app.sfn, "start_execution", start)
    return first


def object_created(
    bucket: str, key: str, version: str | None, *, etag: str = "", sequencer: str = ""
) -> dict[str, Any]:
    """An EventBridge "Object Created" event as S3 sends it, now (``version`` None: ``null``)."""
    event = load_event("s3_object_created.json")
    event["id"] = f"{random.getrandbits(64):016x}"
    event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"].update(
        {"key": key, "version-id": version or "null", "etag": etag.strip('"'), "sequencer": sequencer or "0"}
    )
    return event


def create_admission(
    sqs: Any, template: dict[str, Any], refs: dict[str, Any], *, time_scale: float = 1 / 100
) -> tuple[str, str, str, str]:
    """The admission queue, its dead-letter queue and the slots table as template.yaml declares them
    (durations scaled by ``time_scale``, never maxReceiveCount); (queue URL, queue ARN, DLQ URL, table)."""
    resources = template["Resources"]
    dead = resources["AdmissionDeadLetterQueue"]["Properties"]
    dead_url = sqs.create_queue(
        QueueName=refs["AdmissionDeadLetterQueue.QueueName"],
        Attributes={"MessageRetentionPeriod": str(dead["MessageRetentionPeriod"])},
    )["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = resources["AdmissionQueue"]["Properties"]
    redrive = resolve(queue["RedrivePolicy"], refs) | {"deadLetterTargetArn": dead_arn}
    url = sqs.create_queue(
        QueueName=refs["AdmissionQueue.QueueName"],
        Attributes={
            "VisibilityTimeout": str(max(1, round(queue["VisibilityTimeout"] * time_scale))),
            "MessageRetentionPeriod": str(queue["MessageRetentionPeriod"]),
            "RedrivePolicy": json.dumps(redrive),  # maxReceiveCount as deployed: never scaled
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    table = resources["AdmissionSlotsTable"]["Properties"]
    name = refs["AdmissionSlotsTable"]
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=name,
        KeySchema=table["KeySchema"],
        AttributeDefinitions=table["AttributeDefinitions"],
        BillingMode=table["BillingMode"],
    )
    return url, arn, dead_url, name


def configure_starter(
    monkeypatch: pytest.MonkeyPatch, state_machine: str, url: str, dead_url: str, table: str, retry_seconds: int = 1
) -> None:
    """The Starter's environment for these resources (a deferral's delay: ``retry_seconds``; AWS:
    300 s by default)."""
    for variable, value in {
        "STATE_MACHINE_ARN": state_machine,
        "ADMISSION_RETRY_SECONDS": str(retry_seconds),
        "ADMISSION_QUEUE_URL": url,
        "DEAD_LETTER_QUEUE_URL": dead_url,
        "ADMISSION_SLOTS_TABLE": table,
    }.items():
        monkeypatch.setenv(variable, value)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The SQS event Lambda's event source makes of received ``messages`` (shaped as events/starter.json)."""
    (template, *_) = load_event("starter.json")["Records"]
    records = []
    for m in messages:
        attributes = {
            k: {"stringValue": v["StringValue"], "dataType": v["DataType"]}
            for k, v in m.get("MessageAttributes", {}).items()
        }
        records.append(
            template
            | {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": template["attributes"] | m.get("Attributes", {}),
                "messageAttributes": attributes,
                "md5OfBody": m["MD5OfBody"],
                "eventSourceARN": queue_arn,
            }
        )
    return {"Records": records}


@dataclass
class Receive:
    message_id: str
    identity: str
    count: int


@dataclass
class AdmissionHarness:
    """The admission queue, its dead-letter queue and the slots table of template.yaml, in moto."""

    stack: Stack
    monkeypatch: pytest.MonkeyPatch
    max_running: int
    time_scale: float = 1 / 100
    retry_seconds: int = 1  # a deferral's delay
    twice: float = 0.1  # share of status-change events delivered twice
    seed: int = 20
    sqs: Any = field(init=False)
    url: str = field(init=False)
    arn: str = field(init=False)
    dead_letter_url: str = field(init=False)
    receives: list[Receive] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    statuses_delivered: int = 0
    tally: Counter[str] = field(default_factory=Counter)  # what the Starter did with every message
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.url, self.arn, self.dead_letter_url, table = create_admission(
            self.sqs, self.stack.template, self.stack.refs, time_scale=self.time_scale
        )
        configure_starter(
            self.monkeypatch, self.stack.state_machine_arn, self.url, self.dead_letter_url, table, self.retry_seconds
        )
        self.monkeypatch.setenv("MAX_RUNNING_EXECUTIONS", str(self.max_running))
        self.rng = random.Random(self.seed)
        real = Starter.admit
        harness = self

        def admit(starter: Starter, records: Any) -> Admission:
            result = real(starter, records)
            with harness._lock:
                for outcome in ("started", "duplicates", "deferred", "superseded", "gone", "rejected", "failed"):
                    harness.tally[outcome] += len(getattr(result, outcome))
            return result

        self.monkeypatch.setattr(Starter, "admit", admit)

    # --- what S3 and EventBridge do ------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps(event))

    # --- what Lambda's SQS event source does -----------------------------------------------------

    def poll(self) -> int:
        """One receive of up to 10 messages, the Starter on them, the deletes; how many it got."""
        got = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = got.get("Messages", [])
        if not messages:
            return 0
        for m in messages:
            body = json.loads(m["Body"])
            identity = str(body.get("detail", {}).get("object", {}).get("key", "?"))
            with self._lock:
                self.receives.append(Receive(m["MessageId"], identity, int(m["Attributes"]["ApproximateReceiveCount"])))
        try:
            response = starter_app.lambda_handler(sqs_event(messages, self.arn), FakeLambdaContext("StarterFunction"))
        except Exception:  # the whole batch comes back after the visibility timeout
            return len(messages)
        with self._lock:
            self.responses.append(response)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                # Received again meanwhile (its visibility timeout passed)? AWS answers such a
                # delete with success and keeps the message; moto refuses it.
                with contextlib.suppress(self.sqs.exceptions.ReceiptHandleIsInvalid):
                    self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
        return len(messages)

    def depth(self, url: str | None = None) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    # --- what EventBridge does with the conversions' status changes -----------------------------

    def deliver_status(self, execution: dict[str, Any], status: str) -> None:
        event = {
            "detail-type": STATUS_CHANGE,
            "source": "aws.states",
            "detail": {"name": execution["name"], "status": status, "executionArn": execution["executionArn"]},
        }
        times = 2 if self.rng.random() < self.twice else 1
        for _ in range(times):
            starter_app.lambda_handler(event, FakeLambdaContext("StarterFunction"))
            with self._lock:
                self.statuses_delivered += 1

    def executions(self) -> list[dict[str, Any]]:
        """The conversions as ListExecutions lists them (moto's listing can catch an execution
        being created, without a status yet: asked again then)."""
        for _ in range(50):
            try:
                found: list[dict[str, Any]] = self.stack.sfn.list_executions(
                    stateMachineArn=self.stack.state_machine_arn
                )["executions"]
                return found
            except AttributeError:
                time.sleep(0.02)
        raise AssertionError("moto's ListExecutions kept failing")

    def run(self, *, starters: int = 2, timeout: float = 600.0, settle: Callable[[], bool] = lambda: True) -> None:
        """Run ``starters`` event-source pollers and the status-event deliverer until the queue is
        empty, nothing runs, every status change was delivered and ``settle()`` holds."""
        stop = threading.Event()
        announced: dict[str, set[str]] = {}
        errors: list[BaseException] = []

        def poller() -> None:
            try:
                while not stop.is_set():
                    if not self.poll():
                        time.sleep(0.05)
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                stop.set()

        threads = [threading.Thread(target=poller, name=f"starter-{i}", daemon=True) for i in range(starters)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not errors:
                # The queue first, then the executions: a message deleted after the queue was read
                # was admitted before the listing, so the listing shows its execution. The other
                # order missed one started between the listing and the queue's count, and the
                # run ended with that conversion still running.
                queued = self.depth()
                executions = self.executions()
                pending = False
                for e in executions:
                    seen = announced.setdefault(e["name"], set())
                    if "RUNNING" not in seen:
                        self.deliver_status(e, "RUNNING")
                        seen.add("RUNNING")
                    if e["status"] != "RUNNING" and e["status"] not in seen:
                        self.deliver_status(e, e["status"])
                        seen.add(e["status"])
                    pending = pending or e["status"] == "RUNNING"
                if not pending and not queued and settle():
                    return
                time.sleep(0.05)
            if errors:
                raise errors[0]
            raise AssertionError(f"admission did not settle in {timeout} s (queue {self.depth()})")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
