"""The viewer-asset import (pennsieve-api.md §5) against the fake Pennsieve and its S3 (a moto
server behind a gate that checks the asset's credentials): the complete import, reruns, and
every fault. Each scenario ends complete, or in one line naming what became of the asset and a
state a rerun completes (the test reruns and checks)."""

from __future__ import annotations

from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.pennsieve.asset_import import import_store_assets
from nwb2pennsieve.pennsieve.assets import AssetPolicy
from nwb2pennsieve.pennsieve.records import ASSET_STATE_NAME
from nwb2pennsieve.pennsieve.target import ImportTarget
from tests.fake_pennsieve import FakePennsieve
from tests.fake_pennsieve.fixtures import *  # noqa: F403  (the pytest fixtures)
from tests.fake_pennsieve.fixtures import FAST_RETRY, LocalSpec, assert_imported, read_json, write_output

SPECS = [LocalSpec("Ch1"), LocalSpec("Ch2", chunks=3), LocalSpec("ref", rate=30000.0, chunks=1)]
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
