"""The real ASL with the importer on in the legacy flow (LEGACY_IMPORT_FLOW: Pennsieve's import
manifest), executed by moto, against the fake Pennsieve (127.0.0.1).

Finalize prepares the import (channels, import manifest) and writes the upload batches; the
UploadFiles Distributed Map uploads one batch per child execution; CompleteImport checks that
every chunk file is uploaded. moto does not fail a Distributed Map whose item failed (it leaves
``null``); on AWS the Map fails and its Catch goes to CompleteImport. Either way CompleteImport
is what fails the execution, with the count and the list of the files that are not uploaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.upload_files import app as upload_app
from nwb2pennsieve.cloud.imports import upload_names
from nwb2pennsieve.pennsieve.records import FAILED_NAME, UPLOADED_PREFIX
from tests.cloud_fixtures import EXAMPLE_KEY, INPUT_BUCKET, OUTPUT_BUCKET, REGION, Stack
from tests.fake_pennsieve import FakePennsieve, Fault
from tests.fake_pennsieve.fixtures import FAST_RETRY

TOKEN = "session-token-789"


def output_prefix(stack: Stack) -> str:
    """The published version folder of the example key (what @current.json names): the chunk files
    and the import records are there."""
    folder = stack.published_folder(EXAMPLE_KEY)
    assert folder
    return folder


PUTS = "PUT ^/s3/([^/]+)/([^/]+)$"
CHUNK_FILES = 14  # of the example file at the default chunk size
BATCH_FILES = 3  # so the upload Map has several items


@pytest.fixture
def pennsieve() -> Iterator[FakePennsieve]:
    server = FakePennsieve(static_tokens=(TOKEN,)).start()
    yield server
    server.stop()


@pytest.fixture
def importing(stack: Stack, pennsieve: FakePennsieve, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials secret, hosts, a small upload batch, fast retries; the NWB object names its run."""
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="pennsieve", SecretString=json.dumps({"SESSION_TOKEN": TOKEN})
    )["ARN"]
    monkeypatch.setenv("PENNSIEVE_SECRET_ARN", secret)
    monkeypatch.setenv("PENNSIEVE_API_HOST", pennsieve.url)
    monkeypatch.setenv("PENNSIEVE_API_HOST2", pennsieve.url)
    monkeypatch.setenv("UPLOAD_BATCH_FILES", str(BATCH_FILES))
    monkeypatch.setenv("LEGACY_IMPORT_FLOW", "true")  # the viewer-asset flow: test_cloud_asset_import.py
    dataset = pennsieve.add_dataset()
    package = pennsieve.add_package(dataset)
    run = pennsieve.add_run(dataset, [package])
    return {"dataset": dataset, "package": package, "run": run}


def fast_uploads(monkeypatch: pytest.MonkeyPatch, *, workers: int = 8) -> None:
    """The real uploader, with back-off in milliseconds instead of seconds."""
    monkeypatch.setattr(
        upload_app,
        "uploader",
        lambda store, env, names: upload_names(store, env, names, workers=workers, retry=FAST_RETRY),
    )


def put_nwb(stack: Stack, path: Path, run: str) -> None:
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=path.read_bytes(), Metadata={"integration-id": run})


def start(stack: Stack) -> dict[str, Any]:
    return stack.run({"bucket": INPUT_BUCKET, "key": EXAMPLE_KEY, "importerEnabled": True})


