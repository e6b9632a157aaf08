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

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from functions.starter import app as starter_app
from tests.admission_harness import AdmissionHarness, LambdaCaps, barrier_on_first_starts
from tests.admission_harness import object_created as harness_event
from tests.cloud_fixtures import INPUT_BUCKET, OUTPUT_BUCKET, Stack, make_nwb
from tests.expected import differing_objects
from tests.moto_shims import atomic_transactions

# moto sleeps each Retry interval: here 1,000 times shorter.
pytestmark = pytest.mark.usefixtures("quick_retry_waits")


def concurrency_cap(monkeypatch: pytest.MonkeyPatch, cap: int) -> LambdaCaps:
    """At most ``cap`` Lambda invocations at once in the account; the others are throttled."""
    return LambdaCaps(account=cap).install(monkeypatch)


def object_created(key: str, version: str) -> dict[str, Any]:
    return harness_event(INPUT_BUCKET, key, version)


SMALL = {"CHUNK_SIZE_MB": "0.05", "MAX_ITEM_MB": "0.1", "BATCH_MB": "0.1"}


def upload_small(stack: Stack, admission: AdmissionHarness, tmp_path: Path, key: str, seed: int) -> None:
    path = make_nwb(tmp_path / f"{seed}.nwb", channels=4, samples=6_000, second_series=False, seed=seed)
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=path.read_bytes())["VersionId"]
    admission.send(object_created(key, version))


def test_a_burst_under_a_lambda_concurrency_cap_queues_and_every_file_converts(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in SMALL.items():
        monkeypatch.setenv(k, v)
    seen = concurrency_cap(monkeypatch, cap=2)
    admission = AdmissionHarness(stack, monkeypatch, max_running=2)
    keys = [f"incoming/burst-{i}.nwb" for i in range(5)]
    for i, key in enumerate(keys):
        path = make_nwb(tmp_path / f"{i}.nwb", channels=4, samples=12_000, second_series=False, seed=i)
        version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=path.read_bytes())["VersionId"]
        admission.send(object_created(key, version))

    with atomic_transactions():
        admission.run(starters=1)

    executions = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    assert len(executions) == len(keys)
    for e in executions:
        desc = stack.sfn.describe_execution(executionArn=e["executionArn"])
        assert desc["status"] == "SUCCEEDED", desc.get("cause")
    for key in keys:
        names = stack.published(key)
        assert any(n.endswith(".metadata.json") for n in names) and any(n.endswith(".bin.gz") for n in names)
    assert seen.peak_account <= 2
    assert sum(seen.throttled.values()) > 0  # the cap was really hit, and waited out
    # Files were held back while both slots were taken: sent again, never received again.
    assert len(admission.receives) > len(keys) and max(r.count for r in admission.receives) == 1
    assert admission.depth(admission.dead_letter_url) == 0


def test_the_same_event_twice_starts_one_conversion(
    stack: Stack, example_nwb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admission = AdmissionHarness(stack, monkeypatch, max_running=5)
    key = "incoming/sub-01_ses-01.nwb"
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=example_nwb.read_bytes())["VersionId"]
    event = object_created(key, version)
    admission.send(event)
    admission.send(event)  # S3 and EventBridge deliver at least once
    admission.run()
    first = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    admission.send(dict(event, id="another-delivery-id"))  # a late duplicate with another event id
    admission.run()
    executions = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]

    assert len(first) == len(executions) == 1
    assert executions[0]["status"] == "SUCCEEDED"
    assert [f for f, _ in stack.invocations].count("PlanFunction") == 1
    assert [f for f, _ in stack.invocations].count("FinalizeFunction") == 1


