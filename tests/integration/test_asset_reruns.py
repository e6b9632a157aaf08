"""Reruns of the viewer-asset import against states an earlier run, or someone else, left on the
fake Pennsieve: a finished asset, an unfinished one of ours (with or without our record), one that
is not ours, channels of another asset or of the legacy flow, an output that changed, a target
that cannot hold ranges. Nothing this tool did not create is ever deleted."""

from __future__ import annotations

import hashlib

import pytest

from nwb2pennsieve.output.storage import LocalStore
from nwb2pennsieve.pennsieve.asset_import import import_store_assets
from nwb2pennsieve.pennsieve.assets import AssetPolicy, fingerprint, marker
from nwb2pennsieve.pennsieve.channels import read_output
from nwb2pennsieve.pennsieve.errors import (
    AssetConflictError,
    AssetImportError,
    ChannelConflictError,
    TargetNotFoundError,
)
from nwb2pennsieve.pennsieve.manifest import remote_file_path
from nwb2pennsieve.pennsieve.records import ASSET_STATE_NAME
from nwb2pennsieve.pennsieve.target import ImportTarget, TargetSpec, resolve_asset_target
from tests.fake_pennsieve import FakePennsieve, Fault
from tests.fake_pennsieve.assets import ASSET_BUCKET
from tests.fake_pennsieve.fixtures import *  # noqa: F403  (the pytest fixtures)
from tests.fake_pennsieve.fixtures import FAST_RETRY, LocalSpec, assert_imported, read_json, write_output

SPECS = [LocalSpec("Ch1"), LocalSpec("Ch2", chunks=3), LocalSpec("ref", rate=30000.0, chunks=1)]
POLICY = AssetPolicy("nwb-asset", "timeseries", "active")


def _target(fake: FakePennsieve) -> ImportTarget:
    dataset = fake.add_dataset()
    return ImportTarget(dataset_id=dataset, package_id=fake.add_package(dataset))


def _import(store, target, client, lookup=None, source="rec"):
    lookup = lookup or [target.package_id]
    return import_store_assets(store, target, lookup, client, POLICY, source=source, retry=FAST_RETRY, sleep_s=0.01)


def _mapping(store) -> dict[int, str]:
    return {int(k): v for k, v in read_json(store, ASSET_STATE_NAME)["channels"].items()}


def _seed_crashed_run(fake, gate, store, written, target, *, uploaded: int) -> tuple[str, dict[int, str]]:
    """What a killed run leaves when its output records are lost: our asset (by its marker), its
    channels, ``uploaded`` files under its prefix."""
    channels = read_output(store)
    asset = fake.add_asset(target.dataset_id, [target.package_id], properties=marker("rec", fingerprint(channels)))
    mapping = {}
    for ch in channels:
        m = ch.metadata
        fields = {"name": m.name, "start": m.start, "end": m.end, "unit": m.unit, "rate": m.rate}
        mapping[ch.index] = fake.add_channel(target.package_id, **fields, channelType=m.type, viewerAssetId=asset)
    prefix = fake.asset_prefix(asset)
    for name in sorted(written)[:uploaded]:
        gate.put(ASSET_BUCKET, prefix + remote_file_path(mapping[int(name[8:13])], name), written[name])
    return asset, mapping


