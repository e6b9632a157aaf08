"""Admission: start conversions at the rate the account can carry (the Starter function).

S3 "Object Created" events reach an SQS queue through an EventBridge rule; the Starter reads them
in small batches (SQS event source, ``ReportBatchItemFailures``) and starts one execution per
object version, while fewer than the cap of executions run. At the cap, a message stays on the
queue: it is reported as a batch item failure and its visibility is set to
``ADMISSION_RETRY_SECONDS`` (with jitter), so it comes back later. A burst of 1,000 files thus
queues and is converted a few at a time; none is dropped (after ``maxReceiveCount`` receives a
message goes to the dead-letter queue, whose depth raises an alarm).

The cap is ``min(MAX_RUNNING_EXECUTIONS, WRITERS_RESERVED_CONCURRENCY // WRITE_CONCURRENCY)``: the
running executions' WriteChunks maps together never ask for more writers than the concurrency
reserved for them.

Executions are named after bucket, key and version id (:func:`execution_name`): a duplicate
delivery of the same event starts nothing (``ExecutionAlreadyExists``, or the running execution's
own ARN back for an identical input) and is counted as a duplicate.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.parser.models import (
    S3EventNotificationEventBridgeModel,
    SqsModel,
    SqsRecordModel,
)
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

log = logging.getLogger(__name__)

NAME_MAX = 80  # Step Functions' longest execution name
HASH_CHARS = 20  # 80 bits of SHA-256: no two object versions share a name
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# Clock difference tolerated between this function and Step Functions.
IDEMPOTENT_SLACK = timedelta(seconds=5)
# StartExecution errors that mean "not now" (the message comes back later), not "never".
_TRANSIENT = {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailable", "InternalFailure"}


def execution_name(bucket: str, key: str, version: str) -> str:
    """``<readable file stem>-<hash of bucket, key and version>``: at most 80 characters of
    ``[A-Za-z0-9_-]`` (what Step Functions accepts everywhere, logs included), the same for the
    same object version, different for any other."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{version}".encode()).hexdigest()[:HASH_CHARS]
    stem = key.rsplit("/", 1)[-1]
    stem = stem[: -len(".nwb")] if stem.lower().endswith(".nwb") else stem
    stem = _UNSAFE.sub("-", stem).strip("-_")[: NAME_MAX - HASH_CHARS - 1]
    return f"{stem}-{digest}" if stem else digest


class QueueRecord(SqsRecordModel):
    """One record of the SQS event the Starter receives (Powertools' SQS model). Its body, an
    EventBridge S3 "Object Created" event, stays the text it came as: it becomes the execution's
    input, and a body that is no such event goes to the dead-letter queue alone (the other
    records of the batch are admitted as usual)."""

    body: str


class QueueEvent(SqsModel):
    """The Starter's event: a batch of records of the admission queue."""

    Records: Sequence[QueueRecord]


class ObjectVersion(BaseModel):
    """The object version an "Object Created" event names (``version`` is the version id, or the
    event's sequencer in an unversioned bucket: unique per PUT of the key)."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version: str

    @classmethod
    def from_event(cls, body: str) -> ObjectVersion:
        event = S3EventNotificationEventBridgeModel.model_validate_json(body)
        if event.source != "aws.s3" or event.detail_type != "Object Created":
            raise ValueError(f"not an S3 Object Created event ({event.source} / {event.detail_type})")
        obj = event.detail.object
        version = obj.version_id or obj.sequencer or obj.etag or ""
        return cls(bucket=event.detail.bucket.name, key=obj.key, version=version)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class Admission:
    """What one batch of messages came to."""

    started: list[str] = field(default_factory=list)  # execution names
    duplicates: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # message ids left on the queue
    rejected: list[str] = field(default_factory=list)  # message ids sent to the dead-letter queue
    running: int = 0  # executions running before this batch

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The SQS event source's partial batch response: the deferred messages come back."""
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.deferred]}


