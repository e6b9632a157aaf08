"""A whole import against the fake Pennsieve (real HTTP on 127.0.0.1), reruns and every fault."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from nwb2pennsieve.output.storage import LocalStore, S3Store
from nwb2pennsieve.pennsieve import (
    ImportTarget,
    PennsieveClient,
    PennsieveError,
    TargetSpec,
    UploadError,
    choose_target_spec,
    import_store,
    prepare_import,
    resolve_target,
    target_spec_from_s3_object,
    upload_batches,
    upload_files,
)
from nwb2pennsieve.pennsieve.errors import ChannelError, PennsieveHTTPError
from nwb2pennsieve.pennsieve.manifest import remote_file_path
from nwb2pennsieve.pennsieve.records import FAILED_NAME, STATE_NAME
from tests.fake_pennsieve import FakePennsieve, Fault
from tests.fake_pennsieve.fixtures import *  # noqa: F403  (the pytest fixtures)
from tests.fake_pennsieve.fixtures import FAST_RETRY, LocalSpec, read_json, write_output

SPECS = [LocalSpec("Ch1"), LocalSpec("Ch2", chunks=3), LocalSpec("ref", rate=30000.0, chunks=1)]


def _target(fake: FakePennsieve) -> ImportTarget:
    dataset = fake.add_dataset()
    return ImportTarget(dataset_id=dataset, package_id=fake.add_package(dataset), integration_id="run-1")


def _check_uploaded(fake: FakePennsieve, store: Any, written: dict[str, bytes], import_id: str) -> None:
    """Every local file is in the import under its channel's node id, byte for byte."""
    state = read_json(store, STATE_NAME)
    expected = {remote_file_path(state["channels"][str(int(name[8:13]))], name): blob for name, blob in written.items()}
    assert fake.uploaded_files(import_id) == expected
    assert set(fake.imports[import_id].files.values()) == set(expected)


def test_full_import_then_rerun_duplicates_nothing(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)

    result = import_store(store, target, client, workers=8)

    assert (result.channels, result.channels_created, result.files, result.files_uploaded) == (3, 3, 6, 6)
    channels = fake.channels[target.package_id]
    assert [(c["name"], c["rate"], c["channelType"], c["group"], c["unit"]) for c in channels] == [
        ("Ch1", 1000.0, "CONTINUOUS", "default", "uV"),
        ("Ch2", 1000.0, "CONTINUOUS", "default", "uV"),
        ("ref", 30000.0, "CONTINUOUS", "default", "uV"),
    ]
    meta = read_json(store, "channel-00001.metadata.json")
    assert (channels[1]["start"], channels[1]["end"]) == (meta["start"], meta["end"])
    imp = fake.imports[result.import_id]
    assert (imp.dataset_id, imp.package_id, imp.integration_id) == (
        target.dataset_id,
        target.package_id,
        "run-1",
    )
    _check_uploaded(fake, store, written, result.import_id)
    props = {(p["category"], p["key"]): p["value"] for p in fake.packages[target.package_id]["properties"]}
    assert props == {("Viewer", "subtype"): "pennsieve_timeseries", ("Pennsieve", "icon"): "timeseries"}
    assert fake.auth_headers_on_put == 0  # the bearer token never goes to the presigned URL

    puts_before = fake.requests["PUT ^/s3/([^/]+)/([^/]+)$"]
    again = import_store(store, target, client, workers=8)

    assert (again.channels_created, again.channels_reused, again.files_uploaded) == (0, 3, 0)
    assert again.files_already_uploaded == 6
    assert again.import_id == result.import_id
    assert len(fake.channels[target.package_id]) == 3
    assert len(fake.imports) == 1
    assert fake.requests["PUT ^/s3/([^/]+)/([^/]+)$"] == puts_before


