"""The API client, auth and target resolution against the fake Pennsieve (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from pydantic import SecretStr

from nwb2pennsieve.pennsieve import (
    PennsieveAuthError,
    PennsieveClient,
    PennsieveError,
    TargetNotFoundError,
    TargetSpec,
    resolve_target,
)
from nwb2pennsieve.pennsieve.errors import PennsieveHTTPError
from nwb2pennsieve.pennsieve.http import HttpClient, RetryPolicy
from nwb2pennsieve.pennsieve.models import NewChannel
from nwb2pennsieve.settings import Settings
from tests.fake_pennsieve import Fault
from tests.fake_pennsieve.fixtures import *  # noqa: F403  (the pytest fixtures)
from tests.fake_pennsieve.fixtures import FAST_RETRY


def _new_channel(name: str) -> NewChannel:
    return NewChannel(name=name, start=0, end=10, unit="uV", rate=100.0, channel_type="CONTINUOUS", group="g")


# -- target resolution ------------------------------------------------------------------------------


def test_one_package_is_the_target(fake, client):
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    run = fake.add_run(dataset, [package])

    target = resolve_target(client, TargetSpec(integration_id=run))

    assert (target.dataset_id, target.package_id, target.integration_id) == (dataset, package, run)


def test_several_packages_import_into_the_parent_of_the_first(fake, client):
    dataset = fake.add_dataset()
    folder = fake.add_package(dataset, "folder", package_type="Collection")
    first = fake.add_package(dataset, "a.nwb", parent=folder)
    second = fake.add_package(dataset, "b.nwb", parent=folder)
    run = fake.add_run(dataset, [first, second])

    assert resolve_target(client, TargetSpec(integration_id=run)).package_id == folder


def test_several_packages_at_the_dataset_root_fail_clearly(fake, client):
    dataset = fake.add_dataset()
    run = fake.add_run(dataset, [fake.add_package(dataset), fake.add_package(dataset)])

    with pytest.raises(TargetNotFoundError, match="dataset root"):
        resolve_target(client, TargetSpec(integration_id=run))


def test_an_unknown_run_is_a_clear_error_not_a_crash(fake, client):
    with pytest.raises(PennsieveError, match="workflow run nope not found"):
        resolve_target(client, TargetSpec(integration_id="nope"))


def test_null_data_sources_are_a_clear_error(fake, client):
    run = fake.add_run(fake.add_dataset(), None)

    with pytest.raises(TargetNotFoundError, match="no data source packages"):
        resolve_target(client, TargetSpec(integration_id=run))


def test_explicit_dataset_and_package_need_no_call(fake, client):
    target = resolve_target(client, TargetSpec(dataset_id="N:dataset:1", package_id="N:package:2"))

    assert (target.dataset_id, target.package_id, target.integration_id) == (
        "N:dataset:1",
        "N:package:2",
        None,
    )
    assert sum(fake.requests.values()) == 0


# -- endpoints --------------------------------------------------------------------------------------


def test_channels_list_and_create_round_trip(fake, client):
    package = fake.add_package(fake.add_dataset())
    fake.add_channel(package, name="old", channelType="SOMETHING_NEW", rate=5.0)  # no group, odd type

    created = client.create_channels(package, [_new_channel("a"), _new_channel("b")])
    listed = client.list_channels(package)

    assert [c.content.name for c in created] == ["a", "b"]
    assert [(c.content.name, c.content.channel_type, c.content.group) for c in listed] == [
        ("old", "SOMETHING_NEW", None),
        ("a", "CONTINUOUS", "g"),
        ("b", "CONTINUOUS", "g"),
    ]
    assert all(c.content.id.startswith("N:channel:") for c in listed)


def test_server_errors_are_one_line_with_the_status(fake, client):
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    other = fake.add_package(dataset, package_type="Image")

    with pytest.raises(PennsieveHTTPError, match=r"HTTP 404\): package N:package:x not found") as e:
        client.list_channels("N:package:x")
    assert e.value.status == 404
    with pytest.raises(PennsieveHTTPError, match=r"HTTP 400.*blank"):
        client.create_channels(package, [_new_channel(" ")])
    with pytest.raises(PennsieveHTTPError, match=r"HTTP 400.*TimeSeries or Collection"):
        client.create_channels(other, [_new_channel("a")])
    fake.lock_dataset(dataset)
    with pytest.raises(PennsieveError, match="locked"):
        client.set_timeseries_properties(package)


def test_import_create_append_presign(fake, client):
    from nwb2pennsieve.pennsieve.models import ImportFile

    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    f1 = ImportFile(upload_key="00000000-0000-4000-8000-000000000001", file_path="N:channel:1_0_1.bin.gz")
    f2 = ImportFile(upload_key="00000000-0000-4000-8000-000000000002", file_path="N:channel:1_2_3.bin.gz")

    import_id = client.create_import(dataset, "run", package, [f1])
    client.append_import_files(dataset, import_id, [f2])
    url = client.presign(dataset, import_id, f2.upload_key)

    assert fake.imports[import_id].files == {f1.upload_key: f1.file_path, f2.upload_key: f2.file_path}
    assert url.startswith(fake.url + "/s3/")
    assert "X-Amz-Signature=" in url
    with pytest.raises(PennsieveHTTPError, match="HTTP 404"):
        client.presign(dataset, import_id, "00000000-0000-4000-8000-000000000003")


def test_run_status(fake, client):
    run = fake.add_run(fake.add_dataset(), [])

    client.set_run_status(run, "SUCCEEDED")

    assert fake.run_status[run] == ["SUCCEEDED"]


# -- retries ------------------------------------------------------------------------------------------


def test_retry_after_is_honoured_and_capped(fake, settings):
    waits: list[float] = []
    client = PennsieveClient.from_settings(settings, retry=RetryPolicy(base_delay=0.01, max_delay=5.0))
    client.http._sleep = waits.append  # record the waits instead of sleeping
    fake.add_fault(Fault("status", path="/channels$", status=429, retry_after="2", times=1))
    fake.add_fault(Fault("status", path="/channels$", status=503, retry_after="3600", skip=1, times=1))
    package = fake.add_package(fake.add_dataset())

    assert client.list_channels(package) == []
    assert waits == [2.0, 5.0]


def test_backoff_grows_and_gives_up_with_the_last_status(fake, settings):
    waits: list[float] = []
    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=100.0)
    client = PennsieveClient.from_settings(settings, retry=policy)
    client.http._sleep = waits.append
    fake.add_fault(Fault("status", path="/channels$", status=503, times=10))
    package = fake.add_package(fake.add_dataset())

    with pytest.raises(PennsieveHTTPError, match=r"HTTP 503"):
        client.list_channels(package)
    assert len(waits) == 3
    assert all(0 <= w <= 2**i for i, w in enumerate(waits))


def test_connection_refused_is_retried_then_reported(settings):
    http = HttpClient(retry=RetryPolicy(attempts=3, base_delay=0.001, connect_timeout=0.5))
    client = PennsieveClient(http, "http://127.0.0.1:9", "http://127.0.0.1:9")

    with pytest.raises(PennsieveHTTPError, match="no answer"):
        client.cognito_config()


# -- auth ----------------------------------------------------------------------------------------------


def test_bad_secret_is_an_auth_error_without_the_secret(fake, api_key):
    settings = Settings(
        pennsieve_api_host=fake.url,
        pennsieve_api_host2=fake.url,
        pennsieve_api_key=SecretStr(api_key.key),
        pennsieve_api_secret=SecretStr("wrong-secret"),
    )
    client = PennsieveClient.from_settings(settings, retry=FAST_RETRY)

    with pytest.raises(PennsieveAuthError) as e:
        client.list_channels(fake.add_package(fake.add_dataset()))
    assert "NotAuthorized" in str(e.value)
    assert "wrong-secret" not in str(e.value)
    assert api_key.key not in str(e.value)


def test_session_token_is_refreshed_with_the_user_pool(fake, moto_cognito):
    access, refresh = moto_cognito.new_session()
    settings = Settings(
        pennsieve_api_host=fake.url,
        pennsieve_api_host2=fake.url,
        session_token=SecretStr(access),
        refresh_token=SecretStr(refresh),
    )
    client = PennsieveClient.from_settings(settings, retry=FAST_RETRY)
    package = fake.add_package(fake.add_dataset())
    client.list_channels(package)
    fake.expire_tokens()

    client.list_channels(package)

    assert client.http.auth.refreshes == 1  # type: ignore[union-attr]
    assert len(fake.tokens_first_seen) == 2


def test_expired_session_token_without_refresh_token_fails_clearly(fake, moto_cognito):
    access, _ = moto_cognito.new_session()
    settings = Settings(pennsieve_api_host=fake.url, pennsieve_api_host2=fake.url, session_token=SecretStr(access))
    client = PennsieveClient.from_settings(settings, retry=FAST_RETRY)
    package = fake.add_package(fake.add_dataset())
    client.list_channels(package)
    fake.expire_tokens()

    with pytest.raises(PennsieveAuthError, match="no REFRESH_TOKEN"):
        client.list_channels(package)


def test_concurrent_401s_cause_one_refresh(fake, client):
    package = fake.add_package(fake.add_dataset())
    client.list_channels(package)  # log in
    fake.expire_tokens()
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            client.list_channels(package)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert client.http.auth.refreshes == 1  # type: ignore[union-attr]
    assert len(fake.tokens_first_seen) == 2


def test_tokens_expire_after_the_fakes_ttl(fake, client):
    package = fake.add_package(fake.add_dataset())
    fake.token_ttl = 0.3
    client.list_channels(package)
    time.sleep(0.4)

    client.list_channels(package)

    assert client.http.auth.refreshes == 1  # type: ignore[union-attr]
    assert fake.statuses[401] == 1


def test_the_fake_runs_standalone():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_pennsieve", "--static-token", "tok", "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        http = HttpClient(retry=FAST_RETRY)
        answer = http.request("GET", f"{info['url']}/compute/workflows/runs/{info['env']['INTEGRATION_ID']}")
        assert answer.status_code == 401  # no token
        client = PennsieveClient.from_settings(Settings.from_env(info["env"]), retry=FAST_RETRY)
        run = client.get_workflow_run(info["env"]["INTEGRATION_ID"])
        assert run.package_ids() == info["package_ids"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
