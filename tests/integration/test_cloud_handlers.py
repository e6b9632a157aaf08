"""Each handler under moto with its event fixture from ``events/``."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from functions.complete_import import app as complete_app
from functions.finalize import app as finalize_app
from functions.plan import app as plan_app
from functions.upload_files import app as upload_app
from functions.write_chunks import app as write_app
from nwb2pennsieve.cloud import imports
from nwb2pennsieve.cloud.finalize_step import IncompleteOutputError
from nwb2pennsieve.cloud.imports import credentials_env
from nwb2pennsieve.cloud.layout import OUTPUT_NAME_BYTES
from nwb2pennsieve.cloud.models import (
    FinalizeOutput,
    PlanOutput,
    S3Prefix,
    S3Ref,
    Superseded,
    UploadFilesOutput,
    WriteChunksOutput,
    WrittenBatch,
)
from nwb2pennsieve.cloud.records import RecordsFolder
from nwb2pennsieve.cloud.versions import read_pointer
from nwb2pennsieve.errors import ConfigurationError, InvalidInputError
from nwb2pennsieve.pennsieve import TargetNotFoundError, UploadError
from nwb2pennsieve.plan.models import Plan
from tests.cloud_fixtures import (
    EXAMPLE_KEY,
    INPUT_BUCKET,
    OUTPUT_BUCKET,
    REGION,
    FakeLambdaContext,
    load_event,
    use_import_secret,
)


@pytest.fixture
def apps(s3: Any, cloud_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for module in (plan_app, write_app, finalize_app, upload_app, complete_app):
        monkeypatch.setattr(module, "s3", s3)
    return s3


def put_example(s3: Any, path: Path) -> str:
    return str(s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=path.read_bytes())["VersionId"])


def run_plan(event: dict[str, Any]) -> dict[str, Any]:
    return plan_app.lambda_handler(event, FakeLambdaContext("plan"))


def fixture_for(name: str, planned: dict[str, Any]) -> dict[str, Any]:
    """Event fixture ``name`` with the object version and plan keys moto gave this run.

    (The fixtures name one upload; here every test uploads anew, and moto makes new version ids.)
    """
    event = load_event(name)
    for field in ("source", "plan", "writeBatches", "output"):
        if field in event:
            assert set(event[field]) - {"versionId"} == set(planned[field]) - {"versionId"}
            event[field] = planned[field]
    return event


def plan_and_write(s3: Any, path: Path) -> dict[str, Any]:
    put_example(s3, path)
    planned = run_plan(load_event("plan.json"))
    write_app.lambda_handler(fixture_for("write_chunks.json", planned), FakeLambdaContext("write"))
    return planned


def test_plan_with_its_event_writes_plan_and_write_batches(apps: Any, example_nwb: Path) -> None:
    version = put_example(apps, example_nwb)
    out = PlanOutput.model_validate(run_plan(load_event("plan.json")))
    plan = Plan.model_validate_json(apps.get_object(Bucket=OUTPUT_BUCKET, Key=out.plan.key)["Body"].read())
    batches = json.loads(apps.get_object(Bucket=OUTPUT_BUCKET, Key=out.write_batches.key)["Body"].read())
    assert out.source.key == EXAMPLE_KEY
    # The version's own folder, inside the key's folder (where Finalize publishes it).
    assert out.folder.prefix == "converted/incoming/sub-01_ses-01/"
    assert out.output.prefix == f"converted/incoming/sub-01_ses-01/@v/v{version}/"
    assert [i for b in batches for i in b["items"]] == [i.id for i in plan.work_items]
    assert out.work_items == len(plan.work_items) and out.batches == len(batches)
    assert out.chunk_files == len(plan.file_names())
    # The fixtures downstream were made from this very plan.
    assert load_event("write_chunks.json")["batch"] == batches[0]


def test_plan_from_the_eventbridge_event_pins_the_version(apps: Any, example_nwb: Path) -> None:
    version = put_example(apps, example_nwb)
    event = load_event("s3_object_created.json")
    event["detail"]["object"]["version-id"] = version
    out = PlanOutput.model_validate(run_plan(event))
    assert out.source.version_id == version  # the writers read the version the event announced
    assert out.output.prefix.endswith(f"/@v/v{version}/")
    # Once a newer upload exists, that version is not planned at all (its own execution converts it).
    apps.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=b"a newer, broken upload")
    assert Superseded.model_validate(run_plan(event)).step == "Plan"


def test_plan_of_a_bad_file_names_the_file_and_reason(apps: Any) -> None:
    apps.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=b"not an hdf5 file at all" * 100)
    with pytest.raises(InvalidInputError) as err:
        run_plan(load_event("plan.json"))
    assert f"s3://{INPUT_BUCKET}/{EXAMPLE_KEY}" in str(err.value)
    assert "HDF5" in str(err.value)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"bucket": INPUT_BUCKET}, "key"),
        (
            {
                "detail-type": "Object Deleted",
                "source": "aws.s3",
                "detail": {"bucket": {"name": "b"}, "object": {"key": "k"}},
            },
            "Object Created",
        ),
        ({"bucket": INPUT_BUCKET, "key": EXAMPLE_KEY, "chunkSizeMb": -1}, "chunkSizeMb"),
    ],
)
def test_plan_rejects_a_malformed_input(apps: Any, event: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        run_plan(event)


def test_plan_of_a_missing_object(apps: Any) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        run_plan(load_event("plan.json"))


def test_plan_refuses_an_output_prefix_outside_the_stacks(apps: Any, example_nwb: Path) -> None:
    """The functions may write under OutputPrefix only (their IAM policies): say so before any work."""
    put_example(apps, example_nwb)
    event = {"bucket": INPUT_BUCKET, "key": EXAMPLE_KEY, "outputPrefix": "elsewhere/"}
    with pytest.raises(InvalidInputError) as err:
        run_plan(event)
    assert str(err.value) == (
        f"s3://{INPUT_BUCKET}/{EXAMPLE_KEY}: "
        "outputPrefix 'elsewhere/' must start with the stack's OutputPrefix 'converted/'"
    )
    assert "Contents" not in apps.list_objects_v2(Bucket=OUTPUT_BUCKET)
    assert run_plan({**event, "outputPrefix": "converted/by-hand/"})["folder"]["prefix"] == (
        "converted/by-hand/incoming/sub-01_ses-01/"
    )


def test_write_chunks_with_its_event_writes_the_batch(apps: Any, example_nwb: Path) -> None:
    put_example(apps, example_nwb)
    event = fixture_for("write_chunks.json", run_plan(load_event("plan.json")))
    out = WriteChunksOutput.model_validate(write_app.lambda_handler(event, FakeLambdaContext("write")))
    plan = Plan.model_validate_json(apps.get_object(Bucket=OUTPUT_BUCKET, Key=event["plan"]["key"])["Body"].read())
    names = [n for i in event["batch"]["items"] for n in plan.item_file_names(plan.item(i))]
    assert out.files == len(names)
    prefix = event["output"]["prefix"]
    body = apps.get_object(Bucket=OUTPUT_BUCKET, Key=prefix + names[0])["Body"].read()
    values = np.frombuffer(gzip.decompress(body), dtype=">f8")
    assert values.size > 0 and np.all(np.isfinite(values))
    # Idempotent: running the same batch again rewrites identical bytes.
    write_app.lambda_handler(event, FakeLambdaContext("write"))
    assert apps.get_object(Bucket=OUTPUT_BUCKET, Key=prefix + names[0])["Body"].read() == body


def test_finalize_with_its_event_writes_metadata(apps: Any, example_nwb: Path) -> None:
    planned = plan_and_write(apps, example_nwb)
    event = fixture_for("finalize.json", planned)
    out = FinalizeOutput.model_validate(finalize_app.lambda_handler(event, FakeLambdaContext("finalize")))
    assert (out.channels, out.chunk_files, out.imported) == (11, 14, False)
    meta = json.loads(
        apps.get_object(Bucket=OUTPUT_BUCKET, Key=event["output"]["prefix"] + "channel-00000.metadata.json")[
            "Body"
        ].read()
    )
    assert meta["unit"] == "uV" and meta["type"] == "CONTINUOUS"


def test_finalize_fails_when_a_chunk_is_missing(apps: Any, example_nwb: Path) -> None:
    planned = plan_and_write(apps, example_nwb)
    event = fixture_for("finalize.json", planned)
    prefix = event["output"]["prefix"]
    victim = next(o["Key"] for o in apps.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=prefix)["Contents"])
    apps.delete_object(Bucket=OUTPUT_BUCKET, Key=victim)
    with pytest.raises(IncompleteOutputError, match=r"1 of 14 chunk files are missing") as err:
        finalize_app.lambda_handler(event, FakeLambdaContext("finalize"))
    assert EXAMPLE_KEY in str(err.value)


def written_record(s3: Any, planned: dict[str, Any], batch: int = 0) -> tuple[str, WrittenBatch]:
    key = RecordsFolder.of_plan(S3Ref.model_validate(planned["plan"])).written(batch).key
    return key, WrittenBatch.model_validate_json(s3.get_object(Bucket=OUTPUT_BUCKET, Key=key)["Body"].read())


def test_write_chunks_records_each_file_size_and_the_crc_of_its_samples(apps: Any, example_nwb: Path) -> None:
    planned = plan_and_write(apps, example_nwb)
    plan = json.loads(apps.get_object(Bucket=OUTPUT_BUCKET, Key=planned["plan"]["key"])["Body"].read())
    assert plan["options"]["gzip_level"] == 1  # the cloud compresses by default
    _, written = written_record(apps, planned)
    assert written.gzip_level == 1 and len(written.files) == 14
    prefix = planned["output"]["prefix"]
    for record in written.files:
        body = apps.get_object(Bucket=OUTPUT_BUCKET, Key=prefix + record.name)["Body"].read()
        samples = gzip.decompress(body)
        assert (len(body), zlib.crc32(samples)) == (record.size, record.crc32)
        assert len(body) < len(samples)  # compressed, not stored


def test_finalize_fails_when_a_file_differs_from_its_record(apps: Any, example_nwb: Path) -> None:
    planned = plan_and_write(apps, example_nwb)
    event = fixture_for("finalize.json", planned)
    _, written = written_record(apps, planned)
    victim = planned["output"]["prefix"] + written.files[3].name
    body = apps.get_object(Bucket=OUTPUT_BUCKET, Key=victim)["Body"].read()
    # The same samples, stored instead of compressed (what another writer could have left).
    apps.put_object(Bucket=OUTPUT_BUCKET, Key=victim, Body=gzip.compress(gzip.decompress(body), 0, mtime=0))
    with pytest.raises(IncompleteOutputError, match=rf"1 have the wrong size \(first {written.files[3].name}\)"):
        finalize_app.lambda_handler(event, FakeLambdaContext("finalize"))


def test_finalize_fails_when_a_batch_left_no_record_of_this_plan(apps: Any, example_nwb: Path) -> None:
    planned = plan_and_write(apps, example_nwb)
    event = fixture_for("finalize.json", planned)
    key, written = written_record(apps, planned)
    stale = written.model_copy(update={"gzip_level": 2})  # a record of an earlier plan with other settings
    apps.put_object(Bucket=OUTPUT_BUCKET, Key=key, Body=stale.model_dump_json(by_alias=True).encode())
    with pytest.raises(IncompleteOutputError, match=r"14 have no write record of this plan"):
        finalize_app.lambda_handler(event, FakeLambdaContext("finalize"))
    apps.delete_object(Bucket=OUTPUT_BUCKET, Key=key)
    with pytest.raises(IncompleteOutputError, match=r"14 have no write record of this plan"):
        finalize_app.lambda_handler(event, FakeLambdaContext("finalize"))


def test_finalize_removes_chunk_files_of_an_older_version(apps: Any, example_nwb: Path) -> None:
    planned = plan_and_write(apps, example_nwb)
    event = fixture_for("finalize.json", planned)
    prefix = event["output"]["prefix"]
    # An older version had other chunk times, and more channels (this plan has 11).
    stale = ["channel-00000_1_2.bin.gz", "channel-00099_1_2.bin.gz", "channel-00099.metadata.json"]
    kept = ["notes.txt", "sub/channel-00000_1_2.bin.gz"]
    for name in stale + kept:
        apps.put_object(Bucket=OUTPUT_BUCKET, Key=prefix + name, Body=b"old")
    out = FinalizeOutput.model_validate(finalize_app.lambda_handler(event, FakeLambdaContext("finalize")))
    assert out.stale_removed == len(stale)
    left = {o["Key"][len(prefix) :] for o in apps.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=prefix)["Contents"]}
    assert not set(stale) & left and set(kept) <= left


def test_an_execution_of_a_replaced_version_ends_superseded_without_touching_the_output(
    apps: Any, example_nwb: Path
) -> None:
    """Being replaced is an outcome: Finalize and the writers answer ``superseded`` (no error), write
    nothing and publish nothing; Finalize removes the version's own unpublished folder."""
    planned = plan_and_write(apps, example_nwb)
    event = fixture_for("finalize.json", planned)
    apps.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=b"newer upload")
    answer = finalize_app.lambda_handler(event, FakeLambdaContext("finalize"))
    replaced = Superseded.model_validate(answer)
    assert (replaced.outcome, replaced.step) == ("superseded", "Finalize")
    assert replaced.latest.startswith("version ") and replaced.removed == 14
    assert "Contents" not in apps.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=event["output"]["prefix"])
    assert read_pointer(apps, S3Prefix.model_validate(event["folder"])) is None
    write_event = fixture_for("write_chunks.json", planned)
    written = WriteChunksOutput.model_validate(write_app.lambda_handler(write_event, FakeLambdaContext("write")))
    assert written.superseded and written.files == 0
    assert "Contents" not in apps.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=event["output"]["prefix"])


