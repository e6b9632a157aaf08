"""Admission: start conversions at the rate the account can carry, and lose no file (the Starter).

S3 "Object Created" events reach an SQS queue (the admission queue) through an EventBridge rule;
the Starter reads them in small batches (SQS event source, ``ReportBatchItemFailures``). For each:

1. the event's object version is **resolved** against S3 (:func:`resolve`): its key as sent or
   form-decoded (AWS does not document whether EventBridge encodes keys), its version id, or for an
   object without one (version ``null``) its ETag. A version that is no longer the latest, or an
   object that is gone, starts nothing (the newer version's own event converts it);
2. the execution is **named** after bucket, resolved key and version (:func:`execution_name`), so
   every delivery of one upload, raw or encoded, has one name;
3. it takes an **admission slot** (:mod:`.slots`, an exact semaphore): then the execution starts.
   A duplicate (its slot is held, or the execution exists) starts nothing. At the cap the message
   is **sent again** with a delay of ``ADMISSION_RETRY_SECONDS`` (± 25 %, at most SQS's 15 minutes)
   and the original is deleted: a deferral is a new message, so it never counts towards the
   queue's ``maxReceiveCount`` and never reaches the queue's retention. A message that waited
   longer than ``ADMISSION_MAX_WAIT_HOURS`` since the Starter first saw it goes to the dead-letter
   queue (whose depth and age raise alarms), with its reason; so does a message that is no S3 event.

Only a record whose handling failed (SQS, DynamoDB or S3 refusing) is reported as a batch item
failure: it comes back after the queue's visibility timeout, and after 5 such receives it goes to
the dead-letter queue. The slots are given back on the conversion's status-change events
(:func:`on_status_change`).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models import (
    S3EventNotificationEventBridgeModel,
    SqsModel,
    SqsRecordModel,
)
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..source.s3 import key_versions, no_version
from .models import bare_etag
from .slots import Slot, Slots, execution_arn

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

log = logging.getLogger(__name__)

NAME_MAX = 80  # Step Functions' longest execution name
HASH_CHARS = 20  # 80 bits of SHA-256: no two object versions share a name
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# Clock difference tolerated between this function and Step Functions.
IDEMPOTENT_SLACK_SECONDS = 5
# StartExecution errors that mean "not now" (the message is sent again), not "never".
_TRANSIENT = {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailable", "InternalFailure"}
MAX_DELAY_SECONDS = 900  # SQS's longest per-message delay
FIRST_SEEN = "first-seen"  # message attribute: when the upload was first seen (epoch seconds)
DEFERRALS = "deferrals"  # message attribute: how often it was sent again
REASON = "reason"  # message attribute of what goes to the dead-letter queue
STATUS_CHANGE = "Step Functions Execution Status Change"
ENDED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


# The share of the writers' concurrency the admitted maps may ask for together: the rest is
# headroom for Plan, Finalize and the uploaders, and for a moment of overlap.
WRITERS_HEADROOM = 0.8


def admission_cap(max_running: int, writers_reserved: int, write_concurrency: int) -> int:
    """Executions that may run at once: ``max_running``; with a writers' reserve (> 0), also no
    more than fit in 80 % of it (never fewer than one: a file still converts, its writers wait)."""
    if writers_reserved <= 0:
        return max_running
    return max(1, min(max_running, int(WRITERS_HEADROOM * writers_reserved) // write_concurrency))


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
    EventBridge S3 "Object Created" event, stays the text it came as: a deferred message is sent
    again as it is, and a body that is no such event goes to the dead-letter queue alone."""

    body: str


class QueueEvent(SqsModel):
    """The Starter's event: a batch of records of the admission queue."""

    Records: Sequence[QueueRecord]


