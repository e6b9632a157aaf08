"""Pure parts of the viewer-asset import: the decision table, credentials renewed before they
expire (a fake clock), the credentials' model, range batches, what counts as resumable."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from nwb2pennsieve.pennsieve.asset_import import resumable
from nwb2pennsieve.pennsieve.asset_s3 import AssetCredentials, RemoteObject
from nwb2pennsieve.pennsieve.assets import CREATOR, AssetPolicy, decide
from nwb2pennsieve.pennsieve.errors import (
    AssetConflictError,
    ChannelConflictError,
    ChannelCreateError,
    CredentialsUnavailableError,
    PennsieveHTTPError,
    RangesRejectedError,
)
from nwb2pennsieve.pennsieve.models import RangeChunk, UploadCredentials, ViewerAsset
from nwb2pennsieve.pennsieve.ranges import range_batches, range_chunk
from nwb2pennsieve.pennsieve.records import AssetState
from nwb2pennsieve.pennsieve.target import ImportTarget

POLICY = AssetPolicy("nwb-asset", "timeseries", "active")
TARGET = ImportTarget(dataset_id="N:dataset:d", package_id="N:package:p")


def _asset(id: str, status: str = "created", **properties: str) -> ViewerAsset:
    return ViewerAsset(id=id, name="nwb-asset", asset_type="timeseries", status=status, properties=properties,
                       created_at=f"2026-01-0{len(id)}T00:00:00Z")  # fmt: skip


def _ours(id: str, status: str = "created", source: str = "rec", output: str = "fp") -> ViewerAsset:
    return _asset(id, status, creator=CREATOR, source=source, fingerprint=output)


def _decide(found: list[ViewerAsset], state: AssetState | None = None) -> Any:
    return decide(found, state, source="rec", output="fp", policy=POLICY, package="N:package:p")


def test_the_decision_table() -> None:
    assert _decide([]).action == "create"
    assert (d := _decide([_ours("a", "active")])).action == "finished" and d.asset.id == "a"
    assert _decide([_asset("a", "active")]).action == "finished"  # finished, without our marker: done
    assert (d := _decide([_ours("a")])).action == "resume" and d.asset.id == "a" and not d.replace
    # ours by our record alone (Pennsieve may not keep properties)
    state = AssetState(target=TARGET, source="rec", fingerprint="fp", asset_id="a")
    assert _decide([_asset("a")], state).action == "resume"
    # the output changed since: clean up, create anew
    d = _decide([_ours("a", output="older")])
    assert (d.action, [a.id for a in d.replace], d.why) == ("create", ["a"], "the output changed since it was created")
    # duplicates of ours (a create whose answer was lost): resume the newest, clean up the other
    d = _decide([_ours("a"), _ours("bb")])
    assert (d.action, d.asset.id, [a.id for a in d.replace]) == ("resume", "bb", ["a"])
    d = _decide([_ours("a"), _ours("bb")], state)  # ... unless our record names one
    assert (d.asset.id, [a.id for a in d.replace]) == ("a", ["bb"])


@pytest.mark.parametrize(
    ("found", "message"),
    [
        ([_asset("a")], "unfinished viewer asset a named 'nwb-asset' (status 'created') that nwb2pennsieve did not"),
        ([_ours("a", source="other")], "holds viewer asset a (created) of another recording, 'other'"),
        ([_ours("a", "active", source="other")], "holds viewer asset a (active) of another recording, 'other'"),
    ],
)
def test_conflicts_touch_nothing(found: list[ViewerAsset], message: str) -> None:
    with pytest.raises(AssetConflictError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _decide(found)


def _credentials(expires: float, key: str = "AK") -> UploadCredentials:
    return UploadCredentials(
        access_key_id=key, secret_access_key="s", session_token="t", bucket="bkt", region="us-east-1",
        key_prefix="viewer-assets/O1/D2/a/", expiration=datetime.fromtimestamp(expires, UTC),
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_credentials_are_renewed_before_they_expire_and_once_for_every_thread_that_saw_them_expire() -> None:
    clock = Clock()
    issued: list[str] = []

    def fetch() -> UploadCredentials:
        issued.append(f"AK{len(issued)}")
        return _credentials(clock.now + 3600, issued[-1])

    creds = AssetCredentials(fetch, _credentials(clock.now + 3600), clock=clock)
    assert creds.current().access_key_id.get_secret_value() == "AK" and not issued
    clock.now += 3600 - 299  # less than 5 minutes (a quarter of the life at most) left: renewed first
    assert creds.current().access_key_id.get_secret_value() == "AK0"
    # S3 said "expired": the first thread renews, the others reuse its renewal.
    threads = [threading.Thread(target=creds.refresh, args=("AK0",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert issued == ["AK0", "AK1"] and creds.refreshes == 2


def test_a_failed_renewal_uses_valid_credentials_until_they_are_about_to_expire() -> None:
    clock = Clock()

    def fetch() -> UploadCredentials:
        raise CredentialsUnavailableError("no renewal", unsupported=True)

    creds = AssetCredentials(fetch, _credentials(clock.now + 100), clock=clock)
    clock.now += 80  # past the renewal margin (25 s), still valid for 20 s
    assert creds.current().access_key_id.get_secret_value() == "AK"
    clock.now += 15  # 5 s left: no more
    with pytest.raises(CredentialsUnavailableError):
        creds.current()
    with pytest.raises(CredentialsUnavailableError):
        AssetCredentials(fetch).current()


def test_upload_credentials_need_all_seven_fields_and_never_show_secrets() -> None:
    good = _credentials(2_000_000_000).model_dump() | {"access_key_id": "AKX", "secret_access_key": "SEKRET-1"}
    creds = UploadCredentials.model_validate(good | {"session_token": "TOKEN-9"})
    shown = repr(creds) + str(creds) + creds.model_dump_json()
    assert "AKX" not in shown and "SEKRET-1" not in shown and "TOKEN-9" not in shown
    for field in good:
        with pytest.raises(ValueError, match=field):
            UploadCredentials.model_validate({k: v for k, v in good.items() if k != field})
    for prefix in ("/abs/", "a/../b/", "s3://x/"):
        with pytest.raises(ValueError, match="unsafe"):
            UploadCredentials.model_validate(good | {"key_prefix": prefix})
    assert UploadCredentials.model_validate(good | {"key_prefix": "p/q"}).key_prefix == "p/q/"


def test_range_batches_keep_under_both_limits() -> None:
    chunk = range_chunk("N:channel:c", "channel-00003_1700000000000000_1700000000999000.bin.gz")
    assert chunk == RangeChunk(channel_node_id="N:channel:c", start=1700000000000000, end=1700000000999000,
                               s3_key="N:channel:c_1700000000000000_1700000000999000.bin.gz")  # fmt: skip
    batches = list(range_batches([chunk] * 25_001))
    assert [len(b) for b in batches][:3] == [len(batches[0])] * 3 and sum(len(b) for b in batches) == 25_001
    assert all(len(b) <= 10_000 for b in batches)
    assert [len(b) for b in range_batches([chunk] * 25, max_chunks=10)] == [10, 10, 5]


def test_md5_etags_only() -> None:
    assert RemoteObject(1, "d41d8cd98f00b204e9800998ecf8427e").md5() == "d41d8cd98f00b204e9800998ecf8427e"
    assert RemoteObject(1, "d41d8cd98f00b204e9800998ecf8427e-2").md5() is None  # multipart
    assert RemoteObject(1, "").md5() is None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RangesRejectedError("refused"), False),
        (ChannelCreateError("x", retryable=False), False),
        (ChannelCreateError("x", retryable=True), True),
        (ChannelConflictError("x"), True),
        (PennsieveHTTPError("PATCH", "http://h/x", 400), False),
        (PennsieveHTTPError("PATCH", "http://h/x", 503), True),
        (PennsieveHTTPError("PATCH", "http://h/x", 403), True),
        (PennsieveHTTPError("PATCH", "http://h/x", None), True),
        (CredentialsUnavailableError("x", unsupported=True), True),
        (OSError("disk"), True),
    ],
)
def test_what_a_rerun_can_resume(error: Exception, expected: bool) -> None:
    assert resumable(error) is expected
