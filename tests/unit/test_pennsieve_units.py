"""Pure parts of the import: settings, typed models, target choice, manifest batching, matching, keys."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nwb2pennsieve.errors import ConfigurationError, Nwb2PennsieveError
from nwb2pennsieve.pennsieve import (
    TargetNotFoundError,
    TargetSpec,
    UploadError,
    choose_target_spec,
    input_targets,
    target_spec_from_metadata,
)
from nwb2pennsieve.pennsieve.auth import CognitoConfig, jwt_claims
from nwb2pennsieve.pennsieve.channels import LocalChannel, match_channels
from nwb2pennsieve.pennsieve.http import parse_retry_after
from nwb2pennsieve.pennsieve.manifest import manifest_batches, remote_file_path, upload_key
from nwb2pennsieve.pennsieve.models import Channel, ImportCreate, ImportFile, WorkflowRun
from nwb2pennsieve.plan.models import ChannelMetadata
from nwb2pennsieve.settings import Settings

# -- settings -----------------------------------------------------------------------------------------


def test_settings_defaults_and_importer_switch():
    local = Settings.from_env({})
    prod = Settings.from_env({"ENVIRONMENT": "production"})
    off = Settings.from_env({"ENVIRONMENT": "production", "IMPORTER_ENABLED": "false"})

    assert (local.importer_enabled, prod.importer_enabled, off.importer_enabled) == (False, True, False)
    assert local.pennsieve_api_host == "https://api.pennsieve.net"
    assert local.pennsieve_api_host2 == "https://api2.pennsieve.net"
    with pytest.raises(ConfigurationError, match="IMPORTER_ENABLED"):
        Settings.from_env({"IMPORTER_ENABLED": "maybe"})


def test_settings_never_show_secrets():
    s = Settings.from_env(
        {"PENNSIEVE_API_KEY": "key-123", "PENNSIEVE_API_SECRET": "sec-456", "SESSION_TOKEN": "tok-789"}
    )

    shown = repr(s) + str(s) + s.model_dump_json()
    assert all(secret not in shown for secret in ("key-123", "sec-456", "tok-789"))
    assert s.pennsieve_api_secret is not None
    assert s.pennsieve_api_secret.get_secret_value() == "sec-456"


def test_missing_credentials_are_a_configuration_error():
    with pytest.raises(ConfigurationError, match="no Pennsieve credentials"):
        Settings.from_env({}).require_credentials()
    with pytest.raises(ConfigurationError, match="PENNSIEVE_API_SECRET"):
        Settings.from_env({"PENNSIEVE_API_KEY": "k"}).require_credentials()


# -- target choice (no network) ----------------------------------------------------------------------


def test_target_precedence_and_s3_metadata():
    from_meta = target_spec_from_metadata({"integration-id": "run-s3", "other": "x"})
    explicit = TargetSpec(dataset_id="N:dataset:1", package_id="N:package:1")

    assert choose_target_spec(explicit, from_meta).dataset_id == "N:dataset:1"
    assert choose_target_spec(TargetSpec(), from_meta).integration_id == "run-s3"
    assert target_spec_from_metadata({"X-Amz-Meta-Dataset-Id": "d", "package_id": "p"}) == TargetSpec(
        dataset_id="d", package_id="p"
    )
    with pytest.raises(TargetNotFoundError, match="needs a package id"):
        choose_target_spec(TargetSpec(dataset_id="N:dataset:1"))


def test_preflight_fails_before_conversion_when_enabled_without_target():
    enabled = Settings.from_env({"IMPORTER_ENABLED": "true", "SESSION_TOKEN": "t"})

    assert input_targets(Settings.from_env({}), ["a"]) is None  # disabled locally by default
    with pytest.raises(TargetNotFoundError, match="no import target"):
        input_targets(enabled, ["a"])
    assert input_targets(enabled, ["a"], ["a=N:package:1"]) == {"a": TargetSpec(package_id="N:package:1")}
    with_env = Settings.from_env({"IMPORTER_ENABLED": "1", "SESSION_TOKEN": "t", "INTEGRATION_ID": "e"})
    assert input_targets(with_env, ["a"]) == {"a": TargetSpec(integration_id="e")}
    with pytest.raises(ConfigurationError):
        input_targets(Settings.from_env({"IMPORTER_ENABLED": "1", "INTEGRATION_ID": "e"}), ["a"])


# -- models: tolerant of the server's real shapes ------------------------------------------------------


def test_workflow_run_shapes():
    run = WorkflowRun.model_validate(
        {
            "uuid": "r",
            "datasetId": "d",
            "dataSources": {
                "b": {"packageIds": ["N:package:2"]},
                "a": {"packageIds": ["N:package:1"]},
                "c": None,
            },
            "nodes": [],
            "newField": 1,
        }
    )
    assert run.package_ids() == ["N:package:1", "N:package:2"]
    assert WorkflowRun.model_validate({"uuid": "r", "dataSources": None}).package_ids() == []


def test_channel_shapes():
    c = Channel.model_validate({"content": {"id": "N:channel:1", "name": "x", "channelType": "NEW_KIND"}})

    assert (c.content.group, c.content.channel_type, c.properties) == (None, "NEW_KIND", None)


def test_import_body_matches_the_contract():
    body = ImportCreate(
        integration_id="r",
        package_id="p",
        files=[ImportFile(upload_key="k", file_path="N:channel:1_0_1.bin.gz")],
    ).body()

    assert body == {
        "integration_id": "r",
        "package_id": "p",
        "import_type": "timeseries",
        "files": [{"upload_key": "k", "file_path": "N:channel:1_0_1.bin.gz"}],
    }


def test_cognito_config_and_jwt_claims():
    cfg = CognitoConfig.model_validate(
        {
            "region": "eu-west-1",
            "userPool": {"region": "eu-west-1", "id": "u", "appClientId": "uc"},
            "tokenPool": {"appClientId": "tc"},
            "identityPool": {},
        }
    )
    assert (cfg.user_pool.app_client_id, cfg.token_pool and cfg.token_pool.app_client_id) == ("uc", "tc")
    assert jwt_claims("a.eyJkZXZpY2Vfa2V5IjoiZGsifQ.b") == {"device_key": "dk"}
    assert jwt_claims("not-a-jwt") == {}


def test_retry_after_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None


# -- manifest, keys, matching ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3000),
    max_files=st.integers(1, 5000),
    max_bytes=st.integers(400, 50_000),
)
def test_manifest_batches_keep_every_file_once_under_the_limits(n, max_files, max_bytes):
    files = [
        ImportFile(upload_key=upload_key("ns", f"p{i}"), file_path=f"N:channel:x_{i}_{i}.bin.gz") for i in range(n)
    ]

    batches = list(manifest_batches(files, max_files, max_bytes))

    assert [f for b in batches for f in b] == files
    for b in batches:
        assert 0 < len(b) <= max_files
        size = len(
            json.dumps(
                {
                    "integration_id": "r" * 36,
                    "package_id": "N:package:" + "x" * 36,
                    "files": [f.body() for f in b],
                }
            )
        )
        assert size <= max_bytes or len(b) == 1


def test_upload_keys_are_stable_uuid4_and_distinct():
    import uuid

    a = upload_key("ns", "N:channel:1_0_1.bin.gz")

    assert a == upload_key("ns", "N:channel:1_0_1.bin.gz")
    assert a != upload_key("ns2", "N:channel:1_0_1.bin.gz")
    assert uuid.UUID(a).version == 4
    assert remote_file_path("N:channel:abc-1", "channel-00012_10_20.bin.gz") == "N:channel:abc-1_10_20.bin.gz"


def _local(index: int, name: str, rate: float = 1000.0, type_: str = "CONTINUOUS") -> LocalChannel:
    return LocalChannel(index, ChannelMetadata(name=name, start=0, end=1, rate=rate, group="g", type=type_))


def _remote(id_: str, name: str, rate: float | None = 1000.0, type_: str | None = "CONTINUOUS") -> Channel:
    return Channel.model_validate({"content": {"id": id_, "name": name, "rate": rate, "channelType": type_}})


def test_matching_rule_and_no_collapse():
    local = [_local(0, "A"), _local(1, "a"), _local(2, "B", rate=2000.0), _local(3, "C")]
    remote = [
        _remote("r1", "A", 1019.0),
        _remote("r2", "b", 2039.0),  # 1.95 % off: a match
        _remote("r3", "C", 1000.0, "EVENT"),
        _remote("r4", "c", None),
    ]

    mapping, missing = match_channels(local, remote)

    assert mapping == {0: "r1", 2: "r2"}
    assert [c.index for c in missing] == [1, 3]


def test_known_mapping_wins_when_the_channel_still_exists():
    local = [_local(0, "A"), _local(1, "A")]
    remote = [_remote("r1", "A"), _remote("r2", "A")]

    assert match_channels(local, remote, {0: "r2", 1: "gone"}) == ({0: "r2", 1: "r1"}, [])
    renamed = [_local(0, "A"), _local(1, "Z")]  # the output changed since the state was written
    assert match_channels(renamed, remote, {0: "r1", 1: "r2"}) == ({0: "r1"}, [renamed[1]])


def test_upload_error_is_one_line_and_lists_every_file():
    failed = [f"channel-{i:05d}_0_1.bin.gz" for i in range(12)]

    error = UploadError(failed, 100, first_reason="Pennsieve PUT http://h/s3/x failed (no answer)")

    assert isinstance(error, Nwb2PennsieveError)
    assert error.failed == sorted(failed)
    assert "12 of 100 files failed" in str(error)
    assert "(+7 more)" in str(error)
    assert "\n" not in str(error)


def test_redact_drops_url_queries():
    from nwb2pennsieve.pennsieve.errors import redact, safe_url

    text = "failed: PUT http://h:1/s3/i/k?X-Amz-Signature=abc&X-Amz-Date=1 (x)"
    assert redact(text) == "failed: PUT http://h:1/s3/i/k?<redacted> (x)"
    assert safe_url("https://h/p?token=abc") == "https://h/p"
