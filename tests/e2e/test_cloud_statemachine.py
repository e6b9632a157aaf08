"""The real ASL, executed by moto's Step Functions interpreter, with our handlers as its Lambdas.

What moto executes here: Task states calling ``arn:aws:states:::lambda:invoke``, the
Distributed Map with ``ItemReader`` (S3 GetObject of write-batches.json), ``ItemSelector`` and
``ResultWriter`` (moto writes only the manifest.json of the results, not the result files),
Retry, and the Choice states on the outcome. What it does not do: enforce
``ToleratedFailureCount`` (a failed map item leaves ``null`` and the map succeeds), so there
Finalize's check of every chunk file is what fails the execution. The output is read as a reader
finds it: the key's ``@current.json``, then the version folder it names.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from nwb2pennsieve.cloud.records import PARTIALS_FOLDER
from nwb2pennsieve.local import convert_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.publish import MARKER_NAME
from nwb2pennsieve.settings import COMPRESSED_GZIP_LEVEL
from tests.cloud_fixtures import EXAMPLE_KEY, INPUT_BUCKET, OUTPUT_BUCKET, Stack, load_event, make_nwb
from tests.expected import differing_objects
from tests.redrive import unfinished_states

# Small chunks and items, so the example file makes several batches for the map.
SMALL = {"CHUNK_SIZE_MB": "0.05", "MAX_ITEM_MB": "0.2", "BATCH_MB": "0.4"}
OUTPUT_PREFIX = "converted/incoming/sub-01_ses-01/"
RECORDS_PREFIX = "records/incoming/sub-01_ses-01/"


@pytest.fixture
def small_items(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SMALL.items():
        monkeypatch.setenv(k, v)


def eventbridge_event(version: str) -> dict[str, Any]:
    event = load_event("s3_object_created.json")
    event["detail"]["object"]["version-id"] = version
    return event


def local_output(
    path: Path,
    out: Path,
    gzip_level: int = COMPRESSED_GZIP_LEVEL,
    output_formats: str = "chunks",
    layout: str = "ts-zarr",
) -> dict[str, bytes]:
    """The local pool's output (by default at the cloud's default gzip level), one worker, other
    items: every file by its path in the output folder."""
    convert_file(
        path,
        out,
        ConversionOptions(
            chunk_size_mb=float(SMALL["CHUNK_SIZE_MB"]),
            max_item_mb=float(SMALL["MAX_ITEM_MB"]),
            gzip_level=gzip_level,
            formats=output_formats,
            bundle_layout=layout,
        ),
        workers=1,
    )
    # every file but the local output's marker (.nwb2pennsieve.json), which the cloud does not write
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != MARKER_NAME
    }


def test_execution_from_the_eventbridge_event_matches_the_local_pool(
    stack: Stack, small_items: None, example_nwb: Path, tmp_path: Path
) -> None:
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())["VersionId"]
    desc = stack.run(eventbridge_event(version))
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    summary = json.loads(desc["output"])
    cloud = stack.published(EXAMPLE_KEY)
    local = local_output(example_nwb, tmp_path / "local")
    assert differing_objects(cloud, local) == []
    assert summary["outcome"] == "converted" and summary["output"].endswith(f"/@v/v{version}/")
    assert summary["chunkFiles"] == sum(1 for n in local if n.endswith(".bin.gz"))
    writes = [p for f, p in stack.invocations if f == "WriteChunksFunction"]
    assert len(writes) > 3  # the map really fanned out
    assert all(len(json.dumps(p)) < 4096 for _, p in stack.invocations)  # payloads stay small


def test_hand_started_execution_with_overrides(stack: Stack, example_nwb: Path, tmp_path: Path) -> None:
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    desc = stack.run(
        {
            "bucket": INPUT_BUCKET,
            "key": EXAMPLE_KEY,
            "chunkSizeMb": 0.05,
            "maxItemMb": 0.2,
            "outputPrefix": "converted/by-hand/",  # under OutputPrefix: where the functions may write
            "gzipLevel": 0,
        }
    )
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    cloud = stack.published(EXAMPLE_KEY, "converted/by-hand/")
    assert cloud == local_output(example_nwb, tmp_path / "local", gzip_level=0)


def test_a_rerun_leaves_identical_objects_and_nothing_extra(stack: Stack, small_items: None, example_nwb: Path) -> None:
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())["VersionId"]
    assert stack.run(eventbridge_event(version))["status"] == "SUCCEEDED"
    first = stack.objects(OUTPUT_BUCKET)
    assert stack.run(eventbridge_event(version))["status"] == "SUCCEEDED"
    second = stack.objects(OUTPUT_BUCKET)
    results = "records/map-results/"
    # Outside map-results/ (one results folder per execution, by design) nothing changed or appeared.
    assert (
        differing_objects(
            {k: v for k, v in second.items() if not k.startswith(results)},
            {k: v for k, v in first.items() if not k.startswith(results)},
        )
        == []
    )
    assert sum(1 for k in first if k.startswith(results)) == 1
    assert sum(1 for k in second if k.startswith(results)) == 2


def test_a_bad_file_fails_the_execution_naming_file_and_reason(stack: Stack) -> None:
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=b"\x89HDF\r\n\x1a\n but truncated")
    desc = stack.run(load_event("plan.json"))
    assert desc["status"] == "FAILED"
    assert desc["error"] == "InvalidInputError"
    cause = json.loads(desc["cause"])
    assert cause["errorMessage"].startswith(f"s3://{INPUT_BUCKET}/{EXAMPLE_KEY}: ")
    assert "HDF5" in cause["errorMessage"]
    assert "Contents" not in stack.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="converted/")


def test_an_nwb_without_electrical_series_fails_clearly(stack: Stack, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from pynwb import NWBHDF5IO, NWBFile

    path = tmp_path / "empty.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(NWBFile(session_description="x", identifier="x", session_start_time=datetime(2024, 1, 1, tzinfo=UTC)))
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=path.read_bytes())
    desc = stack.run(load_event("plan.json"))
    assert (desc["status"], desc["error"]) == ("FAILED", "NothingToConvertError")
    assert "no ElectricalSeries" in json.loads(desc["cause"])["errorMessage"]


def test_a_failing_work_item_fails_the_execution(
    stack: Stack, small_items: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.write_chunks import app as write_app

    real = write_app.write_chunks

    def flaky(s3: Any, event: Any, **kw: Any) -> Any:
        if event.batch.batch == 2:
            raise OSError("the disk is on fire")
        return real(s3, event, **kw)

    monkeypatch.setattr(write_app, "write_chunks", flaky)
    path = make_nwb(tmp_path / "f.nwb", second_series=False)
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=path.read_bytes())
    desc = stack.run(load_event("plan.json"))
    assert desc["status"] == "FAILED"
    # On AWS the map itself fails (no tolerated failures); moto lets the map succeed, and then
    # Finalize finds the batch's chunk files missing. Either way the cause names the file.
    assert EXAMPLE_KEY in desc["cause"]
    assert desc["error"] in ("States.ExceedToleratedFailureThreshold", "IncompleteOutputError")


def test_lambda_throttling_is_retried_with_backoff(stack: Stack, example_nwb: Path) -> None:
    from moto.awslambda.exceptions import LambdaClientError

    class Throttled(LambdaClientError):
        code = 429

        def __init__(self) -> None:
            super().__init__("TooManyRequestsException", "Rate exceeded")

    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    stack.service_faults["PlanFunction"] = [Throttled()]
    stack.service_faults["WriteChunksFunction"] = [Throttled()]
    desc = stack.run(load_event("plan.json"))
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    calls = [f for f, _ in stack.invocations]
    assert calls.count("PlanFunction") == 2  # throttled once, then retried
    assert calls.count("WriteChunksFunction") == 2


def test_a_failed_map_fails_the_execution_in_the_map(
    stack: Stack, example_nwb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Map's own failure (here: its ItemReader finds no write-batches.json) fails the execution in
    the map itself (nothing caught), where a redrive resumes; the execution's input names the file."""
    from functions.plan import app as plan_app

    real = plan_app.plan_object

    def plan_then_lose_the_write_batches(s3: Any, event: Any, settings: Any, **kw: Any) -> Any:
        out = real(s3, event, settings, **kw)
        with stack.iam.acting_as(None):  # the test deletes it, not Plan (whose role may delete nothing)
            stack.s3.delete_object(Bucket=out.write_batches.bucket, Key=out.write_batches.key)
        return out

    monkeypatch.setattr(plan_app, "plan_object", plan_then_lose_the_write_batches)
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    desc = stack.run(load_event("plan.json"))
    assert desc["status"] == "FAILED"
    assert unfinished_states(stack.sfn, desc["executionArn"]) == ["WriteChunks"]
    assert json.loads(desc["input"])["key"] == EXAMPLE_KEY


