"""A burst through the real entry: S3 events on the admission queue (built from template.yaml), two
Starters as Lambda's event source runs them, the real definition under moto with the handlers in
process and IAM enforced, and what AWS does that moto does not:

- 52 keys (odd characters, a key near S3's length limit, keys whose folders used to collide), 12
  of them uploaded after the bucket's versioning was suspended (version id ``null``);
- every event delivered 1-3 times, shuffled, its key raw or form-encoded;
- 10 files replaced while their first write batch runs (the new event before a late duplicate of
  the old one);
- a Lambda concurrency cap for the account and a lower one for WriteChunks (throttling), S3
  answering 503 to a share of the writers' and Finalize's PUTs, two Starters deciding at the same
  moment, status-change events delivered twice for a share.

Every latest version must be converted exactly once (its published folder equal to the local
pool's output for its bytes), every replaced one end as superseded or start nothing, nothing may
fail, wait on a queue or land in the dead-letter queue. The counts are printed (``-s``).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from functions.finalize import app as finalize_app
from functions.write_chunks import app as write_app
from nwb2pennsieve.cloud.layout import output_folder, version_token
from nwb2pennsieve.cloud.models import S3Prefix, S3Ref
from nwb2pennsieve.cloud.versions import read_pointer
from tests.admission_harness import (
    AdmissionHarness,
    LambdaCaps,
    barrier_on_first_starts,
    object_created,
)
from tests.cloud_fixtures import INPUT_BUCKET, OUTPUT_BUCKET, Stack, make_nwb, scale_retry_waits
from tests.e2e.test_cloud_admission import execution_intervals, peak_overlap, slow_down_puts
from tests.e2e.test_cloud_statemachine import local_output
from tests.expected import differing_objects
from tests.moto_shims import atomic_transactions, suspended_versioning_as_aws, version_listings_as_aws

# A few minutes on two cores: longer than the default 300 s timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SMALL = {"CHUNK_SIZE_MB": "0.05", "MAX_ITEM_MB": "0.1", "BATCH_MB": "0.1", "OUTPUT_FORMATS": "chunks,bundle"}
MAX_RUNNING, WRITE_CONCURRENCY = 3, 2
ODD = [
    "incoming/a b.nwb",
    "incoming/a+b.nwb",
    "incoming/100%.nwb",
    "incoming/ü/ß é.nwb",
    "incoming/x%2By.nwb",
    "incoming/" + "d" * 400 + "/" + "n" * 200 + ".nwb",  # its longest output key: ~970 of S3's 1,024 bytes
    "incoming//edge.nwb",  # these two shared converted/incoming/edge/
    "incoming/edge.nwb",
    "incoming/a.nwb",  # and a/a.zarr.nwb wrote into a.nwb's viewer bundle
    "incoming/a/a.zarr.nwb",
]
VERSIONED, SUSPENDED = 40, 12
REPLACED = 10


class Burst:
    """The uploads, what was sent, and what a user later expects to find."""

    def __init__(self, stack: Stack, admission: AdmissionHarness, payloads: list[Path], rng: random.Random) -> None:
        self.stack, self.admission, self.payloads, self.rng = stack, admission, payloads, rng
        self.bytes_of: dict[tuple[str, str], int] = {}  # (key, version token) -> payload index
        self.sent: Counter[str] = Counter()
        self.lock = threading.Lock()

    def upload(self, key: str, payload: int) -> dict[str, Any]:
        """Put a version of ``key``; its S3 event (as EventBridge would send it)."""
        with self.stack.iam.acting_as(None):  # the user uploads
            put = self.stack.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=self.payloads[payload].read_bytes())
        ref = S3Ref(bucket=INPUT_BUCKET, key=key, version_id=put.get("VersionId"), etag=put["ETag"])
        with self.lock:
            self.bytes_of[(key, version_token(ref))] = payload
        sequencer = f"{time.time_ns():020X}"
        return object_created(INPUT_BUCKET, key, put.get("VersionId"), etag=put["ETag"], sequencer=sequencer)

    def deliveries(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """1-3 deliveries of one event, each with its key raw or form-encoded."""
        out = []
        with self.lock:  # writers call it too
            for _ in range(self.rng.randint(1, 3)):
                copy = json.loads(json.dumps(event))
                if self.rng.random() < 0.5:
                    copy["detail"]["object"]["key"] = quote_plus(copy["detail"]["object"]["key"], safe="/")
                    self.sent["encoded"] += 1
                else:
                    self.sent["raw"] += 1
                out.append(copy)
        return out

    def send(self, events: list[dict[str, Any]]) -> None:
        with self.stack.iam.acting_as(None):  # EventBridge sends (also from inside a writer, in the test)
            for event in events:
                self.admission.send(event)
        with self.lock:
            self.sent["events"] += len(events)


def keys() -> list[str]:
    plain = [f"incoming/burst/file-{i:02d}.nwb" for i in range(VERSIONED + SUSPENDED - len(ODD))]
    return ODD + plain


def test_a_burst_through_the_real_entry_converts_every_latest_version_once(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # moto logs every throttled attempt at ERROR with the whole state's repr and its traceback,
    # which pytest's log capture would keep (gigabytes over a burst): not captured here.
    caplog.set_level(logging.CRITICAL, logger="moto")
    started = time.monotonic()
    faults = deploy_with_faults(stack, monkeypatch)
    # A deferral waits 4 s (AWS: 300): with 1 s, ~9,500 re-sends of ~50 waiting files took most of the CPU.
    admission = AdmissionHarness(
        stack, monkeypatch, max_running=MAX_RUNNING, twice=0.1, seed=20, time_scale=1 / 20, retry_seconds=4
    )
    payloads = [
        make_nwb(tmp_path / f"payload-{i}.nwb", channels=4, samples=12_000, second_series=False, seed=i)
        for i in range(4)
    ]
    burst = Burst(stack, admission, payloads, random.Random(20))
    send_the_uploads(stack, burst)
    replaced = replace_while_converting(monkeypatch, burst)
    barrier_on_first_starts(monkeypatch)

    with atomic_transactions():
        admission.run(starters=2, timeout=1200)

    executions = [
        stack.sfn.describe_execution(executionArn=e["executionArn"])
        for e in stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    ]
    failed = [e for e in executions if e["status"] != "SUCCEEDED"]
    assert not failed, [(e["name"], e.get("error"), e.get("cause", "")[:300]) for e in failed]
    check_every_latest_version_converted_once(stack, burst, executions, tmp_path)
    # Nothing lost, nothing waiting, nothing dead-lettered, every cap held.
    assert admission.depth() == 0 and admission.depth(admission.dead_letter_url) == 0
    assert len(replaced) == REPLACED
    counts = tally(stack, burst, executions, faults) | {"seconds": round(time.monotonic() - started)}
    assert counts["max_receive_count"] <= 2
    assert counts["peak_running"] <= MAX_RUNNING and counts["peak_writers_per_execution"] <= WRITE_CONCURRENCY
    assert counts["throttled"].get("WriteChunksFunction", 0) > 0  # the writers' cap was really hit
    assert counts["puts_503"] > 0  # and S3 really answered 503
    assert admission.tally["started"] == len(executions) and admission.tally["rejected"] == 0
    print("\nburst:", json.dumps(counts))


@dataclass
class Faults:
    caps: LambdaCaps
    slowed: list[dict[str, int]]


def deploy_with_faults(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Faults:
    """The stack with small items and WriteConcurrency 2, and what AWS does that moto does not:
    Lambda concurrency caps (the account's, and WriteChunks' lower), 503 on 1 % of the writers' and
    Finalize's PUTs, listings and versioning-suspended buckets as AWS documents them."""
    # Retry waits 200 times shorter: a throttled writer then waits up to a minute or so, while the
    # burst drains in minutes (on AWS: hours of waiting, a burst of hours).
    scale_retry_waits(monkeypatch, 1 / 200)
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    version_listings_as_aws(monkeypatch)
    suspended_versioning_as_aws(monkeypatch)
    stack.redeploy(WriteConcurrency=WRITE_CONCURRENCY)
    monkeypatch.setenv("WRITE_CONCURRENCY", str(WRITE_CONCURRENCY))
    caps = LambdaCaps(account=10, per_function={"WriteChunksFunction": 5}).install(monkeypatch)
    # 1 %: every writer in this process shares one client, so one adaptive rate limiter that each
    # 503 slows (on AWS each Lambda has its own); at 5 % the burst spent most of its time waiting in it.
    slowed = [slow_down_puts(m.s3, 0.01, seed) for seed, m in enumerate((write_app, finalize_app))]
    return Faults(caps, slowed)