def test_rerun_without_state_reuses_channels_by_the_matching_rule(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    write_output(store, SPECS)
    target = _target(fake)
    import_store(store, target, client)
    for name in list(store.list_names("import-")):
        store.delete(name)  # e.g. the output was regenerated

    again = import_store(store, target, client)

    assert (again.channels_created, again.channels_reused) == (0, 3)
    assert len(fake.channels[target.package_id]) == 3


def test_existing_channels_are_matched_without_collapsing(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    write_output(store, [LocalSpec("A1"), LocalSpec("a1"), LocalSpec("B", rate=1000.0)])
    target = _target(fake)
    pkg = target.package_id
    match = fake.add_channel(pkg, name="a1", rate=1010.0, channelType="continuous", group="g", start=0, end=1)
    fake.add_channel(pkg, name="B", rate=1030.0, channelType="CONTINUOUS", start=0, end=1)  # rate 3 % off
    fake.add_channel(pkg, name="A1", rate=1000.0, channelType="EVENT", start=0, end=1)  # another type, no group
    fake.add_channel(pkg, name="weird", channelType=None)  # a shape the import must tolerate

    result = import_store(store, target, client)

    assert (result.channels_reused, result.channels_created) == (1, 2)
    state = read_json(store, STATE_NAME)
    assert state["channels"]["0"] == match  # the first local "A1" takes the one match
    assert len({*state["channels"].values()}) == 3  # "a1" got its own channel, not A1's
    assert len(fake.channels[pkg]) == 4 + 2


def test_blank_channel_name_is_never_sent(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    write_output(store, [LocalSpec("  "), LocalSpec("x")])
    target = _target(fake)

    import_store(store, target, client)

    assert [c["name"] for c in fake.channels[target.package_id]] == ["channel-00000", "x"]


def test_large_manifest_is_batched_under_the_size_limit(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, [LocalSpec(f"c{i}", chunks=25, samples=4) for i in range(4)])
    target = _target(fake)
    fake.max_body = 4_000  # a tiny API Gateway: 100 files need many requests

    result = import_store(store, target, client, workers=16, manifest_max_bytes=3_500)

    assert fake.imports[result.import_id].appends >= 3
    assert fake.statuses[413] == 0
    _check_uploaded(fake, store, written, result.import_id)


def test_imports_an_s3_output_streaming_from_s3(fake, client, s3):
    bucket = f"out-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    store = S3Store(bucket, "records/rec1", s3)
    written = write_output(store, SPECS)
    target = _target(fake)

    result = import_store(store, target, client, workers=4)

    _check_uploaded(fake, store, written, result.import_id)
    assert store.exists(STATE_NAME)


# -- faults: each run ends in success with nothing duplicated, or in a clear failure a rerun completes --


def _assert_complete(fake, store, written, target, import_id):
    assert len(fake.channels[target.package_id]) == len(SPECS)
    _check_uploaded(fake, store, written, import_id)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", method="GET", path="/presign$", status=503, times=4),  # < 5 attempts a file
        Fault("status", method="PUT", path="^/s3/", status=500, times=4),
        Fault("status", method="PUT", path="^/s3/", status=500, times=2, phase="after"),
        Fault("status", method="GET", path="/presign$", status=429, retry_after="0", times=4),
        Fault("status", method="POST", path="^/import$", status=502, times=1),
        Fault("status", method="GET", path="/channels$", status=504, times=2),
        Fault("drop", method="PUT", path="^/s3/", times=3),
        Fault("drop", method="PUT", path="^/s3/", times=2, phase="after"),
        Fault("delay", method="GET", path="/presign$", delay=0.3, times=6),
    ],
    ids=lambda f: f"{f.action}-{f.method}-{f.path}-{f.status}-{f.phase}",
)
def test_transient_faults_are_retried(fake, client, tmp_path, fault):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    fake.add_fault(fault)

    result = import_store(store, target, client, workers=4)

    assert fault.fired == fault.times
    _assert_complete(fake, store, written, target, result.import_id)


def test_slow_answers_beyond_the_read_timeout_are_retried(fake, settings, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    fault = fake.add_fault(Fault("delay", method="GET", path="/presign$", delay=1.0, times=2))
    quick = PennsieveClient.from_settings(settings, retry=FAST_RETRY.__class__(base_delay=0.01, read_timeout=0.4))

    result = import_store(store, target, quick, workers=2)

    assert fault.fired == 2
    _assert_complete(fake, store, written, target, result.import_id)


def test_channel_creation_failing_after_the_server_created_them_does_not_duplicate(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    fake.add_fault(Fault("status", method="POST", path="/channels$", status=500, phase="after"))

    result = import_store(store, target, client, retry_sleep_s=0.01)

    assert result.channels_created == 0
    assert result.channels_reused == 3
    _assert_complete(fake, store, written, target, result.import_id)


def test_token_expiry_in_the_middle_of_the_upload_refreshes_once(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, [LocalSpec(f"c{i}", chunks=10, samples=4) for i in range(3)])
    target = _target(fake)
    fake.add_fault(Fault("expire_tokens", method="GET", path="/presign$", skip=7))

    result = import_store(store, target, client, workers=16)

    assert len(fake.tokens_first_seen) == 2  # the first token and exactly one refreshed token
    assert client.http.auth.logins + client.http.auth.refreshes == 2  # type: ignore[union-attr]
    state = read_json(store, STATE_NAME)
    expected = {remote_file_path(state["channels"][str(int(n[8:13]))], n): b for n, b in written.items()}
    assert fake.uploaded_files(result.import_id) == expected


def test_persistent_failures_fail_with_the_list_and_a_rerun_completes(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    # 3 files' PUTs are dropped more times than the retries allow (5 attempts each).
    fault = fake.add_fault(Fault("drop", method="PUT", path="^/s3/", times=15))

    with pytest.raises(UploadError) as caught:
        import_store(store, target, client, workers=1)

    error = caught.value
    assert len(error.failed) == 3
    assert error.total == 6
    assert str(error).startswith("3 of 6 files failed to upload: channel-")
    assert "rerun" in str(error)
    assert "\n" not in str(error)
    assert read_json(store, FAILED_NAME)["failed"] == error.failed
    assert fault.fired == 15
    import_id = next(iter(fake.imports))
    assert len(fake.uploaded_files(import_id)) == 3

    puts = fake.requests["PUT ^/s3/([^/]+)/([^/]+)$"]
    result = import_store(store, target, client, workers=4)

    assert (result.files_uploaded, result.files_already_uploaded, result.import_id) == (3, 3, import_id)
    assert fake.requests["PUT ^/s3/([^/]+)/([^/]+)$"] == puts + 3
    assert not store.exists(FAILED_NAME)
    _assert_complete(fake, store, written, target, import_id)


def test_a_run_killed_after_the_channels_reruns_cleanly(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    fake.add_fault(Fault("status", method="POST", path="^/import$", status=400, times=1))

    with pytest.raises(PennsieveHTTPError, match="HTTP 400"):
        import_store(store, target, client)
    assert len(fake.channels[target.package_id]) == 3
    assert not fake.imports

    result = import_store(store, target, client)

    assert result.channels_reused == 3
    _assert_complete(fake, store, written, target, result.import_id)


def test_orphan_chunks_without_metadata_fail_clearly(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    write_output(store, SPECS)
    store.delete("channel-00001.metadata.json")

    with pytest.raises(ChannelError, match="00001"):
        import_store(store, _target(fake), client)
    assert not fake.imports


def test_a_different_target_starts_a_new_import(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    first = import_store(store, _target(fake), client)
    other = _target(fake)

    second = import_store(store, other, client)

    assert second.import_id != first.import_id
    assert second.files_uploaded == 6
    assert json.loads(store.read_bytes(STATE_NAME))["target"]["package_id"] == other.package_id
    _check_uploaded(fake, store, written, second.import_id)


def test_prepare_then_upload_batches_like_a_map(fake, client, s3):
    """The cloud split: Finalize prepares, then each Map item uploads one batch of names."""
    bucket = f"map-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    store = S3Store(bucket, "rec", s3)
    written = write_output(store, [LocalSpec(f"c{i}", chunks=5, samples=4) for i in range(4)])
    target = _target(fake)

    prepared = prepare_import(store, target, client)
    batches = upload_batches(store, batch_size=6)
    reports = []
    threads = [
        threading.Thread(target=lambda b=b: reports.append(upload_files(store, client, names=b, workers=3)))
        for b in batches
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert prepared.files == 20
    assert [len(b) for b in batches] == [6, 6, 6, 2]
    assert sorted(n for b in batches for n in b) == sorted(written)
    assert upload_batches(store) == []  # all done
    assert prepared.files_registered == 20
    assert sorted(r.uploaded for r in reports) == sorted(len(b) for b in batches)
    _check_uploaded(fake, store, written, prepared.import_id)
    again = import_store(store, target, client)  # nothing left to do
    assert (again.files_uploaded, again.files_already_uploaded, again.channels_created) == (0, 20, 0)
    with pytest.raises(PennsieveError, match="not chunk files"):
        upload_files(store, client, names=["channel-00099_1_2.bin.gz"])


def test_target_from_the_uploaded_nwbs_s3_metadata(fake, client, s3):
    bucket = f"in-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    run = fake.add_run(dataset, [package])
    s3.put_object(Bucket=bucket, Key="a.nwb", Body=b"x", Metadata={"integration-id": run})
    s3.put_object(Bucket=bucket, Key="b.nwb", Body=b"x")

    spec = choose_target_spec(TargetSpec(), target_spec_from_s3_object(s3, bucket, "a.nwb"))

    assert resolve_target(client, spec) == ImportTarget(dataset_id=dataset, package_id=package, integration_id=run)
    assert target_spec_from_s3_object(s3, bucket, "b.nwb") == TargetSpec()


def test_lost_progress_records_only_cost_re_uploads(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    first = import_store(store, target, client)
    for name in list(store.list_names("import-uploaded-")):
        store.delete(name)  # e.g. a crash before the progress was flushed

    again = import_store(store, target, client)

    assert (again.import_id, again.files_uploaded, again.channels_created) == (first.import_id, 6, 0)
    assert len(fake.imports) == 1
    assert len(fake.imports[first.import_id].files) == 6  # the same upload keys: nothing duplicated
    _check_uploaded(fake, store, written, first.import_id)


def test_a_locked_dataset_fails_before_touching_channels(fake, client, tmp_path):
    store = LocalStore(tmp_path)
    write_output(store, SPECS)
    target = _target(fake)
    fake.lock_dataset(target.dataset_id)

    with pytest.raises(PennsieveError, match="locked"):
        import_store(store, target, client)
    assert fake.channels[target.package_id] == []
    assert not fake.imports