def test_a_superseded_run_ends_as_superseded_not_failed(
    stack: Stack,
    small_items: None,
    example_nwb: Path,
    shuffled_nwb: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 13: the file is replaced while its first write batch runs. The old execution ends
    SUCCEEDED with outcome ``superseded`` (not FAILED: no failure alarm, no FAILED e-mail), leaves no
    version folder behind, and the new one publishes the new file's output."""
    from functions.write_chunks import app as write_app

    real = write_app.write_chunks
    first = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())["VersionId"]
    replaced: list[str] = []
    once = threading.Lock()  # the map's writers run at once

    def replace_during_the_first_batch(s3: Any, event: Any, **kw: Any) -> Any:
        with once:
            if event.source.version_id == first and not replaced:
                with stack.iam.acting_as(None):  # the user uploads a new version
                    put = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=shuffled_nwb.read_bytes())
                replaced.append(put["VersionId"])
        return real(s3, event, **kw)

    monkeypatch.setattr(write_app, "write_chunks", replace_during_the_first_batch)
    old = stack.run(eventbridge_event(first))
    new = stack.run(eventbridge_event(replaced[0]))

    assert old["status"] == "SUCCEEDED", old.get("cause")
    outcome = json.loads(old["output"])
    assert (outcome["outcome"], outcome["step"]) == ("superseded", "Finalize")
    assert outcome["latest"] == f"version {replaced[0]}"
    assert new["status"] == "SUCCEEDED" and json.loads(new["output"])["outcome"] == "converted"
    assert differing_objects(stack.published(EXAMPLE_KEY), local_output(shuffled_nwb, tmp_path / "local")) == []
    folders = {k.split("/@v/")[1].split("/")[0] for k in stack.objects(OUTPUT_BUCKET, OUTPUT_PREFIX) if "/@v/" in k}
    assert folders == {f"v{replaced[0]}"}