def send_the_uploads(stack: Stack, burst: Burst) -> None:
    """40 uploads to the versioned bucket, then its versioning suspended, then 12 more (version
    null); every event 1-3 times, raw or encoded, shuffled."""
    all_keys = keys()
    assert len(all_keys) == VERSIONED + SUSPENDED >= 50
    events = [burst.upload(key, burst.rng.randrange(4)) for key in all_keys[:VERSIONED]]
    stack.s3.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Suspended"})
    events += [burst.upload(key, burst.rng.randrange(4)) for key in all_keys[VERSIONED:]]
    deliveries = [d for e in events for d in burst.deliveries(e)]
    burst.rng.shuffle(deliveries)
    burst.send(deliveries)


def replace_while_converting(monkeypatch: pytest.MonkeyPatch, burst: Burst) -> dict[str, dict[str, Any]]:
    """10 files (7 uploaded before the suspension, 3 after) get a new version during the first
    write batch of the old one; the new event is sent before a late duplicate of the old one.
    Returns key -> the new version's event, filled in as the burst runs."""
    all_keys = keys()
    to_replace = set(burst.rng.sample(all_keys[:VERSIONED], REPLACED - 3) + burst.rng.sample(all_keys[VERSIONED:], 3))
    replaced: dict[str, dict[str, Any]] = {}
    real_write = write_app.write_chunks

    def replace_during_the_first_batch(s3: Any, event: Any, **kw: Any) -> Any:
        key = event.source.key
        with burst.lock:
            fresh = key in to_replace and key not in replaced
            if fresh:
                replaced[key] = {}
        if fresh:
            old = object_created(INPUT_BUCKET, key, event.source.version_id, etag=event.source.etag or "")
            replaced[key] = new = burst.upload(key, (burst.bytes_of[(key, version_token(event.source))] + 1) % 4)
            burst.send([*burst.deliveries(new), *burst.deliveries(old)])
        return real_write(s3, event, **kw)

    monkeypatch.setattr(write_app, "write_chunks", replace_during_the_first_batch)
    return replaced