def convert(s3: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Plan, every write batch, Finalize, by hand; Finalize's answer."""
    planned = run_plan(event)
    batches = json.loads(s3.get_object(Bucket=OUTPUT_BUCKET, Key=planned["writeBatches"]["key"])["Body"].read())
    for batch in batches:
        item = {"source": planned["source"], "output": planned["output"], "plan": planned["plan"], "batch": batch}
        write_app.lambda_handler(item, FakeLambdaContext("write"))
    return finalize_app.lambda_handler(planned, FakeLambdaContext("finalize"))


def objects(s3: Any, prefix: str) -> dict[str, bytes]:
    return {
        o["Key"]: s3.get_object(Bucket=OUTPUT_BUCKET, Key=o["Key"])["Body"].read()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=OUTPUT_BUCKET, Prefix=prefix)
        for o in page.get("Contents", [])
    }


def test_finalize_publishes_the_version_and_removes_the_versions_it_replaced(apps: Any, example_nwb: Path) -> None:
    first = put_example(apps, example_nwb)
    done = FinalizeOutput.model_validate(convert(apps, load_event("plan.json")))
    folder = S3Prefix(bucket=OUTPUT_BUCKET, prefix="converted/incoming/sub-01_ses-01/")
    pointer = read_pointer(apps, folder)
    assert pointer is not None and pointer.token == f"v{first}" and done.output.endswith(f"/@v/v{first}/")
    second = put_example(apps, example_nwb)
    again = FinalizeOutput.model_validate(convert(apps, load_event("plan.json")))
    pointer = read_pointer(apps, folder)
    assert pointer is not None and pointer.token == f"v{second}" and pointer.source.version_id == second
    assert again.superseded_removed == done.chunk_files + done.metadata_files
    assert not objects(apps, f"{folder.prefix}@v/v{first}/")
    # A rerun of the published version changes nothing: already published, nothing to remove.
    rerun = FinalizeOutput.model_validate(convert(apps, load_event("plan.json")))
    assert rerun.superseded_removed == 0 and read_pointer(apps, folder) == pointer