@pytest.mark.parametrize(("layout_name", "level_1"), [("ts-zarr", "0/1/env/c/"), ("legacy", "0/1/c/")])
def test_the_bundle_from_the_state_machine_equals_the_local_pools(
    stack: Stack,
    small_items: None,
    example_nwb: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    layout_name: str,
    level_1: str,
) -> None:
    """OUTPUT_FORMATS=chunks,bundle: every object (chunk files, shards, zarr.json) byte for byte."""
    from nwb2pennsieve.plan import bundle_layout as layout

    for name, value in {"INNER_CHUNK_BINS": 64, "TARGET_SHARD_BYTES": 2048, "MIN_BINS": 16}.items():
        monkeypatch.setattr(layout, name, value)  # many shards, windows and a reduce from a small file
    monkeypatch.setenv("OUTPUT_FORMATS", "chunks,bundle")
    monkeypatch.setenv("BUNDLE_LAYOUT", layout_name)
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())["VersionId"]
    desc = stack.run(eventbridge_event(version))
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    cloud = stack.published(EXAMPLE_KEY)
    local = local_output(example_nwb, tmp_path / "local", output_formats="chunks,bundle", layout=layout_name)
    assert any(name.startswith(f"sub-01_ses-01.zarr/{level_1}") for name in local)
    assert differing_objects(cloud, local) == []  # the bundle's objects byte for byte
    partials = stack.objects(OUTPUT_BUCKET, RECORDS_PREFIX)
    assert any(f"/{PARTIALS_FOLDER}/" in key for key in partials)


def test_a_lost_bundle_partial_result_fails_the_execution_naming_the_item(
    stack: Stack, small_items: None, example_nwb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finalize's reduce needs every item's partial results: one missing is one line, not a bundle with a hole."""
    from functions.finalize import app as finalize_app
    from nwb2pennsieve.plan import bundle_layout as layout

    for name, value in {"INNER_CHUNK_BINS": 64, "TARGET_SHARD_BYTES": 2048, "MIN_BINS": 16}.items():
        monkeypatch.setattr(layout, name, value)
    monkeypatch.setenv("OUTPUT_FORMATS", "bundle")
    real = finalize_app.finalize
    lost: list[str] = []

    def lose_one_then_finalize(s3: Any, request: Any, **kw: Any) -> Any:
        keys = sorted(k for k in stack.objects(OUTPUT_BUCKET, RECORDS_PREFIX) if f"/{PARTIALS_FOLDER}/" in k)
        lost.append(keys[len(keys) // 2])
        with stack.iam.acting_as(None):  # the test deletes it, not Finalize
            stack.s3.delete_object(Bucket=OUTPUT_BUCKET, Key=lost[0])
        return real(s3, request, **kw)

    monkeypatch.setattr(finalize_app, "finalize", lose_one_then_finalize)
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())["VersionId"]
    desc = stack.run(eventbridge_event(version))
    assert desc["status"] == "FAILED"
    item = lost[0].rsplit("/", 1)[1].removesuffix(".bin")
    assert f"the bundle's partial results of work item {item} are missing" in desc["cause"]
    assert f"s3://{OUTPUT_BUCKET}/{lost[0]}" in desc["cause"]
    # the root zarr.json (the bundle's commit point) was never written
    assert not [k for k in stack.objects(OUTPUT_BUCKET, OUTPUT_PREFIX) if k.endswith(".zarr/zarr.json")]