class ObjectVersion(BaseModel):
    """The object version an "Object Created" event names: ``version`` is its version id (None for
    ``null``: an unversioned or versioning-suspended bucket), ``etag`` its content, ``sequencer``
    unique per PUT of the key."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version: str | None = None
    etag: str | None = None
    sequencer: str | None = None
    time: datetime | None = None

    @classmethod
    def from_event(cls, body: str) -> ObjectVersion:
        event = S3EventNotificationEventBridgeModel.model_validate_json(body)
        if event.source != "aws.s3" or event.detail_type != "Object Created":
            raise ValueError(f"not an S3 Object Created event ({event.source} / {event.detail_type})")
        obj = event.detail.object
        return cls(
            bucket=event.detail.bucket.name,
            key=obj.key,
            version=no_version(obj.version_id),
            etag=bare_etag(obj.etag),
            sequencer=obj.sequencer or None,
            time=event.time,
        )

    @property
    def identity(self) -> str:
        """What names this upload: the version id, else the sequencer (unique per PUT), else the ETag."""
        return self.version or self.sequencer or self.etag or ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


Found = Literal["latest", "superseded", "gone"]


def resolve(s3: S3Client, obj: ObjectVersion) -> tuple[str, Found]:
    """The key the event's object version has in S3, and whether that version is still the latest.

    The key is tried as sent and form-decoded (``a+b%C3%BC.nwb`` -> ``a bü.nwb``); the one that has
    the event's version (by version id, else by ETag) is it. ``gone``: neither has it, or a delete
    marker is on top.
    """
    candidates = list(dict.fromkeys([obj.key, unquote_plus(obj.key)]))
    found: list[tuple[str, Found]] = []
    for key in candidates:
        state = _version_state(s3, obj, key)
        if state is not None:
            found.append((key, state))
    if not found:
        return obj.key, "gone"
    if len(found) > 1:
        log.warning("both %r and %r hold the version of %s: the key as sent is taken", *candidates, obj.uri)
    elif found[0][0] != obj.key:
        # What the deploy drill looks for (docs/deploy.md): AWS does not document EventBridge's form.
        log.info("the event's key %r is form-encoded: the object is %r", obj.key, found[0][0])
    return found[0]


def _version_state(s3: S3Client, obj: ObjectVersion, key: str) -> Found | None:
    """``latest``/``superseded``/``gone`` for the event's version under ``key``; None when ``key`` has it not."""
    versions, on_top = key_versions(s3, obj.bucket, key)

    def same(entry: dict[str, Any]) -> bool:
        if obj.version:
            return no_version(entry.get("VersionId")) == obj.version
        return obj.etag is None or bare_etag(entry.get("ETag")) == obj.etag

    if not any(same(v) for v in versions):
        return None
    if on_top is None or "ETag" not in on_top:
        return "gone"  # a delete marker on top
    return "latest" if same(on_top) else "superseded"


@dataclass
class Admission:
    """What one batch of messages came to (execution names, or message ids)."""

    started: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # sent again with a delay
    superseded: list[str] = field(default_factory=list)  # events of replaced versions: nothing to do
    gone: list[str] = field(default_factory=list)  # the object (or that version) no longer exists
    rejected: list[str] = field(default_factory=list)  # to the dead-letter queue (no S3 event, waited too long)
    failed: list[str] = field(default_factory=list)  # come back after the visibility timeout
    waited: float = 0.0  # the longest time since its upload of an event in this batch (seconds)

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The SQS event source's partial batch response: only the records whose handling failed."""
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed]}