def test_a_finished_asset_makes_the_run_a_no_op(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    write_output(store, SPECS)
    target = _target(fake)
    asset = fake.add_asset(target.dataset_id, [target.package_id], status="active",
                           properties=marker("rec", "an-older-output"))  # fmt: skip

    result = _import(store, target, client)

    assert (result.asset, result.asset_id, result.files_uploaded) == ("already finished", asset, 0)
    assert not fake.channels[target.package_id] and not fake.deletions and gate.stats()["stored"] == 0


def test_an_unfinished_asset_of_a_crashed_run_is_resumed_with_its_channels(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    asset, mapping = _seed_crashed_run(fake, gate, store, written, target, uploaded=3)
    # One of the files there is different (same size, other bytes): uploaded again.
    name = sorted(written)[0]
    other = bytes(reversed(written[name]))
    gate.put(ASSET_BUCKET, fake.asset_prefix(asset) + remote_file_path(mapping[0], name), other)
    posts_before = fake.requests["POST ^/timeseries/([^/]+)/channels$"]

    result = _import(store, target, client)

    assert (result.asset, result.asset_id, result.channels_created) == ("resumed", asset, 0)
    assert (result.files_uploaded, result.files_already_uploaded) == (4, 2)
    assert fake.requests["POST ^/timeseries/([^/]+)/channels$"] == posts_before  # no channel created
    assert_imported(fake, gate, target.package_id, written, mapping, once=False)
    assert hashlib.md5(other).hexdigest() != hashlib.md5(written[name]).hexdigest()


def test_an_unfinished_asset_not_ours_is_refused_and_left_alone(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    write_output(store, SPECS)
    target = _target(fake)
    asset = fake.add_asset(target.dataset_id, [target.package_id])  # no marker, no record of ours

    with pytest.raises(AssetConflictError) as failure:
        _import(store, target, client)

    assert str(failure.value) == (
        f"package {target.package_id} has an unfinished viewer asset {asset} named 'nwb-asset' (status 'created')"
        " that nwb2pennsieve did not create; delete it or set another ASSET_NAME"
    )
    assert list(fake.assets) == [asset] and not fake.deletions and not fake.channels[target.package_id]


def test_a_channel_of_another_asset_is_one_line_naming_it_and_both_assets(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    asset, mapping = _seed_crashed_run(fake, gate, store, written, target, uploaded=0)
    other = fake.add_asset(target.dataset_id, [fake.add_package(target.dataset_id)], name="mef-asset")
    # "ref" now matches a channel of another asset first.
    fake.channels[target.package_id] = [c for c in fake.channels[target.package_id] if c["id"] != mapping[2]]
    theirs = fake.add_channel(target.package_id, name="REF", rate=30000.0, channelType="CONTINUOUS", start=0, end=1,
                              unit="uV", viewerAssetId=other)  # fmt: skip

    with pytest.raises(AssetImportError) as failure:
        _import(store, target, client)

    assert failure.value.resumable  # once that channel is dealt with
    assert str(failure.value) == (
        f"channel {theirs} ('REF') on package {target.package_id} belongs to viewer asset {other}, not to this"
        f" import's asset {asset}; delete that channel or import into another package; viewer asset {asset} is"
        " left unfinished: rerun to resume"
    )
    assert not fake.deletions and other in fake.assets  # nothing deleted, of theirs or ours

    fake.channels[target.package_id] = [c for c in fake.channels[target.package_id] if c["id"] != theirs]
    result = _import(store, target, client)  # deleted by hand: the rerun completes
    assert (result.asset, result.asset_id, result.channels_created) == ("resumed", asset, 1)
    assert_imported(fake, gate, target.package_id, written, _mapping(store))


@pytest.mark.parametrize("owner", ["another", "none"])
def test_a_matching_channel_of_another_import_stops_a_new_import_before_anything_is_created(
    fake, gate, client, tmp_path, owner
):
    store = LocalStore(tmp_path)
    write_output(store, SPECS)
    target = _target(fake)
    other = fake.add_asset(target.dataset_id, [target.package_id], name="mef-asset", status="active")
    theirs = fake.add_channel(target.package_id, name="Ch2", rate=1000.0, channelType="CONTINUOUS", start=0, end=1,
                              unit="uV", viewerAssetId=other if owner == "another" else None)  # fmt: skip

    with pytest.raises(ChannelConflictError) as failure:
        _import(store, target, client)

    belongs = f"viewer asset {other}" if owner == "another" else "no viewer asset (an import of the legacy flow?)"
    assert str(failure.value) == (
        f"channel {theirs} ('Ch2') on package {target.package_id} belongs to {belongs}, not to this import's asset"
        " (none was created); delete that channel or import into another package"
    )
    assert list(fake.assets) == [other] and not fake.deletions and len(fake.channels[target.package_id]) == 1


def test_an_output_that_changed_replaces_our_unfinished_asset(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    write_output(store, SPECS)
    target = _target(fake)
    fake.add_fault(Fault("status", method="PATCH", path="^/packages/assets/", status=503, times=5))
    with pytest.raises(AssetImportError):
        _import(store, target, client)
    (old,) = fake.assets
    for name in list(store.list_names("channel-")):
        store.delete(name)
    written = write_output(store, [LocalSpec("Ch1", chunks=4), LocalSpec("Ch9")], seed=3)  # a new conversion

    result = _import(store, target, client)

    assert result.asset == "created" and result.asset_id != old
    assert fake.deletions[-1] == ("asset", old) and [k for k, _ in fake.deletions].count("channel") == 3
    assert_imported(fake, gate, target.package_id, written, _mapping(store))
    assert not gate.objects(ASSET_BUCKET, f"viewer-assets/O19/D1000/{old}/")  # Pennsieve purged the old prefix


def test_a_refused_listing_uploads_everything_again(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    _seed_crashed_run(fake, gate, store, written, target, uploaded=4)
    gate.faults(deny_list=True)  # credentials without s3:ListBucket

    result = _import(store, target, client)

    assert (result.asset, result.files_uploaded, result.files_already_uploaded) == ("resumed", 6, 0)
    assert_imported(fake, gate, target.package_id, written, _mapping(store), once=False)


def test_without_the_refresh_route_an_unfinished_asset_is_cleaned_up_and_the_import_starts_over(
    fake, gate, client, tmp_path
):
    fake.refresh = "unsupported"
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    target = _target(fake)
    old, _ = _seed_crashed_run(fake, gate, store, written, target, uploaded=2)

    result = _import(store, target, client)

    assert result.asset == "created" and result.asset_id != old and fake.deletions[-1] == ("asset", old)
    assert_imported(fake, gate, target.package_id, written, _mapping(store))


def test_a_workflow_run_of_several_packages_links_all_and_imports_into_the_first(fake, gate, client, tmp_path):
    store = LocalStore(tmp_path)
    written = write_output(store, SPECS)
    dataset = fake.add_dataset()
    folder = fake.add_package(dataset, package_type="Collection")
    packages = [fake.add_package(dataset, f"p{i}", parent=folder) for i in range(2)]
    run = fake.add_run(dataset, packages)

    target, lookup = resolve_asset_target(client, TargetSpec(integration_id=run))
    _import(store, target, client, lookup)

    assert (target.package_id, lookup) == (packages[0], packages)
    asset = assert_imported(fake, gate, packages[0], written, _mapping(store))
    assert fake.assets[asset]["package_ids"] == packages
    assert _import(store, target, client, lookup).asset == "already finished"  # found again by the run's packages
    with pytest.raises(TargetNotFoundError, match="is a collection"):
        resolve_asset_target(client, TargetSpec(dataset_id=dataset, package_id=folder))
