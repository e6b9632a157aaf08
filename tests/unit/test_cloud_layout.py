"""Where a key's output goes (nwb2pennsieve.cloud.layout): one folder per key, never shared, never
inside another key's version folders or pointer; one subfolder per version."""

from __future__ import annotations

import itertools

import pytest

from nwb2pennsieve.cloud.layout import (
    POINTER_NAME,
    VERSIONS,
    check_key_lengths,
    output_folder,
    records_folder,
    version_folder,
    version_token,
)
from nwb2pennsieve.cloud.models import S3Ref
from nwb2pennsieve.errors import InvalidInputError

KEYS = ["/edge.nwb", "edge.nwb", "//edge.nwb", "a.nwb", "a/a.zarr.nwb", "a//b.nwb", "a/b.nwb", "a b+c%ü.nwb", "a+b.nwb"]


def test_output_folders_are_unique_per_key() -> None:
    """``/edge.nwb`` and ``edge.nwb`` used to share ``converted/edge/`` (so did ``edge.NWB`` and
    ``edge``), and ``a/a.zarr.nwb`` wrote into ``a.nwb``'s viewer bundle."""
    folders = {key: output_folder("converted/", key) for key in KEYS}
    assert len(set(folders.values())) == len(KEYS)
    assert folders["/edge.nwb"] == "converted//edge/" and folders["edge.nwb"] == "converted/edge/"
    # No key's folder is one of another key's own names (its version folders, its pointer).
    for key, other in itertools.permutations(KEYS, 2):
        inside = folders[other][len(folders[key]) :] if folders[other].startswith(folders[key]) else None
        assert inside is None or not inside.startswith("@"), (key, other)
    assert records_folder("records/", "/edge.nwb", "v1") != records_folder("records/", "edge.nwb", "v1")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("edge.NWB", "does not end in .nwb"),
        ("edge", "does not end in .nwb"),
        (".nwb", "no name before"),
        ("a/.nwb", "no name before"),
        ("a/@v/x.nwb", "starts with '@'"),
        ("@current.json/x.nwb", "starts with '@'"),
    ],
)
def test_a_key_that_could_share_a_folder_is_refused(key: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        output_folder("converted/", key)


def test_each_version_has_its_own_folder_named_by_its_version_id_or_etag() -> None:
    versioned = S3Ref(bucket="in-bucket", key="a/b.nwb", version_id="3HL4kq.rmSp_X")
    suspended = S3Ref(bucket="in-bucket", key="a/b.nwb", version_id="null", etag='"9f2c"')
    assert version_token(versioned) == "v3HL4kq.rmSp_X"
    assert version_token(suspended) == "e9f2c"
    folder = output_folder("converted/", "a/b.nwb")
    assert version_folder(folder, "v1") == "converted/a/b/@v/v1/"
    assert VERSIONS == "@v/" and POINTER_NAME.startswith("@")
    with pytest.raises(InvalidInputError, match="neither a version id nor an ETag"):
        version_token(S3Ref(bucket="in-bucket", key="a/b.nwb"))


def test_derived_keys_longer_than_s3_allows_are_refused() -> None:
    base = "n" * 400 + ".nwb"
    check_key_lengths("converted/" + "d/" * 40 + "@v/v1/", "records/x/@v/v1/", base, file="s3://in/k")
    with pytest.raises(InvalidInputError, match=r"output keys would take up to 1\d\d\d bytes, more than S3's 1024"):
        check_key_lengths("converted/" + "ü" * 260 + "/@v/v1/", "records/x/@v/v1/", base, file="s3://in/k")