@dataclass
class Starter:
    """The Starter's clients and settings (:mod:`functions.starter` builds one per invocation)."""

    sfn: SFNClient
    sqs: SQSClient
    s3: S3Client
    slots: Slots
    state_machine_arn: str
    cap: int
    admission_queue_url: str
    dead_letter_queue_url: str
    retry_seconds: int = 300
    max_wait_hours: float = 168
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.time

    def admit(self, records: Sequence[QueueRecord]) -> Admission:
        """Start, defer, drop or reject each record; :meth:`Admission.response` is the answer."""
        result = Admission()
        for record in records:
            try:
                self._admit_one(record, result)
            except Exception:
                log.exception("message %s could not be handled: it comes back later", record.messageId)
                result.failed.append(record.messageId)
        return result

    def _admit_one(self, record: QueueRecord, result: Admission) -> None:
        try:
            obj = ObjectVersion.from_event(record.body)
        except (ValidationError, ValueError) as exc:
            self._reject(record, f"no S3 Object Created event: {str(exc).splitlines()[0][:300]}", result)
            return
        key, found = resolve(self.s3, obj)
        if found != "latest":
            log.info("%s (%s) is %s: nothing to start", obj.uri, obj.identity, found)
            (result.superseded if found == "superseded" else result.gone).append(record.messageId)
            return
        now = self.clock()
        if obj.time is not None:
            result.waited = max(result.waited, now - obj.time.timestamp())
        given = _attribute(record, FIRST_SEEN)
        first_seen = float(given) if given is not None else now
        if now - first_seen > self.max_wait_hours * 3600:
            waited = (now - first_seen) / 3600
            self._reject(record, f"waited {waited:.0f} h for an admission slot (ADMISSION_MAX_WAIT_HOURS)", result)
            return
        name = execution_name(obj.bucket, key, obj.identity)
        slot = self.slots.acquire(name, self.cap, bucket=obj.bucket, key=key)
        if slot is Slot.FULL and self.slots.reconcile(self.sfn, self.state_machine_arn):
            slot = self.slots.acquire(name, self.cap, bucket=obj.bucket, key=key)
        if slot is Slot.FULL:
            self._defer(record, first_seen, result)
            return
        if slot is Slot.HELD and self._exists(name):  # a duplicate of an execution that started
            log.info("duplicate event: execution %s holds its slot; dropped", name)
            result.duplicates.append(name)
            return
        # Held but not started: the Starter that took the slot died before starting it, or is
        # starting it right now (then one of the two starts is refused or answered as a duplicate).
        self._start(record, name, _execution_input(obj, key), slot, first_seen, result)

    def _exists(self, name: str) -> bool:
        try:
            self.sfn.describe_execution(executionArn=execution_arn(self.state_machine_arn, name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return False
            raise
        return True

    def _start(
        self, record: QueueRecord, name: str, execution_input: str, slot: Slot, first_seen: float, result: Admission
    ) -> None:
        """Start execution ``name`` on its slot (acquired now, or held by an earlier delivery)."""
        asked = self.clock()
        try:
            answer = self.sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name, input=execution_input)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ExecutionAlreadyExists":
                if slot is Slot.ACQUIRED:  # that execution ran already: the slot just taken is not its
                    self.slots.release(name)
                log.info("duplicate event: execution %s exists; dropped", name)
                result.duplicates.append(name)
                return
            if code == "ExecutionLimitExceeded" or code in _TRANSIENT:
                if slot is Slot.ACQUIRED:
                    self.slots.release(name)
                log.warning("cannot start %s now (%s): sent again", name, code)
                self._defer(record, first_seen, result)
                return
            raise
        # An identical input while that execution runs: StartExecution is idempotent and answers
        # with the running execution (started before this call).
        started_at = answer.get("startDate")
        if isinstance(started_at, datetime) and started_at.timestamp() < asked - IDEMPOTENT_SLACK_SECONDS:
            log.info("duplicate event: execution %s is running; dropped", name)
            result.duplicates.append(name)
            return
        result.started.append(name)
        log.info("started %s", name)

    def _defer(self, record: QueueRecord, first_seen: float, result: Admission) -> None:
        """Send the message again, delayed (a new message: its receives and retention start afresh)."""
        delay = min(MAX_DELAY_SECONDS, max(0, round(self.retry_seconds * self.rng.uniform(0.75, 1.25))))
        deferrals = int(_attribute(record, DEFERRALS) or 0) + 1
        self.sqs.send_message(
            QueueUrl=self.admission_queue_url,
            MessageBody=record.body,
            DelaySeconds=delay,
            MessageAttributes={
                FIRST_SEEN: {"DataType": "Number", "StringValue": str(int(first_seen))},
                DEFERRALS: {"DataType": "Number", "StringValue": str(deferrals)},
            },
        )
        result.deferred.append(record.messageId)

    def _reject(self, record: QueueRecord, reason: str, result: Admission) -> None:
        """To the dead-letter queue at once, with its reason (the queue's alarms tell someone).
        Without its first-seen time: moved back to the admission queue once the cause is fixed
        (SQS's DLQ redrive), it waits afresh."""
        log.error("message %s goes to the dead-letter queue: %s", record.messageId, reason)
        self.sqs.send_message(
            QueueUrl=self.dead_letter_queue_url,
            MessageBody=record.body,
            MessageAttributes={REASON: {"DataType": "String", "StringValue": reason}},
        )
        result.rejected.append(record.messageId)


def _attribute(record: QueueRecord, name: str) -> str | None:
    attribute = (record.messageAttributes or {}).get(name)
    return attribute.stringValue if attribute is not None else None


def _execution_input(obj: ObjectVersion, key: str) -> str:
    """The execution's input, the same for every delivery of one upload (Plan reads this shape)."""
    pinned: dict[str, str] = {"bucket": obj.bucket, "key": key}
    if obj.version:
        pinned["versionId"] = obj.version
    elif obj.etag:
        pinned["etag"] = obj.etag
    return StartInput.model_validate(pinned).model_dump_json(by_alias=True, exclude_none=True)


class StartInput(BaseModel):
    """What the Starter starts an execution with (the by-hand shape of Plan's input)."""

    model_config = ConfigDict(populate_by_name=True)

    bucket: str
    key: str
    version_id: str | None = Field(default=None, alias="versionId")
    etag: str | None = None


class StatusChange(BaseModel):
    """The part of a "Step Functions Execution Status Change" event the Starter reads."""

    model_config = ConfigDict(extra="ignore")

    name: str
    status: str
    execution_arn: str = Field(alias="executionArn")


def on_status_change(slots: Slots, event: dict[str, Any]) -> str:
    """Give back the slot of a conversion that ended; hold one for a conversion running without
    (started by hand, or redriven). Returns what was done."""
    change = StatusChange.model_validate(event["detail"])
    if change.status in ENDED:
        return "released" if slots.release(change.name) else "not held"
    if change.status == "RUNNING":
        return "held" if slots.hold(change.name) else "already held"
    return "ignored"
