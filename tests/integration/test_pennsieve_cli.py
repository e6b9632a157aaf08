"""``nwb2pennsieve import DIR`` through a tiny argparse, and secrets never reaching logs or payloads."""

from __future__ import annotations

import argparse
import logging

import pytest

from nwb2pennsieve.errors import ConfigurationError
from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.pennsieve import TargetNotFoundError, UploadError
from nwb2pennsieve.pennsieve.cli import add_import_command
from nwb2pennsieve.pennsieve.http import RetryPolicy
from nwb2pennsieve.pennsieve.records import STATE_NAME
from tests.fake_pennsieve import Fault
from tests.fake_pennsieve.fixtures import *  # noqa: F403  (the pytest fixtures)
from tests.fake_pennsieve.fixtures import LocalSpec, write_output

SPECS = [LocalSpec("Ch1", chunks=4), LocalSpec("Ch2", chunks=4)]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nwb2pennsieve")
    add_import_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _env(monkeypatch: pytest.MonkeyPatch, fake, **extra: str) -> None:
    for name in (
        "INTEGRATION_ID",
        "SESSION_TOKEN",
        "REFRESH_TOKEN",
        "PENNSIEVE_API_KEY",
        "PENNSIEVE_API_SECRET",
        "LEGACY_IMPORT_FLOW",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PENNSIEVE_API_HOST", fake.url)
    monkeypatch.setenv("PENNSIEVE_API_HOST2", fake.url)
    for k, v in extra.items():
        monkeypatch.setenv(k, v)


@pytest.mark.parametrize("legacy", ["true", "false"])
def test_import_command_with_integration_id_from_the_environment(fake, api_key, tmp_path, monkeypatch, legacy):
    write_output(LocalStore(tmp_path), SPECS)
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    run = fake.add_run(dataset, [package])
    _env(
        monkeypatch,
        fake,
        INTEGRATION_ID=run,
        PENNSIEVE_API_KEY=api_key.key,
        PENNSIEVE_API_SECRET=api_key.secret,
        LEGACY_IMPORT_FLOW=legacy,
    )

    args = _parse(["import", str(tmp_path), "--workers", "4"])
    assert args.handler(args) == 0

    if legacy == "true":
        (imp,) = fake.imports.values()
        assert (imp.dataset_id, imp.package_id, imp.integration_id) == (dataset, package, run)
        assert len(imp.uploads) == 8
        assert not fake.assets
    else:
        (asset,) = fake.assets.values()
        assert (asset["dataset_id"], asset["package_ids"], asset["status"]) == (dataset, [package], "active")
        assert len(fake.ranges[package]) == 8
        assert not fake.imports
    assert len(fake.channels[package]) == 2

    args = _parse(["import", str(tmp_path)])
    assert args.handler(args) == 0  # the rerun
    assert len(fake.imports) + len(fake.assets) == 1
    assert len(fake.channels[package]) == 2


def test_options_win_over_the_environment(fake, api_key, tmp_path, monkeypatch):
    write_output(LocalStore(tmp_path), SPECS)
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    _env(monkeypatch, fake, INTEGRATION_ID="unknown-run", PENNSIEVE_API_KEY=api_key.key)
    monkeypatch.setenv("PENNSIEVE_API_SECRET", api_key.secret)

    args = _parse(["import", str(tmp_path), "--dataset-id", dataset, "--package-id", package])
    args.handler(args)

    assert len(fake.channels[package]) == 2


def test_no_target_fails_before_any_call(fake, api_key, tmp_path, monkeypatch):
    write_output(LocalStore(tmp_path), SPECS)
    _env(monkeypatch, fake, PENNSIEVE_API_KEY=api_key.key, PENNSIEVE_API_SECRET=api_key.secret)

    args = _parse(["import", str(tmp_path)])
    with pytest.raises(TargetNotFoundError, match="no import target"):
        args.handler(args)
    assert sum(fake.requests.values()) == 0


def test_no_credentials_and_no_directory_are_clear_errors(fake, tmp_path, monkeypatch):
    _env(monkeypatch, fake, INTEGRATION_ID="r")
    args = _parse(["import", str(tmp_path)])
    with pytest.raises(ConfigurationError, match="no Pennsieve credentials"):
        args.handler(args)
    args = _parse(["import", str(tmp_path / "missing")])
    with pytest.raises(ConfigurationError, match="is not a directory"):
        args.handler(args)


@pytest.mark.parametrize("mode", ["api-key", "session-token"])
def test_secrets_never_reach_logs_errors_or_state(fake, moto_cognito, api_key, tmp_path, monkeypatch, caplog, mode):
    """The legacy flow (its presigned URLs are credentials too); the asset flow's twin is in test_asset_import."""
    caplog.set_level(logging.DEBUG)  # everything, third-party libraries included
    # The CLI's client uses the default back-off (seconds); only the waiting is shortened here.
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after=None: 0.005)
    store = LocalStore(tmp_path)
    write_output(store, SPECS)
    dataset = fake.add_dataset()
    package = fake.add_package(dataset)
    run = fake.add_run(dataset, [package])
    secrets = {api_key.key, api_key.secret}
    if mode == "api-key":
        _env(
            monkeypatch,
            fake,
            INTEGRATION_ID=run,
            PENNSIEVE_API_KEY=api_key.key,
            PENNSIEVE_API_SECRET=api_key.secret,
        )
    else:
        access, refresh = moto_cognito.new_session()
        secrets |= {access, refresh}
        _env(monkeypatch, fake, INTEGRATION_ID=run, SESSION_TOKEN=access, REFRESH_TOKEN=refresh)
    # A refresh in the middle, then a failure (2 files never get through), then the rerun.
    fake.add_fault(Fault("expire_tokens", method="GET", path="/presign$", skip=3))
    fake.add_fault(Fault("drop", method="PUT", path="^/s3/", times=10))
    monkeypatch.setenv("LEGACY_IMPORT_FLOW", "true")

    args = _parse(["import", str(tmp_path), "--workers", "1"])
    with pytest.raises(UploadError) as failure:
        args.handler(args)
    args.handler(args)

    assert fake.auth_headers_on_put == 0
    assert len(fake.tokens_first_seen) >= 2  # a refresh did happen
    secrets |= set(fake.tokens_first_seen)
    texts = [caplog.text, str(failure.value), *(r.getMessage() for r in caplog.records)]
    texts += [store.read_bytes(n).decode() for n in store.list_names("import-")]
    texts += [store.read_bytes(STATE_NAME).decode()]
    assert "refreshed the Pennsieve token" in caplog.text or "logged in" in caplog.text
    for secret in secrets:
        for text in texts:
            assert secret not in text