def test_a_file_waiting_through_many_deferrals_is_never_dead_lettered(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2: one slot, held by a slow conversion; a second file is deferred again and again. Each
    deferral used to be one more receive of the same message (at the deployed maxReceiveCount of
    1,000 and 300 s, the dead-letter queue after ~83 h). Now every receive is a first one, and the
    queue's real maxReceiveCount (template.yaml) is never approached."""
    from functions.finalize import app as finalize_app

    real = finalize_app.finalize

    def finalize_slowly(s3: Any, request: Any, **kw: Any) -> Any:
        if request.source.key == "incoming/slow.nwb":
            time.sleep(6)  # holds the only slot while the other file is deferred
        return real(s3, request, **kw)

    monkeypatch.setattr(finalize_app, "finalize", finalize_slowly)
    for k, v in SMALL.items():
        monkeypatch.setenv(k, v)
    admission = AdmissionHarness(stack, monkeypatch, max_running=1)
    upload_small(stack, admission, tmp_path, "incoming/slow.nwb", 0)
    with atomic_transactions():
        admission.poll()  # the slow one takes the slot first
        upload_small(stack, admission, tmp_path, "incoming/waiting.nwb", 1)
        admission.run(starters=1)

    waited = [r for r in admission.receives if r.identity == "incoming/waiting.nwb"]
    redrive = stack.template["Resources"]["AdmissionQueue"]["Properties"]["RedrivePolicy"]
    assert len(waited) >= 4  # deferred again and again (every ~1 s here; 300 s by default)
    assert max(r.count for r in waited) == 1 < int(redrive["maxReceiveCount"])
    assert admission.depth(admission.dead_letter_url) == 0
    assert stack.published("incoming/waiting.nwb")


def test_two_starters_racing_never_exceed_the_cap(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: two Starters decide at the same moment (a barrier before either starts anything),
    and executions started a moment ago are not listed yet (ListExecutions is eventually
    consistent: hidden for 2 s here). Counting running executions, each saw room for the whole
    cap; the admission slots grant exactly the cap."""
    for k, v in SMALL.items():
        monkeypatch.setenv(k, v)
    lagging_listings(monkeypatch, starter_app, lag=2.0)
    first_start = barrier_on_first_starts(monkeypatch)
    admission = AdmissionHarness(stack, monkeypatch, max_running=3)
    for i in range(8):
        upload_small(stack, admission, tmp_path, f"incoming/race-{i}.nwb", i)

    with atomic_transactions():
        admission.run(starters=2)

    intervals = execution_intervals(stack)
    assert len(intervals) == 8 and all(status == "SUCCEEDED" for *_, status in intervals)
    assert peak_overlap(intervals) <= 3
    assert len(first_start) == 2  # both Starters really raced


def execution_intervals(stack: Stack) -> list[tuple[float, float, str]]:
    """(start, stop, status) of every conversion, from Step Functions' own record."""
    out = []
    for e in stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]:
        desc = stack.sfn.describe_execution(executionArn=e["executionArn"])
        out.append((desc["startDate"].timestamp(), desc["stopDate"].timestamp(), desc["status"]))
    return out


def peak_overlap(intervals: list[tuple[float, float, str]]) -> int:
    """The most executions running at one moment (an end at the same instant as a start comes first)."""
    edges = sorted([(start, 1) for start, _, _ in intervals] + [(stop, -1) for _, stop, _ in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def lagging_listings(monkeypatch: pytest.MonkeyPatch, module: Any, *, lag: float) -> None:
    """ListExecutions of ``module``'s client hides executions started less than ``lag`` s ago (AWS:
    "eventually consistent ... may not reflect very recent updates")."""
    client = module.sfn
    real = client.list_executions

    def lagging(**kw: Any) -> Any:
        answer = real(**kw)
        now = time.time()
        return answer | {"executions": [e for e in answer["executions"] if now - e["startDate"].timestamp() >= lag]}

    monkeypatch.setattr(client, "list_executions", lagging)


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
    clean = stack.published(key)
    for name in stack.objects(OUTPUT_BUCKET, "converted/"):
        stack.s3.delete_object(Bucket=OUTPUT_BUCKET, Key=name)

    counts = [slow_down_puts(m.s3, 0.1, seed) for seed, m in enumerate((plan_app, write_app, finalize_app))]
    desc = stack.run(object_created(key, version))

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert sum(c["slowed"] for c in counts) >= 5  # the 503s really happened
    assert differing_objects(stack.published(key), clean) == []
