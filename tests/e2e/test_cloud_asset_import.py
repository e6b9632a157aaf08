"""The real ASL with the importer on in the viewer-asset flow, executed by moto, against the fake
Pennsieve (127.0.0.1) and its S3 (a moto server of its own behind the credential-checking gate).

Finalize finds or creates the asset and its channels and writes the upload batches of what the
asset's prefix lacks; each UploadFiles item reads its chunk files from the output bucket with its
role and writes them with upload credentials it obtains itself; CompleteImport lists the prefix,
registers the ranges and finishes the asset. IAM is enforced on every call the functions make
with their roles; the calls signed with the asset's credentials are the gate's to check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nwb2pennsieve.pennsieve import asset_s3
from nwb2pennsieve.pennsieve.http import RetryPolicy
from tests.cloud_fixtures import EXAMPLE_KEY, INPUT_BUCKET, OUTPUT_BUCKET, Stack, use_import_secret
from tests.fake_pennsieve import FakePennsieve
from tests.fake_pennsieve.fixtures import assert_imported
from tests.fake_pennsieve.fixtures import s3_gate as s3_gate  # the session's gate process (a fixture)
from tests.fake_pennsieve.s3gate import S3Gate

TOKEN = "session-token-789"
CHUNK_FILES = 14  # of the example file at the default chunk size
BATCH_FILES = 3  # so the upload Map has several items


@pytest.fixture
def pennsieve(s3_gate: S3Gate, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePennsieve]:
    """The fake Pennsieve; only the asset's clients reach its S3 (the functions' own stay in moto)."""
    s3_gate.call("reset")
    monkeypatch.setattr(asset_s3, "ENDPOINT_URL", s3_gate.url)
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after=None: 0.005)
    server = FakePennsieve(static_tokens=(TOKEN,), s3=s3_gate).start()
    yield server
    server.stop()


@pytest.fixture
def importing(stack: Stack, pennsieve: FakePennsieve, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials secret, hosts, a small upload batch; the asset's keys are the gate's to check."""
    use_import_secret(monkeypatch, pennsieve.url)  # a session token: TOKEN
    monkeypatch.setenv("UPLOAD_BATCH_FILES", str(BATCH_FILES))
    stack.iam.external = lambda key: key in {c.access_key_id for c in pennsieve.issued}
    dataset = pennsieve.add_dataset()
    package = pennsieve.add_package(dataset)
    return {"dataset": dataset, "package": package, "run": pennsieve.add_run(dataset, [package])}


def put_nwb(stack: Stack, path: Path, metadata: dict[str, str], key: str = EXAMPLE_KEY) -> None:
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=key, Body=path.read_bytes(), Metadata=metadata)


def start(stack: Stack, key: str = EXAMPLE_KEY, **extra: Any) -> dict[str, Any]:
    return stack.run({"bucket": INPUT_BUCKET, "key": key, "importerEnabled": True, **extra})


def calls(stack: Stack, since: int = 0) -> dict[str, int]:
    counts: dict[str, int] = {}
    for function, _ in stack.invocations[since:]:
        counts[function] = counts.get(function, 0) + 1
    return counts


def written(stack: Stack, prefix: str | None = None) -> tuple[dict[str, bytes], dict[int, str]]:
    """The output's chunk files (name → bytes) and import-asset.json's channel map (by default the
    example's published version folder)."""
    prefix = prefix or stack.published_folder(EXAMPLE_KEY)
    objects = stack.objects(OUTPUT_BUCKET, prefix)
    files = {k[len(prefix) :]: v for k, v in objects.items() if k.endswith(".bin.gz")}
    state = json.loads(objects[prefix + "import-asset.json"])
    return files, {int(k): v for k, v in state["channels"].items()}


