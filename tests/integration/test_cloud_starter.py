"""The Starter under moto, without the state machine running: what becomes of each queued event
(started, sent again, dropped, dead-lettered), keys as S3 sends them, and the admission slots."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest

from functions.starter import app as starter_app
from nwb2pennsieve.cloud.admission import execution_name
from nwb2pennsieve.cloud.slots import Slot, Slots
from statemachine.render import load_template, template_refs
from tests.admission_harness import configure_starter, create_admission, object_created, sqs_event
from tests.cloud_fixtures import INPUT_BUCKET, OUTPUT_BUCKET, REGION, FakeLambdaContext, load_event
from tests.moto_shims import atomic_transactions


@pytest.fixture
def queue(s3: Any, cloud_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The admission queues and slots table of template.yaml, a state machine, the Starter's clients."""
    sqs = boto3.client("sqs", region_name=REGION)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    template = load_template()
    url, arn, dead, table = create_admission(sqs, template, template_refs(template))
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    role = "arn:aws:iam::123456789012:role/test"
    machine = sfn.create_state_machine(name="test-conversion", definition=definition, roleArn=role)
    for attr, client in (
        ("sfn", sfn),
        ("sqs", sqs),
        ("s3", s3),
        ("dynamodb", boto3.client("dynamodb", region_name=REGION)),
    ):
        monkeypatch.setattr(starter_app, attr, client)
    starter_app._slots.clear()
    configure_starter(monkeypatch, machine["stateMachineArn"], url, dead, table)
    monkeypatch.setenv("MAX_RUNNING_EXECUTIONS", "1")
    return {
        "sqs": sqs,
        "sfn": sfn,
        "url": url,
        "arn": arn,
        "dead": dead,
        "table": table,
        "machine": machine["stateMachineArn"],
    }