def check_every_latest_version_converted_once(
    stack: Stack, burst: Burst, executions: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Each key's pointer names its latest version, converted by exactly one execution, equal to the
    local pool's output for those bytes, and the only version folder left."""
    converted = Counter(
        (json.loads(e["input"])["key"], json.loads(e["output"])["output"])
        for e in executions
        if json.loads(e["output"])["outcome"] == "converted"
    )
    local: dict[tuple[int, str], dict[str, bytes]] = {}
    for key in keys():
        head = stack.s3.list_object_versions(Bucket=INPUT_BUCKET, Prefix=key)
        (latest,) = [v for v in head["Versions"] if v["Key"] == key and v["IsLatest"]]
        token = version_token(S3Ref(bucket=INPUT_BUCKET, key=key, version_id=latest["VersionId"], etag=latest["ETag"]))
        folder = S3Prefix(bucket=OUTPUT_BUCKET, prefix=output_folder("converted/", key))
        pointer = read_pointer(stack.s3, folder)
        assert pointer is not None and pointer.token == token, key
        assert converted[(key, f"s3://{OUTPUT_BUCKET}/{pointer.folder}")] == 1, key
        payload, base = burst.bytes_of[(key, token)], key.rsplit("/", 1)[1]
        if (payload, base) not in local:
            copy = tmp_path / "local-input" / f"{payload}" / base
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(burst.payloads[payload].read_bytes())
            local[(payload, base)] = local_output(
                copy, tmp_path / "local" / f"{len(local)}", output_formats="chunks,bundle"
            )
        assert differing_objects(stack.published(key), local[(payload, base)]) == [], key
        tokens = {k.split("/@v/", 1)[1].split("/", 1)[0] for k in stack.objects(OUTPUT_BUCKET, folder.prefix + "@v/")}
        assert tokens == {token}, key


def tally(stack: Stack, burst: Burst, executions: list[dict[str, Any]], faults: Faults) -> dict[str, Any]:
    """The burst's counts, printed by the test."""
    admission = burst.admission
    outcomes = Counter(json.loads(e["output"])["outcome"] for e in executions if e["status"] == "SUCCEEDED")
    return {
        "keys": len(keys()),
        "versions": len(burst.bytes_of),
        "events_sent": burst.sent["events"],
        "deliveries_raw": burst.sent["raw"],
        "deliveries_encoded": burst.sent["encoded"],
        "receives": len(admission.receives),
        "deferrals_sent_again": admission.tally["deferred"],
        "duplicates_dropped": admission.tally["duplicates"],
        "superseded_events_dropped": admission.tally["superseded"],
        "executions": len(executions),
        "converted": outcomes["converted"],
        "superseded": outcomes["superseded"],
        "failed": sum(e["status"] != "SUCCEEDED" for e in executions),
        "status_events": admission.statuses_delivered,
        "throttled": faults.caps.throttled,
        "puts_503": sum(s["slowed"] for s in faults.slowed),
        "max_receive_count": max(r.count for r in admission.receives),
        "dead_letter_depth": admission.depth(admission.dead_letter_url),
        "peak_running": peak_overlap(execution_intervals(stack)),
        "peak_writers_per_execution": faults.caps.peak_writers,
    }
