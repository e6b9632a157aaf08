"""The TS-Zarr bundle through the state machine (moto): the same objects as the local pool's, from
the same fanned-out items; Finalize writes the event channels, meta/ and the annotation files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cloud_fixtures import EXAMPLE_KEY, INPUT_BUCKET, Stack
from tests.e2e.test_cloud_statemachine import eventbridge_event, local_output
from tests.events_factory import Everything, write_everything
from tests.expected import differing_objects
from tests.tszarr_checks import validate

MARKS = [
    {"schema": "pennsieve/annotations-1.1", "channel": {"id": "seizures", "time_reference": "recording_onset"}},
    {"time_us": 2_000_000, "duration_us": 500_000, "label": "seizure"},
    {"time_us": 9_000_000, "label": "artifact"},
]
ANNOTATION_KEY = EXAMPLE_KEY.replace(".nwb", ".detector.annotations.ndjson")


@pytest.fixture
def small_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    from nwb2pennsieve.plan import bundle_layout as layout

    for name, value in {"INNER_CHUNK_BINS": 64, "TARGET_SHARD_BYTES": 2048, "MIN_BINS": 16}.items():
        monkeypatch.setattr(layout, name, value)  # many shards, windows and a reduce from a small file
    for key, value in {"CHUNK_SIZE_MB": "0.05", "MAX_ITEM_MB": "0.2", "BATCH_MB": "0.4"}.items():
        monkeypatch.setenv(key, value)


def _run(stack: Stack, nwb: Path, annotations: bytes | None) -> dict[str, bytes]:
    if annotations is not None:
        stack.s3.put_object(Bucket=INPUT_BUCKET, Key=ANNOTATION_KEY, Body=annotations)
    version = stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=nwb.read_bytes())["VersionId"]
    desc = stack.run(eventbridge_event(version))
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    return stack.published(EXAMPLE_KEY)


def _as_folder(objects: dict[str, bytes], folder: Path) -> Path:
    for name, body in objects.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(body)
    return folder


def test_every_kind_of_channel_from_the_state_machine_equals_the_local_pools(
    stack: Stack, small_bundle: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTPUT_FORMATS", "chunks,bundle")
    nwb = write_everything(tmp_path / "in" / "sub-01_ses-01.nwb")
    text = "".join(json.dumps(m) + "\n" for m in MARKS).encode()
    (nwb.parent / Path(ANNOTATION_KEY).name).write_bytes(text)
    cloud = _run(stack, nwb, text)
    local = local_output(nwb, tmp_path / "local", output_formats="chunks,bundle")
    nodes = json.loads(local["sub-01_ses-01.zarr/zarr.json"])["consolidated_metadata"]["metadata"]
    assert "seizures" in [node["attributes"]["id"] for path, node in nodes.items() if "/" not in path]
    assert "intervals.trials.annotations.ndjson" in cloud
    assert differing_objects(cloud, local) == []  # every object byte for byte, meta/ and annotation files too
    validate(_as_folder(cloud, tmp_path / "cloud") / "sub-01_ses-01.zarr")


def test_a_file_with_only_units_and_annotations_has_no_work_item_and_a_bundle(
    stack: Stack, small_bundle: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTPUT_FORMATS", "bundle")
    nwb = write_everything(tmp_path / "in" / "sub-01_ses-01.nwb", Everything(electrical=False, timeseries=False))
    cloud = _run(stack, nwb, None)
    bundle = _as_folder(cloud, tmp_path / "cloud") / "sub-01_ses-01.zarr"
    validate(bundle)
    ids = [json.loads((bundle / str(g) / "zarr.json").read_text())["attributes"]["id"] for g in range(6)]
    assert ids[0] == "units" and "acquisition.notes" in ids
    shutil.rmtree(tmp_path / "cloud")