def deliver(queue: dict[str, Any], *events: dict[str, Any], attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """``events`` through the queue to the Starter, as the event source hands them over; its answer."""
    for event in events:
        queue["sqs"].send_message(
            QueueUrl=queue["url"], MessageBody=json.dumps(event), MessageAttributes=attributes or {}
        )
    got = queue["sqs"].receive_message(
        QueueUrl=queue["url"],
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )["Messages"]
    answer = starter_app.lambda_handler(sqs_event(got, queue["arn"]), FakeLambdaContext("StarterFunction"))
    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    for m in got:
        if m["MessageId"] not in failed:
            queue["sqs"].delete_message(QueueUrl=queue["url"], ReceiptHandle=m["ReceiptHandle"])
    return dict(answer)


def executions(queue: dict[str, Any]) -> list[dict[str, Any]]:
    found = queue["sfn"].list_executions(stateMachineArn=queue["machine"])["executions"]
    return [queue["sfn"].describe_execution(executionArn=e["executionArn"]) | {"name": e["name"]} for e in found]


def upload(s3: Any, key: str, body: bytes = b"nwb", bucket: str = INPUT_BUCKET) -> dict[str, Any]:
    put = s3.put_object(Bucket=bucket, Key=key, Body=body)
    return object_created(bucket, key, put.get("VersionId"), etag=put["ETag"], sequencer=f"{abs(hash(body)):016X}")


def waiting(queue: dict[str, Any], url: str | None = None, *, seconds: float = 6.0) -> list[dict[str, Any]]:
    """Every message that becomes receivable on the queue within ``seconds`` (delayed ones, and
    ones back after the visibility timeout, scaled here to 4 s), each received once."""
    deadline = time.monotonic() + seconds
    out: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        out.extend(
            queue["sqs"]
            .receive_message(
                QueueUrl=url or queue["url"],
                MaxNumberOfMessages=10,
                VisibilityTimeout=600,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            .get("Messages", [])
        )
        time.sleep(0.2)
    return out


def test_a_message_over_the_cap_is_sent_again_with_a_delay_not_hidden(queue: dict[str, Any], s3: Any) -> None:
    """Item 2: a deferral used to be a receive of the same message (hidden by ChangeMessageVisibility,
    reported as a batch item failure): 1,000 files x 300 s reached maxReceiveCount in ~83 h. Now the
    message is sent again with a delay and the original deleted: its receives start again."""
    first, second = upload(s3, "incoming/a.nwb"), upload(s3, "incoming/b.nwb", b"other")
    answer = deliver(queue, first, second)

    assert answer == {"batchItemFailures": []}  # nothing is received again: the deferred one is a new message
    (started,) = executions(queue)
    obj = first["detail"]["object"]
    assert started["name"] == execution_name(INPUT_BUCKET, obj["key"], obj["version-id"])
    assert json.loads(started["input"]) == {"bucket": INPUT_BUCKET, "key": obj["key"], "versionId": obj["version-id"]}
    (again,) = waiting(queue)
    assert json.loads(again["Body"]) == second
    assert again["Attributes"]["ApproximateReceiveCount"] == "1"
    assert again["MessageAttributes"]["deferrals"]["StringValue"] == "1"
    assert int(again["MessageAttributes"]["first-seen"]["StringValue"]) > 0


def test_the_starter_with_its_event(queue: dict[str, Any], s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """events/starter.json (two object versions) with their objects in S3: both start, once."""
    monkeypatch.setenv("MAX_RUNNING_EXECUTIONS", "5")
    event = load_event("starter.json")
    bodies = []
    for record in event["Records"]:
        body = json.loads(record["body"])
        obj = body["detail"]["object"]
        put = s3.put_object(Bucket=INPUT_BUCKET, Key=obj["key"], Body=b"nwb")
        obj.update({"version-id": put["VersionId"], "etag": put["ETag"].strip('"')})
        body["time"] = object_created(INPUT_BUCKET, "x.nwb", None)["time"]
        bodies.append(body)
    assert deliver(queue, *bodies) == {"batchItemFailures": []}
    assert deliver(queue, *bodies) == {"batchItemFailures": []}  # delivered again: duplicates
    assert sorted(e["name"] for e in executions(queue)) == sorted(
        execution_name(INPUT_BUCKET, b["detail"]["object"]["key"], b["detail"]["object"]["version-id"]) for b in bodies
    )


KEYS = ["incoming/a b.nwb", "incoming/a+b.nwb", "incoming/100%.nwb", "incoming/ü/ß é.nwb", "incoming/x%2By.nwb"]


@pytest.mark.parametrize("key", KEYS)
def test_raw_and_encoded_deliveries_of_one_upload_start_one_execution_on_the_real_key(
    queue: dict[str, Any], s3: Any, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """Item 7: AWS documents S3's own notifications as form-encoded and says nothing of EventBridge's:
    both forms resolve (by the version the event names) to the key as stored, and one name."""
    monkeypatch.setenv("MAX_RUNNING_EXECUTIONS", "5")
    for other in KEYS:  # every look-alike exists too: the version tells them apart
        if other != key:
            upload(s3, other, b"another file")
    raw = upload(s3, key)
    encoded = json.loads(json.dumps(raw))
    encoded["detail"]["object"]["key"] = quote_plus(key, safe="/")
    assert encoded["detail"]["object"]["key"] != key
    deliver(queue, raw, encoded)
    deliver(queue, encoded)
    (started,) = executions(queue)
    assert json.loads(started["input"])["key"] == key
    assert started["name"] == execution_name(INPUT_BUCKET, key, raw["detail"]["object"]["version-id"])


def test_a_suspended_bucket_converts_each_upload_not_one_null_version(
    queue: dict[str, Any], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 7: every upload to a versioning-suspended bucket has the version id "null": it names
    nothing. The sequencer names the upload, the ETag pins it; an overwritten upload starts nothing."""
    monkeypatch.setenv("MAX_RUNNING_EXECUTIONS", "5")
    bucket = "nwb2pennsieve-suspended"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    first = upload(s3, "incoming/s.nwb", b"first upload", bucket=bucket)
    deliver(queue, first)
    second = upload(s3, "incoming/s.nwb", b"second upload", bucket=bucket)
    deliver(queue, second, first)  # and the first's event again, late: overwritten, nothing to do
    names = [e["name"] for e in executions(queue)]
    assert len(names) == 2 and len(set(names)) == 2
    inputs = [json.loads(e["input"]) for e in executions(queue)]
    assert all("versionId" not in i for i in inputs)
    assert sorted(i["etag"] for i in inputs) == sorted(e["detail"]["object"]["etag"] for e in (first, second))


def test_an_old_version_or_a_deleted_object_starts_nothing(
    queue: dict[str, Any], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_RUNNING_EXECUTIONS", "5")
    old = upload(s3, "incoming/v.nwb", b"one")
    upload(s3, "incoming/v.nwb", b"two")
    gone = upload(s3, "incoming/gone.nwb")
    s3.delete_object(Bucket=INPUT_BUCKET, Key="incoming/gone.nwb")
    assert deliver(queue, old, gone) == {"batchItemFailures": []}
    assert executions(queue) == [] and waiting(queue) == []


def test_a_file_that_waited_too_long_goes_to_the_dead_letter_queue_with_its_reason(
    queue: dict[str, Any], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMISSION_MAX_WAIT_HOURS", "1")
    long_ago = {"first-seen": {"DataType": "Number", "StringValue": str(int(time.time()) - 7200)}}
    deliver(queue, upload(s3, "incoming/late.nwb"), attributes=long_ago)
    (dead,) = waiting(queue, queue["dead"])
    assert "waited 2 h for an admission slot" in dead["MessageAttributes"]["reason"]["StringValue"]
    assert "first-seen" not in dead["MessageAttributes"]  # moved back once fixed, it waits afresh
    assert executions(queue) == []


def test_a_record_whose_handling_fails_comes_back_alone(
    queue: dict[str, Any], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A junk message goes to the dead-letter queue; a record the Starter could not handle (here S3
    refuses the version listing) is the only batch item failure, and counts one receive."""
    monkeypatch.setenv("MAX_RUNNING_EXECUTIONS", "5")
    good = upload(s3, "incoming/good.nwb")
    denied = object_created("someone-elses-bucket", "incoming/x.nwb", "v1")
    junk = {"detail-type": "Something Else", "source": "aws.s3"}
    answer = deliver(queue, good, denied, junk)
    (failure,) = answer["batchItemFailures"]
    (back,) = waiting(queue)
    assert back["MessageId"] == failure["itemIdentifier"] and json.loads(back["Body"]) == denied
    (dead,) = waiting(queue, queue["dead"])
    assert json.loads(dead["Body"]) == junk
    assert [e["name"] for e in executions(queue)] == [
        execution_name(INPUT_BUCKET, "incoming/good.nwb", good["detail"]["object"]["version-id"])
    ]


# --- the admission slots ----------------------------------------------------------------------


@pytest.fixture
def slots(queue: dict[str, Any]) -> Slots:
    return Slots(boto3.client("dynamodb", region_name=REGION), queue["table"])


def test_two_starters_racing_for_the_slots_never_exceed_the_cap(slots: Slots) -> None:
    """Item 3: eight threads (Starters) ask for slots at the very same moment, 3 times each: exactly
    the cap is granted. Counting running executions instead (eventually consistent, and both count
    before either starts) let each start up to the cap."""
    barrier = threading.Barrier(8)
    granted: list[str] = []
    lock = threading.Lock()

    def starter(i: int) -> None:
        for j in range(3):
            barrier.wait()
            if slots.acquire(f"file-{i}-{j}", 5) is Slot.ACQUIRED:
                with lock:
                    granted.append(f"file-{i}-{j}")

    with atomic_transactions():
        threads = [threading.Thread(target=starter, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(granted) == 5 == slots.in_use() == len(slots.held())


def test_a_slot_is_given_back_once_and_a_duplicate_holds_none(slots: Slots) -> None:
    assert slots.acquire("a", 2) is Slot.ACQUIRED
    assert slots.acquire("a", 2) is Slot.HELD  # the same execution again (a duplicate delivery)
    assert slots.acquire("b", 2) is Slot.ACQUIRED
    assert slots.acquire("c", 2) is Slot.FULL
    assert slots.release("a") and not slots.release("a")  # an end event delivered twice
    assert slots.in_use() == 1
    assert slots.hold("d") and not slots.hold("d")  # started by hand, or redriven: counted whatever the cap
    assert slots.in_use() == 2 and slots.acquire("e", 2) is Slot.FULL


def test_a_slot_whose_execution_is_not_running_is_reconciled(queue: dict[str, Any], slots: Slots) -> None:
    """A Starter that died between taking the slot and starting, or an end event lost: after the
    grace time the slot goes back; a running execution keeps its slot."""
    sfn = queue["sfn"]
    wait = json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 2, "End": True}}})
    machine = sfn.create_state_machine(name="waits", definition=wait, roleArn="arn:aws:iam::123456789012:role/test")[
        "stateMachineArn"
    ]
    sfn.start_execution(stateMachineArn=machine, name="running")
    now = [1_000_000.0]
    slots.clock = lambda: now[0]
    for name in ("running", "never-started"):
        assert slots.acquire(name, 5) is Slot.ACQUIRED
    assert slots.reconcile(sfn, machine) == []  # younger than the grace time
    now[0] += 3600
    assert slots.reconcile(sfn, machine) == ["never-started"]
    assert set(slots.held()) == {"running"} and slots.in_use() == 1
    execution = machine.replace(":stateMachine:", ":execution:") + ":running"
    while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":  # it ends; its end event is lost
        time.sleep(0.1)
    now[0] += 61
    got = slots.reconcile(sfn, machine)
    assert got == ["running"]


def test_status_changes_give_slots_back(queue: dict[str, Any], s3: Any, slots: Slots) -> None:
    deliver(queue, upload(s3, "incoming/a.nwb"))
    (started,) = executions(queue)
    change = {"detail-type": "Step Functions Execution Status Change", "source": "aws.states"}
    detail = {"name": started["name"], "executionArn": started["executionArn"]}
    for status, answer in (("RUNNING", "already held"), ("SUCCEEDED", "released"), ("SUCCEEDED", "not held")):
        event = change | {"detail": detail | {"status": status}}
        assert starter_app.lambda_handler(event, FakeLambdaContext("StarterFunction")) == {"slot": answer}
    assert slots.in_use() == 0
    assert OUTPUT_BUCKET  # nothing of the output is touched by admission
