"""The viewer-asset import (pennsieve-api.md §5) against the fake Pennsieve and its S3 (a moto
server behind a gate that checks the asset's credentials): the complete import, API and S3
faults, credentials that expire, a crash. Each scenario ends complete, or in one line saying
what became of the asset and a state a rerun completes (the test reruns and checks)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from nwb2pennsieve.local.cli import main
from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.pennsieve.asset_import import import_store_assets
from nwb2pennsieve.pennsieve.assets import AssetPolicy
from nwb2pennsieve.pennsieve.errors import AssetImportError, UploadError
from nwb2pennsieve.pennsieve.http import RetryPolicy
from nwb2pennsieve.pennsieve.records import ASSET_STATE_NAME
from nwb2pennsieve.pennsieve.target import ImportTarget
from tests.fake_pennsieve import FakePennsieve, Fault
from tests.fake_pennsieve.fixtures import *  # noqa: F403  (the pytest fixtures)
from tests.fake_pennsieve.fixtures import FAST_RETRY, LocalSpec, assert_imported, read_json, write_output

SPECS = [LocalSpec("Ch1"), LocalSpec("Ch2", chunks=3), LocalSpec("ref", rate=30000.0, chunks=1)]
MANY = [LocalSpec(f"C{i}", chunks=4) for i in range(5)]  # 20 chunk files
POLICY = AssetPolicy("nwb-asset", "timeseries", "active")


def _target(fake: FakePennsieve) -> ImportTarget:
    dataset = fake.add_dataset()
    return ImportTarget(dataset_id=dataset, package_id=fake.add_package(dataset))


def _import(store, target, client, **kw):
    return import_store_assets(
        store, target, [target.package_id], client, kw.pop("policy", POLICY), source="rec", retry=FAST_RETRY,
        sleep_s=0.01, workers=kw.pop("workers", 8), **kw,
    )  # fmt: skip


def _mapping(store) -> dict[int, str]:
    return {int(k): v for k, v in read_json(store, ASSET_STATE_NAME)["channels"].items()}


def _cli(store, target, monkeypatch, capsys, *extra: str) -> tuple[int, list[str]]:
    """``nwb2pennsieve import DIR`` as a user runs it: (exit status, stderr lines)."""
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after=None: 0.005)
    code = main(["import", str(store.root), "--dataset-id", target.dataset_id, "--package-id", target.package_id,
                 "--workers", "4", *extra])  # fmt: skip
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_complete_import_then_a_rerun_does_nothing(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)

    result = _import(store, target, client)

    assert (result.asset, result.channels, result.channels_created, result.files) == ("created", 3, 3, 6)
    assert (result.files_uploaded, result.ranges_registered, result.ranges_known) == (6, 6, 0)
    asset = assert_imported(fake, gate, target.package_id, written, _mapping(store))
    assert asset == result.asset_id
    assert gate.stats()["refused"] == {}
    # Only credentials Pennsieve issued for this asset wrote there.
    assert set(gate.stats()["puts_by_credential"]) <= {c.access_key_id for c in fake.issued}

    before = dict(fake.requests)
    again = _import(store, target, client)

    assert again.asset == "already finished" and again.asset_id == asset
    writes = {k: v - before.get(k, 0) for k, v in fake.requests.items() if not k.startswith("GET")}
    assert {k: v for k, v in writes.items() if v} == {"PUT ^/packages/([^/]+)$": 1}  # the properties only
    assert gate.stats()["stored"] == 6


def test_the_finished_status_is_a_setting(fake, gate, client, tmp_path):
    fake.finished_status = "ready"  # what another Pennsieve component calls a finished asset
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    ready = AssetPolicy("nwb-asset", "timeseries", "ready")

    assert _import(store, target, client, policy=ready).asset == "created"
    asset = assert_imported(fake, gate, target.package_id, written, _mapping(store))
    assert fake.assets[asset]["status"] == "ready"
    assert _import(store, target, client, policy=ready).asset == "already finished"


API_FAULTS = [
    Fault("status", method="GET", path="^/packages/assets$", status=503, times=2),
    Fault("status", method="POST", path="^/packages/assets$", status=429, retry_after="0"),
    Fault("status", method="POST", path="^/packages/assets$", status=503, phase="after"),  # created, answer lost
    Fault("drop", method="POST", path="^/packages/assets$", phase="after"),
    Fault("status", method="POST", path="/upload-credentials$", status=503, times=2),
    Fault("status", method="GET", path="/channels$", status=503, times=2),
    Fault("status", method="POST", path="/channels$", status=503, phase="after"),  # created, answer lost
    Fault("status", method="POST", path="/ranges$", status=503, times=2),
    Fault("status", method="POST", path="/ranges$", status=429, retry_after="0", phase="after"),
    Fault("status", method="PATCH", path="^/packages/assets/", status=503, times=2),
    Fault("status", method="PUT", path="^/packages/", status=503, times=2),
]


@pytest.mark.parametrize("fault", API_FAULTS, ids=lambda f: f"{f.method} {f.path} {f.status} {f.phase} {f.action}")
def test_transient_api_failures_are_retried_and_create_nothing_twice(fake, gate, client, tmp_path, fault):
    fake.credential_puts = 4  # a renewal happens on every run
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    fake.add_fault(fault)

    _import(store, target, client)

    assert fault.fired >= 1
    assert_imported(fake, gate, target.package_id, written, _mapping(store))
    assert len(fake.assets) == 1 and len(fake.channels[target.package_id]) == 3


def test_s3_slowdown_is_retried(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, MANY)
    target = _target(fake)
    gate.faults(slowdown=5)

    _import(store, target, client)

    assert gate.stats()["refused"] == {"SlowDown": 5}
    assert_imported(fake, gate, target.package_id, written, _mapping(store))


def test_credentials_that_expire_after_a_few_uploads_are_renewed(fake, gate, client, tmp_path):
    fake.credential_puts = 3
    store = LocalStore(tmp_path)
    written = write_output(store, MANY)
    target = _target(fake)

    _import(store, target, client, workers=4)

    stats = gate.stats()
    assert len(stats["puts_by_credential"]) >= 7  # 20 PUTs, at most 3 per credential
    assert all(n <= 3 for n in stats["puts_by_credential"].values())
    assert stats["refused"].get("ExpiredToken", 0) >= 1  # they did expire, and were renewed
    assert_imported(fake, gate, target.package_id, written, _mapping(store))


def test_credentials_pennsieve_cannot_renew_stop_the_run_and_a_rerun_resumes(
    fake, gate, tmp_path, monkeypatch, capsys, api_key
):
    monkeypatch.setenv("PENNSIEVE_API_KEY", api_key.key)
    monkeypatch.setenv("PENNSIEVE_API_SECRET", api_key.secret)
    for host in ("PENNSIEVE_API_HOST", "PENNSIEVE_API_HOST2"):
        monkeypatch.setenv(host, fake.url)
    fake.credential_puts = 5
    fake.refresh = "unsupported"
    store = LocalStore(tmp_path)
    written = write_output(store, MANY)
    target = _target(fake)

    code, err = _cli(store, target, monkeypatch, capsys)

    assert code == 1 and len(err) >= 1
    (asset,) = fake.assets.values()
    assert err[-1].startswith("error: ") and "files failed to upload" in err[-1]
    assert "could not renew the upload credentials" in err[-1]
    assert err[-1].endswith(f"viewer asset {asset['id']} is left unfinished: rerun to resume")
    assert asset["status"] == "created"
    assert gate.stats()["stored"] == 5  # what the first credentials allowed

    fake.refresh = "ok"
    code, _ = _cli(store, target, monkeypatch, capsys)

    assert code == 0
    assert_imported(fake, gate, target.package_id, written, _mapping(store))  # each file PUT once in all
    assert len(fake.assets) == 1


def test_a_run_killed_after_k_uploads_is_resumed_by_the_rerun(fake, gate, api_key, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, MANY)
    target = _target(fake)
    gate.faults(pause_after_puts=7)
    env = {**os.environ, "PENNSIEVE_API_HOST": fake.url, "PENNSIEVE_API_HOST2": fake.url,
           "PENNSIEVE_API_KEY": api_key.key, "PENNSIEVE_API_SECRET": api_key.secret}  # fmt: skip
    command = [sys.executable, "-m", "nwb2pennsieve.local.cli", "import", str(tmp_path), "--dataset-id",
               target.dataset_id, "--package-id", target.package_id, "--workers", "4"]  # fmt: skip
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while gate.stats()["held"] == 0:
            assert child.poll() is None and time.monotonic() < deadline, "the import never reached the pause"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    gate.faults(pause_after_puts=None)  # the held PUTs are refused: the client is gone
    (asset,) = fake.assets.values()
    assert asset["status"] == "created" and gate.stats()["stored"] == 7

    result = import_store_assets(store, target, [target.package_id], client_for(fake, api_key), POLICY,
                                 source=tmp_path.name, retry=FAST_RETRY)  # fmt: skip

    assert (result.asset, result.files_uploaded, result.files_already_uploaded) == ("resumed", 13, 7)
    assert result.channels_created == 0  # the killed run's channels are reused
    assert assert_imported(fake, gate, target.package_id, written, _mapping(store)) == asset["id"]


def client_for(fake: FakePennsieve, api_key):
    from nwb2pennsieve.pennsieve import PennsieveClient
    from nwb2pennsieve.settings import Settings

    settings = Settings(
        pennsieve_api_host=fake.url,
        pennsieve_api_host2=fake.url,
        pennsieve_api_key=api_key.key,
        pennsieve_api_secret=api_key.secret,
    )
    return PennsieveClient.from_settings(settings, retry=FAST_RETRY)


def test_the_finishing_call_failing_leaves_the_asset_for_the_rerun_to_finish(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    fake.add_fault(Fault("status", method="PATCH", path="^/packages/assets/", status=503, times=5))

    with pytest.raises(AssetImportError) as failure:
        _import(store, target, client)

    (asset,) = fake.assets.values()
    assert failure.value.resumable and str(failure.value).endswith(f"{asset['id']} is left unfinished: rerun to resume")
    assert "PATCH" in str(failure.value) and "HTTP 503" in str(failure.value)
    stored = gate.stats()["stored"]

    again = _import(store, target, client)

    assert (again.asset, again.files_uploaded, again.ranges_registered, again.ranges_known) == ("resumed", 0, 0, 6)
    assert gate.stats()["stored"] == stored
    assert_imported(fake, gate, target.package_id, written, _mapping(store))


def test_ranges_pennsieve_refuses_clean_up_channels_then_the_asset_and_a_rerun_completes(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    invalid = {"invalid_chunks": [{"index": 1, "reason": "overlaps a range"}]}
    fake.add_fault(Fault("status", method="POST", path="/ranges$", status=400, extra=invalid))

    with pytest.raises(AssetImportError) as failure:
        _import(store, target, client)

    (old,) = [a for kind, a in fake.deletions if kind == "asset"]
    message = str(failure.value)
    assert not failure.value.resumable and "Pennsieve refused the chunk ranges: injected fault; N:channel:" in message
    assert "_1700000001059000_1700000001108000.bin.gz: overlaps a range" in message  # #1: Ch1's second chunk
    assert message.endswith(f"cleaned up (deleted 3 channels and viewer asset {old}): rerun to import again")
    assert [kind for kind, _ in fake.deletions] == ["channel", "channel", "channel", "asset"]
    assert not fake.assets and not fake.channels[target.package_id]

    again = _import(store, target, client)

    assert again.asset == "created" and again.asset_id != old
    assert_imported(fake, gate, target.package_id, written, _mapping(store), once=False)


def test_a_failed_upload_is_one_line_and_the_rerun_uploads_only_the_missing(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, MANY)
    target = _target(fake)
    gate.faults(slowdown=1000)  # every S3 request: each file gives up after its attempts

    with pytest.raises(UploadError) as failure:
        _import(store, target, client, workers=2)

    (asset,) = fake.assets.values()
    assert str(failure.value).startswith("20 of 20 files failed to upload: channel-00000_")
    assert str(failure.value).endswith(f"viewer asset {asset['id']} is left unfinished: rerun to resume")
    assert len(read_json(store, "import-failed.json")["failed"]) == 20
    gate.faults(slowdown=0)

    again = _import(store, target, client)

    assert (again.asset, again.files_uploaded) == ("resumed", 20)
    assert not store.exists("import-failed.json")
    assert_imported(fake, gate, target.package_id, written, _mapping(store))


def test_no_credential_reaches_a_log_an_error_or_a_record(fake, gate, client, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # everything, third-party libraries included
    fake.credential_puts = 2
    store = LocalStore(tmp_path)
    write_output(store, MANY)
    target = _target(fake)
    fake.add_fault(Fault("status", method="PATCH", path="^/packages/assets/", status=503, times=5))

    with pytest.raises(AssetImportError) as failure:
        _import(store, target, client, workers=2)
    _import(store, target, client)

    texts = [caplog.text, str(failure.value), *(r.getMessage() for r in caplog.records)]
    texts += [store.read_bytes(n).decode() for n in store.list_names("import-")]
    secrets = fake.secrets_issued()
    assert len(secrets) >= 3 * 10  # create, and renewals every 2 PUTs
    assert not [s for s in secrets for t in texts if s in t]