def calls(stack: Stack, since: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(UploadFiles batch invocations, CompleteImport invocations) since invocation ``since``."""
    invocations = stack.invocations[since:]
    return (
        [p for f, p in invocations if f == "UploadFilesFunction"],
        [p for f, p in invocations if f == "CompleteImportFunction"],
    )


def uploaded_names(stack: Stack) -> list[str]:
    prefix = output_prefix(stack)
    return [k for k in stack.objects(OUTPUT_BUCKET, prefix) if k[len(prefix) :].startswith("channel-")]


def test_the_upload_map_uploads_every_file_once_and_a_rerun_uploads_nothing(
    stack: Stack,
    importing: dict[str, str],
    pennsieve: FakePennsieve,
    example_nwb: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fast_uploads(monkeypatch)
    put_nwb(stack, example_nwb, importing["run"])

    desc = start(stack)

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    out = json.loads(desc["output"])
    assert out["imported"] is True
    summary = out["importSummary"]
    assert (summary["filesUploaded"], summary["filesAlreadyUploaded"]) == (CHUNK_FILES, 0)
    assert summary["uploadBatches"] == 5  # 14 files in batches of 3
    batches, completes = calls(stack)
    assert len(batches) == 5 and len(completes) == 1  # the Map really fanned out, one batch per child
    assert sorted(p["batch"]["batch"] for p in batches) == [0, 1, 2, 3, 4]
    assert all(len(json.dumps(p)) < 4096 for _, p in stack.invocations)  # names travel in S3, not payloads
    (imp,) = pennsieve.imports.values()
    assert imp.package_id == importing["package"]
    assert len(pennsieve.uploaded_files(imp.id)) == CHUNK_FILES
    assert pennsieve.requests[PUTS] == CHUNK_FILES  # every file PUT exactly once
    channels = [c["name"] for c in pennsieve.channels[importing["package"]]]
    assert len(channels) == out["channels"] == 11
    # The uploaded bytes are the chunk files' bytes, under their channel's node id.
    state = json.loads(
        stack.s3.get_object(Bucket=OUTPUT_BUCKET, Key=output_prefix(stack) + "import-state.json")["Body"].read()
    )
    for key in uploaded_names(stack):
        name = key[len(output_prefix(stack)) :]
        if not name.endswith(".bin.gz"):
            continue
        remote = state["channels"][str(int(name[8:13]))] + "_" + name.split("_", 1)[1]
        assert (
            pennsieve.uploaded_files(imp.id)[remote]
            == stack.s3.get_object(Bucket=OUTPUT_BUCKET, Key=key)["Body"].read()
        )

    seen = len(stack.invocations)
    again = start(stack)  # a rerun of the same input and target

    assert again["status"] == "SUCCEEDED", again.get("cause")
    summary = json.loads(again["output"])["importSummary"]
    assert (summary["filesUploaded"], summary["filesAlreadyUploaded"], summary["uploadBatches"]) == (0, 14, 0)
    assert (summary["channelsCreated"], summary["channelsReused"], summary["filesRegistered"]) == (0, 11, 0)
    batches, completes = calls(stack, seen)
    assert not batches and len(completes) == 1  # the Choice skipped the Map: nothing left to upload
    assert pennsieve.requests[PUTS] == CHUNK_FILES
    assert len(pennsieve.imports) == 1 and len(pennsieve.channels[importing["package"]]) == 11
    logs = capsys.readouterr()
    history = json.dumps(stack.invocations) + desc["output"] + again["output"]
    assert TOKEN not in history + logs.out + logs.err


def test_a_dropped_put_fails_the_execution_with_the_count_and_a_rerun_completes_only_that(
    stack: Stack,
    importing: dict[str, str],
    pennsieve: FakePennsieve,
    example_nwb: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One batch at a time, one file at a time: the first file's PUT is dropped on all its 5 attempts.
    stack.redeploy(UploadConcurrency=1)
    fast_uploads(monkeypatch, workers=1)
    fault = pennsieve.add_fault(Fault("drop", method="PUT", path="^/s3/", times=5))
    put_nwb(stack, example_nwb, importing["run"])

    desc = start(stack)

    assert desc["status"] == "FAILED"
    assert fault.fired == 5
    assert desc["error"] == "UploadError"
    message = json.loads(desc["cause"])["errorMessage"]
    assert message.startswith(f"s3://{INPUT_BUCKET}/{EXAMPLE_KEY}: 1 of {CHUNK_FILES} files failed to upload: channel-")
    assert "rerun" in message and "first error:" in message
    failed = json.loads(
        stack.s3.get_object(Bucket=OUTPUT_BUCKET, Key=output_prefix(stack) + FAILED_NAME)["Body"].read()
    )
    assert len(failed["failed"]) == 1 and failed["failed"][0] in message
    (imp,) = pennsieve.imports.values()
    assert len(pennsieve.uploaded_files(imp.id)) == CHUNK_FILES - 1
    batches, _ = calls(stack)
    assert len(batches) == 5  # the other batches still ran

    seen = len(stack.invocations)
    puts = pennsieve.requests[PUTS]
    again = start(stack)

    assert again["status"] == "SUCCEEDED", again.get("cause")
    summary = json.loads(again["output"])["importSummary"]
    assert (summary["filesUploaded"], summary["filesAlreadyUploaded"]) == (1, CHUNK_FILES - 1)
    assert pennsieve.requests[PUTS] == puts + 1  # only the missing file
    batches, _ = calls(stack, seen)
    assert [
        len(json.loads(stack.s3.get_object(Bucket=OUTPUT_BUCKET, Key=b["batch"]["names"]["key"])["Body"].read()))
        for b in batches
    ] == [1]
    assert len(pennsieve.uploaded_files(imp.id)) == CHUNK_FILES and len(pennsieve.imports) == 1
    assert len(pennsieve.channels[importing["package"]]) == 11
    assert "Contents" not in stack.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=output_prefix(stack) + FAILED_NAME)
    records = stack.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=output_prefix(stack) + UPLOADED_PREFIX)["Contents"]
    assert records  # progress is recorded next to the output, where a rerun looks


def test_importer_off_skips_the_upload_map(stack: Stack, example_nwb: Path) -> None:
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    desc = stack.run({"bucket": INPUT_BUCKET, "key": EXAMPLE_KEY})
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    out = json.loads(desc["output"])
    assert out["imported"] is False and "upload" not in out
    assert not [f for f, _ in stack.invocations if f == "UploadFilesFunction"]