def test_the_state_machine_imports_into_a_viewer_asset_and_a_rerun_does_nothing(
    stack: Stack,
    importing: dict[str, str],
    pennsieve: FakePennsieve,
    s3_gate: S3Gate,
    example_nwb: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    put_nwb(stack, example_nwb, {"integration-id": importing["run"]})

    desc = start(stack)

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    out = json.loads(desc["output"])
    summary = out["importSummary"]
    assert out["imported"] is True and summary["asset"] == "created"
    assert (summary["filesUploaded"], summary["rangesRegistered"], summary["uploadBatches"]) == (14, 14, 5)
    assert calls(stack)["UploadFilesFunction"] == 5 and calls(stack)["CompleteImportFunction"] == 1
    files, mapping = written(stack)
    asset = assert_imported(pennsieve, s3_gate, importing["package"], files, mapping)
    assert asset == summary["assetId"] and pennsieve.assets[asset]["properties"]["source"] == "incoming/sub-01_ses-01"
    # Finalize's credentials (at creation and its renewal check) and each upload item's own.
    assert len(pennsieve.issued) >= 2 + 5

    seen = len(stack.invocations)
    again = start(stack)  # a rerun: the asset is finished

    assert again["status"] == "SUCCEEDED", again.get("cause")
    rerun = json.loads(again["output"])
    assert rerun["imported"] is True and rerun["importSummary"]["asset"] == "already finished"
    assert "upload" not in rerun and set(calls(stack, seen)) == {"PlanFunction", "WriteChunksFunction",
                                                                 "FinalizeFunction"}  # fmt: skip
    assert s3_gate.stats()["stored"] == CHUNK_FILES and len(pennsieve.assets) == 1
    # No credential in any payload, the execution's outputs, the logs or anything written to S3.
    logs = capsys.readouterr()
    # Where the files went, for the deploy runbook's Region check (deploy.md, section 4).
    where = f"to viewer asset {asset} in bucket pennsieve-viewer-assets (Region us-east-1)"
    assert f"uploading 3 files {where}" in caplog.text
    texts = [json.dumps(stack.invocations), desc["output"], again["output"], logs.out, logs.err]
    texts += [v.decode("utf-8", "replace") for v in stack.objects(OUTPUT_BUCKET).values()]
    secrets = [TOKEN, *pennsieve.secrets_issued()]
    assert not [s for s in secrets for t in texts if s in t]


def test_credentials_expiring_in_every_upload_item_are_renewed(
    stack: Stack, importing: dict[str, str], pennsieve: FakePennsieve, s3_gate: S3Gate, example_nwb: Path
) -> None:
    pennsieve.credential_puts = 2
    put_nwb(stack, example_nwb, {"integration-id": importing["run"]})

    desc = start(stack)

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert all(n <= 2 for n in s3_gate.stats()["puts_by_credential"].values())
    files, mapping = written(stack)
    assert_imported(pennsieve, s3_gate, importing["package"], files, mapping)


def test_a_failed_upload_item_fails_the_execution_and_a_new_one_resumes_the_asset(
    stack: Stack, importing: dict[str, str], pennsieve: FakePennsieve, s3_gate: S3Gate, example_nwb: Path
) -> None:
    stack.redeploy(UploadConcurrency=1)
    s3_gate.faults(slowdown=5 * 5)  # the first 5 files' every attempt
    put_nwb(stack, example_nwb, {"integration-id": importing["run"]})

    desc = start(stack)

    assert desc["status"] == "FAILED" and desc["error"] == "UploadError"
    message = json.loads(desc["cause"])["errorMessage"]
    (asset,) = pennsieve.assets
    assert message.startswith(f"s3://{INPUT_BUCKET}/{EXAMPLE_KEY}: ") and "files failed to upload" in message
    assert message.endswith(f"viewer asset {asset} is left unfinished: rerun to resume")
    failed = json.loads(
        stack.s3.get_object(Bucket=OUTPUT_BUCKET, Key=stack.published_folder(EXAMPLE_KEY) + "import-failed.json")[
            "Body"
        ].read()
    )
    stored = s3_gate.stats()["stored"]
    assert pennsieve.assets[asset]["status"] == "created" and stored + len(failed["failed"]) == CHUNK_FILES

    seen = len(stack.invocations)
    again = start(stack)

    assert again["status"] == "SUCCEEDED", again.get("cause")
    summary = json.loads(again["output"])["importSummary"]
    assert (summary["asset"], summary["assetId"], summary["filesUploaded"]) == ("resumed", asset, CHUNK_FILES - stored)
    assert (summary["rangesRegistered"], summary["channelsCreated"]) == (CHUNK_FILES, 0)
    assert calls(stack, seen)["UploadFilesFunction"] == -(-(CHUNK_FILES - stored) // BATCH_FILES)
    files, mapping = written(stack)
    assert_imported(pennsieve, s3_gate, importing["package"], files, mapping)  # each file PUT once in all
    assert "Contents" not in stack.s3.list_objects_v2(
        Bucket=OUTPUT_BUCKET, Prefix=stack.published_folder(EXAMPLE_KEY) + "import-failed"
    )


def test_without_pennsieve_renewing_credentials_finalize_stops_before_any_upload_and_cleans_up(
    stack: Stack, importing: dict[str, str], pennsieve: FakePennsieve, s3_gate: S3Gate, example_nwb: Path
) -> None:
    pennsieve.refresh = "unsupported"
    put_nwb(stack, example_nwb, {"integration-id": importing["run"]})

    desc = start(stack)

    assert desc["status"] == "FAILED"
    message = json.loads(desc["cause"])["errorMessage"]
    assert "could not renew the upload credentials" in message and "set LegacyImportFlow=true" in message
    assert desc["error"] == "AssetImportError" and "cleaned up (deleted 11 channels and viewer asset" in message
    assert "left unfinished" not in message
    assert not pennsieve.assets and not pennsieve.channels[importing["package"]]  # cleaned up
    assert "UploadFilesFunction" not in calls(stack) and s3_gate.stats()["stored"] == 0


def test_each_object_imports_into_the_target_its_input_or_metadata_names(
    stack: Stack, importing: dict[str, str], pennsieve: FakePennsieve, s3_gate: S3Gate, example_nwb: Path
) -> None:
    dataset = importing["dataset"]
    other = pennsieve.add_package(dataset)
    put_nwb(stack, example_nwb, {"dataset-id": dataset, "package-id": other}, key="incoming/a.nwb")
    put_nwb(stack, example_nwb, {"integration-id": importing["run"]}, key="incoming/b.nwb")

    # The object's metadata names its package; the execution input wins over it.
    assert start(stack, "incoming/a.nwb")["status"] == "SUCCEEDED"
    assert start(stack, "incoming/b.nwb", datasetId=dataset, packageId=importing["package"])["status"] == "SUCCEEDED"
    assert [a["properties"]["source"] for a in pennsieve.assets_of(other)] == ["incoming/a"]
    assert [a["properties"]["source"] for a in pennsieve.assets_of(importing["package"])] == ["incoming/b"]

    # A second recording into a package that holds another's: refused, nothing touched.
    desc = start(stack, "incoming/b.nwb", datasetId=dataset, packageId=other)
    assert desc["status"] == "FAILED" and desc["error"] == "AssetConflictError"
    assert "of another recording, 'incoming/a': one recording, one package" in json.loads(desc["cause"])["errorMessage"]
    assert len(pennsieve.assets) == 2 and not pennsieve.deletions