def admission_cap(max_running: int, writers_reserved: int, write_concurrency: int) -> int:
    """Executions that may run at once: their maps together fit in the writers' reserved concurrency."""
    return max(1, min(max_running, writers_reserved // write_concurrency))


def count_running(sfn: SFNClient, state_machine_arn: str, limit: int) -> int:
    """Running executions of the state machine, counted up to ``limit`` (the cap: no need for more).

    ListExecutions lists the state machine's own executions; a Distributed Map's child executions
    belong to its map run and are not listed here.
    """
    count = 0
    pages = sfn.get_paginator("list_executions").paginate(
        stateMachineArn=state_machine_arn, statusFilter="RUNNING", PaginationConfig={"PageSize": min(1000, limit)}
    )
    for page in pages:
        count += len(page.get("executions", []))
        if count >= limit:
            break
    return min(count, limit)


def _queue_url(sqs: SQSClient, arn: str) -> str:
    _, _, _, _, account, name = arn.split(":", 5)
    return sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]


def admit(
    sfn: SFNClient,
    sqs: SQSClient,
    messages: Sequence[QueueRecord],
    *,
    state_machine_arn: str,
    cap: int,
    retry_seconds: int,
    dead_letter_queue_url: str = "",
    rng: random.Random | None = None,
) -> Admission:
    """Start an execution for each message's object version while fewer than ``cap`` run.

    Returns what became of each message; :meth:`Admission.response` is the handler's answer.
    """
    rng = rng or random.Random()
    result = Admission(running=count_running(sfn, state_machine_arn, cap))
    running = result.running
    for message in messages:
        try:
            obj = ObjectVersion.from_event(message.body)
        except (ValidationError, ValueError) as exc:
            _reject(sqs, message, str(exc).splitlines()[0][:300], dead_letter_queue_url, result)
            continue
        if running >= cap:
            result.deferred.append(message.messageId)
            continue
        if _start(sfn, state_machine_arn, message, obj, result):
            running += 1
    if result.deferred:
        _postpone(sqs, messages, result.deferred, retry_seconds, rng)
    return result


def _reject(sqs: SQSClient, message: QueueRecord, reason: str, dead_letter_queue_url: str, result: Admission) -> None:
    """A message that is no S3 Object Created event goes to the dead-letter queue at once."""
    log.error("message %s is no S3 Object Created event (%s): sent to the dead-letter queue", message.messageId, reason)
    if not dead_letter_queue_url:
        result.deferred.append(message.messageId)  # the queue's own redrive takes it there
        return
    sqs.send_message(QueueUrl=dead_letter_queue_url, MessageBody=message.body)
    result.rejected.append(message.messageId)


def _start(sfn: SFNClient, state_machine_arn: str, message: QueueRecord, obj: ObjectVersion, result: Admission) -> bool:
    """Start the execution of ``obj``; True when it started (not a duplicate, not deferred)."""
    name = execution_name(obj.bucket, obj.key, obj.version)
    asked = datetime.now(UTC)
    try:
        answer = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=message.body)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ExecutionAlreadyExists":
            log.info("duplicate event for %s (version %s): execution %s exists; dropped", obj.uri, obj.version, name)
            result.duplicates.append(name)
            return False
        if code == "ExecutionLimitExceeded" or code in _TRANSIENT:
            log.warning("cannot start %s now (%s): it stays on the queue", obj.uri, code)
            result.deferred.append(message.messageId)
            return False
        raise
    # An identical input while that execution runs: StartExecution is idempotent and answers
    # with the running execution (started before this call).
    started_at = answer.get("startDate")
    if name in result.started or (isinstance(started_at, datetime) and started_at < asked - IDEMPOTENT_SLACK):
        log.info("duplicate event for %s (version %s): execution %s is running; dropped", obj.uri, obj.version, name)
        result.duplicates.append(name)
        return False
    result.started.append(name)
    log.info("started %s for %s (version %s)", name, obj.uri, obj.version)
    return True


def _postpone(
    sqs: SQSClient, messages: Sequence[QueueRecord], ids: list[str], seconds: int, rng: random.Random
) -> None:
    """Hide the deferred messages for ``seconds`` (± 25 %, so a burst does not come back at once).
    If this fails they still come back, after the queue's own visibility timeout."""
    by_id = {m.messageId: m for m in messages}
    urls: dict[str, str] = {}
    for message_id in ids:
        message = by_id[message_id]
        try:
            url = urls.setdefault(message.eventSourceARN, _queue_url(sqs, message.eventSourceARN))
            timeout = min(43_200, max(0, round(seconds * rng.uniform(0.75, 1.25))))
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message.receiptHandle, VisibilityTimeout=timeout)
        except ClientError as exc:
            log.warning(
                "could not postpone message %s (%s); it returns after the queue's visibility timeout", message_id, exc
            )