def test_a_superseded_plan_deletes_nothing(apps: Any, example_nwb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 10: an old version's event, deferred, comes back after the new version converted with its
    viewer bundle. Its Plan checks the version before anything else and touches nothing."""
    monkeypatch.setenv("OUTPUT_FORMATS", "chunks,bundle")
    old = put_example(apps, example_nwb)
    put_example(apps, example_nwb)
    FinalizeOutput.model_validate(convert(apps, load_event("plan.json")))
    before = objects(apps, "converted/")
    assert any(k.endswith(".zarr/zarr.json") for k in before)  # the newest version's bundle is published
    # The names a conversion adds under its version folder fit the bound Plan checks key lengths with.
    versions = [k.split("/@v/", 1)[1].split("/", 1)[1] for k in before if "/@v/" in k]
    assert max(len(n.encode()) - len("sub-01_ses-01") for n in versions) <= OUTPUT_NAME_BYTES
    late = load_event("s3_object_created.json")
    late["detail"]["object"]["version-id"] = old
    answer = Superseded.model_validate(run_plan(late))
    assert (answer.step, answer.source.version_id) == ("Plan", old)
    assert objects(apps, "converted/") == before
    assert not objects(apps, f"records/incoming/sub-01_ses-01/@v/v{old}/")


def test_a_writer_past_its_check_cannot_touch_the_published_output(
    apps: Any, example_nwb: Path, shuffled_nwb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 11: a writer of the old version that passed its version check just before the new version
    arrived writes into its own version folder; the published one stays the new version's, byte for
    byte, and the old version's Finalize removes what its writer left."""
    from nwb2pennsieve.cloud import write_chunks_step

    put_example(apps, example_nwb)
    old = PlanOutput.model_validate(run_plan(load_event("plan.json")))
    put_example(apps, example_nwb)  # the same file shape: the same chunk file names
    new = FinalizeOutput.model_validate(convert(apps, load_event("plan.json")))
    published = objects(apps, "converted/")
    monkeypatch.setattr(write_chunks_step, "superseded", lambda *args: None)  # past its check
    batches = json.loads(apps.get_object(Bucket=OUTPUT_BUCKET, Key=old.write_batches.key)["Body"].read())
    for batch in batches:
        item = {**old.dump(), "batch": batch}
        WriteChunksOutput.model_validate(write_app.lambda_handler(item, FakeLambdaContext("write")))
    assert objects(apps, old.output.prefix)  # it wrote, into its own folder
    assert {k: v for k, v in objects(apps, "converted/").items() if k in published} == published
    pointer = read_pointer(apps, old.folder)
    assert pointer is not None and new.output.endswith(pointer.folder)
    finalized = Superseded.model_validate(finalize_app.lambda_handler(old.dump(), FakeLambdaContext("finalize")))
    assert finalized.removed > 0 and objects(apps, "converted/") == published


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("incoming/a.NWB", "does not end in .nwb"),
        ("incoming/.nwb", "no name before .nwb"),
        ("incoming/@v/a.nwb", "starts with '@'"),
        ("incoming/" + "x" * 960 + ".nwb", "too long: its output keys"),
    ],
)
def test_a_key_without_a_folder_of_its_own_is_refused_before_any_write(apps: Any, key: str, reason: str) -> None:
    """Item 7/12: only keys whose folder is theirs alone, and whose derived keys fit S3's 1,024 bytes."""
    apps.put_object(Bucket=INPUT_BUCKET, Key=key, Body=b"never read")
    with pytest.raises(InvalidInputError, match=reason) as err:
        run_plan({"bucket": INPUT_BUCKET, "key": key})
    assert str(err.value).startswith(f"s3://{INPUT_BUCKET}/{key}: ")
    assert "Contents" not in apps.list_objects_v2(Bucket=OUTPUT_BUCKET)


@pytest.fixture
def pennsieve() -> Any:
    """The fake Pennsieve on 127.0.0.1, accepting one static session token (no Cognito under mock_aws)."""
    from tests.fake_pennsieve import FakePennsieve

    server = FakePennsieve(static_tokens=("session-token-789",)).start()
    yield server
    server.stop()


def upload_event(finalized: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """What the UploadFiles Map's ItemSelector builds (the contract tests check the same shape)."""
    return {"source": finalized["source"], "upload": finalized["upload"], "batch": item}


def run_upload_map(s3: Any, finalized: dict[str, Any]) -> list[UploadFilesOutput]:
    """The upload Map by hand: read its upload batches, invoke UploadFiles once per item."""
    batches = finalized["upload"]["uploadBatches"]
    items = json.loads(s3.get_object(Bucket=batches["bucket"], Key=batches["key"])["Body"].read())
    return [
        UploadFilesOutput.model_validate(
            upload_app.lambda_handler(upload_event(finalized, item), FakeLambdaContext("upload"))
        )
        for item in items
    ]


def test_plan_takes_the_import_target_from_the_object_metadata_and_finalize_prepares_the_upload(
    apps: Any, example_nwb: Path, pennsieve: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The legacy flow's steps (the asset flow's: tests/e2e/test_cloud_asset_import.py)."""
    use_import_secret(monkeypatch, pennsieve.url)
    monkeypatch.setenv("LEGACY_IMPORT_FLOW", "true")
    monkeypatch.setenv("UPLOAD_BATCH_FILES", "4")
    dataset = pennsieve.add_dataset()
    package = pennsieve.add_package(dataset)
    run = pennsieve.add_run(dataset, [package])
    apps.put_object(
        Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes(), Metadata={"integration-id": run}
    )
    event = load_event("plan.json")
    event["importerEnabled"] = True
    planned = run_plan(event)
    assert planned["target"] == {"integrationId": run}
    write_app.lambda_handler(fixture_for("write_chunks.json", planned), FakeLambdaContext("write"))
    finalize_event = {
        **fixture_for("finalize.json", planned),
        "importerEnabled": planned["importerEnabled"],
        "target": planned["target"],
    }
    finalized = finalize_app.lambda_handler(finalize_event, FakeLambdaContext("finalize"))
    result = FinalizeOutput.model_validate(finalized)
    # Finalize prepared the import (channels, import manifest) and uploaded nothing yet.
    assert result.imported is False and result.upload is not None and result.import_summary is not None
    (imp,) = pennsieve.imports.values()
    assert len(imp.files) == 14 and not pennsieve.uploaded_files(imp.id)
    assert len(pennsieve.channels[package]) == result.channels
    assert (result.upload.batches, result.upload.files, result.upload.files_total) == (4, 14, 14)
    assert result.upload.records == RecordsFolder.of_plan(S3Ref.model_validate(planned["plan"])).as_prefix()

    reports = run_upload_map(apps, finalized)

    assert [r.uploaded for r in reports] == [4, 4, 4, 2]
    assert len(pennsieve.uploaded_files(imp.id)) == 14
    done = FinalizeOutput.model_validate(
        complete_app.lambda_handler({**finalized, "uploadFiles": {"MapRunArn": "arn"}}, FakeLambdaContext("complete"))
    )
    assert done.imported is True and done.import_summary is not None
    assert (done.import_summary.files_uploaded, done.import_summary.files_already_uploaded) == (14, 0)

    again = finalize_app.lambda_handler(finalize_event, FakeLambdaContext("finalize"))  # a console rerun
    assert (again["upload"]["batches"], again["upload"]["files"]) == (0, 0)
    assert len(pennsieve.imports) == 1 and len(pennsieve.channels[package]) == result.channels
    assert again["importSummary"]["channelsReused"] == result.channels
    logs = capsys.readouterr()
    assert "session-token-789" not in json.dumps(finalized) + json.dumps(again) + logs.out + logs.err


def _finalize_with_import(
    apps: Any, example_nwb: Path, pennsieve: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], Any]:
    """Plan, write and finalize ``example_nwb`` with the importer on, into a new dataset + package.

    Returns Finalize's event (for a rerun) and its output. The legacy flow."""
    use_import_secret(monkeypatch, pennsieve.url)
    monkeypatch.setenv("LEGACY_IMPORT_FLOW", "true")
    dataset = pennsieve.add_dataset()
    package = pennsieve.add_package(dataset)
    planned = plan_and_write(apps, example_nwb)
    finalize_event = {
        **fixture_for("finalize.json", planned),
        "importerEnabled": True,
        "target": {"datasetId": dataset, "packageId": package},
    }
    return finalize_event, finalize_app.lambda_handler(finalize_event, FakeLambdaContext("finalize"))


def test_upload_files_with_its_event_uploads_the_batch(
    apps: Any, example_nwb: Path, pennsieve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, finalized = _finalize_with_import(apps, example_nwb, pennsieve, monkeypatch)
    event = load_event("upload_files.json")
    assert set(event["upload"]) - {"asset", "maxFileBytes"} == set(finalized["upload"]) - {"importId"}
    event["upload"] = finalized["upload"]
    records = S3Prefix.model_validate(event["upload"]["records"])
    event["batch"]["names"] = RecordsFolder.at(records).upload_batch(0).dump()
    out = UploadFilesOutput.model_validate(upload_app.lambda_handler(event, FakeLambdaContext("upload")))
    assert (out.batch, out.files, out.uploaded, out.already_uploaded) == (0, 14, 14, 0)
    again = UploadFilesOutput.model_validate(upload_app.lambda_handler(event, FakeLambdaContext("upload")))
    assert (again.uploaded, again.already_uploaded) == (0, 14)  # a retried item uploads nothing again
    (imp,) = pennsieve.imports.values()
    assert len(pennsieve.uploaded_files(imp.id)) == 14


def test_complete_import_with_its_event_returns_the_import_summary(
    apps: Any, example_nwb: Path, pennsieve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, finalized = _finalize_with_import(apps, example_nwb, pennsieve, monkeypatch)
    run_upload_map(apps, finalized)
    event = load_event("complete_import.json")
    assert set(event) - {"uploadFiles"} == set(finalized)
    event.update(finalized)  # this run's ids and keys; the upload Map's result as in the fixture
    done = FinalizeOutput.model_validate(complete_app.lambda_handler(event, FakeLambdaContext("complete")))
    assert done.imported is True and done.import_summary is not None
    assert (done.import_summary.files_uploaded, done.import_summary.upload_batches) == (14, 1)
    assert done.import_summary.import_id == finalized["upload"]["importId"]


def test_complete_import_lists_the_files_not_uploaded(
    apps: Any, example_nwb: Path, pennsieve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    finalize_event, finalized = _finalize_with_import(apps, example_nwb, pennsieve, monkeypatch)
    # The Map failed before any upload (as when its ItemReader fails): its error is the reason given.
    event = {**finalized, "uploadError": {"Error": "States.ItemReaderFailed", "Cause": "no upload-batches.json"}}
    with pytest.raises(UploadError) as err:
        complete_app.lambda_handler(event, FakeLambdaContext("complete"))
    message = str(err.value)
    assert message.startswith(f"s3://{INPUT_BUCKET}/{EXAMPLE_KEY}: 14 of 14 files failed to upload: channel-")
    assert "States.ItemReaderFailed: no upload-batches.json" in message
    prefix = finalized["upload"]["output"]["prefix"]
    failed = json.loads(apps.get_object(Bucket=OUTPUT_BUCKET, Key=prefix + "import-failed.json")["Body"].read())
    assert len(failed["failed"]) == 14
    # The next Finalize (a rerun) starts afresh: the old list is gone.
    finalize_app.lambda_handler(finalize_event, FakeLambdaContext("finalize"))
    assert "Contents" not in apps.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=prefix + "import-failed.json")


def test_plan_with_the_importer_on_and_no_target_fails_before_any_work(apps: Any, example_nwb: Path) -> None:
    put_example(apps, example_nwb)
    event = load_event("plan.json")
    event["importerEnabled"] = True
    with pytest.raises(TargetNotFoundError, match=r"s3://.*sub-01_ses-01\.nwb: no import target"):
        run_plan(event)
    assert "Contents" not in apps.list_objects_v2(Bucket=OUTPUT_BUCKET)  # no plan, no write batches


def test_plan_takes_the_target_from_the_execution_input_first(apps: Any, example_nwb: Path) -> None:
    apps.put_object(
        Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes(), Metadata={"integration-id": "from-meta"}
    )
    event = {**load_event("plan.json"), "importerEnabled": True, "datasetId": "N:dataset:1", "packageId": "N:package:2"}
    assert run_plan(event)["target"] == {"datasetId": "N:dataset:1", "packageId": "N:package:2"}


def test_finalize_import_without_a_secret_is_a_clear_error(apps: Any, example_nwb: Path) -> None:
    planned = plan_and_write(apps, example_nwb)
    event = fixture_for("finalize.json", planned)
    event["importerEnabled"] = True
    with pytest.raises(ConfigurationError, match="PENNSIEVE_SECRET_ARN"):
        finalize_app.lambda_handler(event, FakeLambdaContext("finalize"))


def test_the_secret_is_read_once_and_again_after_its_max_age(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="pennsieve", SecretString=json.dumps({"SESSION_TOKEN": "one"}))["ARN"]
    env = credentials_env(arn, api_host="https://api.test", api_host2="https://api2.test")
    assert env == {
        "SESSION_TOKEN": "one",
        "PENNSIEVE_API_HOST": "https://api.test",
        "PENNSIEVE_API_HOST2": "https://api2.test",
    }
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"SESSION_TOKEN": "two"}))
    # A warm invocation within the max age uses the value it read.
    assert credentials_env(arn, api_host="h", api_host2="h2")["SESSION_TOKEN"] == "one"
    # Past the max age it reads the secret again (here a max age of 0 s: every read).
    monkeypatch.setattr(imports, "SECRET_MAX_AGE_SECONDS", 0)
    other = secrets.create_secret(Name="rotated", SecretString=json.dumps({"SESSION_TOKEN": "one"}))["ARN"]
    assert credentials_env(other, api_host="h", api_host2="h2")["SESSION_TOKEN"] == "one"
    secrets.put_secret_value(SecretId=other, SecretString=json.dumps({"SESSION_TOKEN": "two"}))
    assert credentials_env(other, api_host="h", api_host2="h2")["SESSION_TOKEN"] == "two"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "cannot read the Pennsieve credentials secret"),
        ("not json", "cannot read the Pennsieve credentials secret"),
        ('["a list"]', "is not a JSON object"),
        ('{"OTHER": "x"}', "holds none of PENNSIEVE_API_KEY"),
    ],
)
def test_a_bad_secret_is_a_clear_error_without_its_value(aws: None, value: str | None, reason: str) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    if value is None:
        arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf"
    else:
        arn = secrets.create_secret(Name="pennsieve", SecretString=value)["ARN"]
    with pytest.raises(ConfigurationError, match=reason) as err:
        credentials_env(arn, api_host="h", api_host2="h2")
    assert arn in str(err.value) and "a list" not in str(err.value) and "OTHER" not in str(err.value)
