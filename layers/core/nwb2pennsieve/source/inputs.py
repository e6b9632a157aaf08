"""Where an input file is: a local path, an ``http(s)://`` URL or an ``s3://bucket/key`` object.

A URL or an S3 object is read in place with ranged requests (a
:class:`~nwb2pennsieve.source.ranges.RangeReader`), never downloaded: planning reads the file's
metadata, and each work item reads its series' stored chunks by their byte ranges (the cloud's
direct chunk reader). :class:`InputSource` is small and picklable, so each worker of the local
pool opens the input itself (:func:`open_input`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO, Literal, cast
from urllib.parse import urlsplit

import h5py
from pydantic import BaseModel, ConfigDict

from ..errors import InvalidInputError
from .http import HTTPRangeReader, NetworkPolicy, url_name
from .identity import SourceIdentity, check_same, path_identity, stat_identity
from .nwb import open_nwb
from .ranges import RangeReader, ReadStats
from .slabs import ClosedOnExit

# Over a range reader h5py's chunk cache holds metadata only: the work items' data is read by
# byte range (the direct chunk reader), not through h5py.
REMOTE_H5_CACHE_BYTES = 4 * 1024 * 1024


class InputSource(BaseModel):
    """An input file: ``kind`` says how ``location`` (a path or a URL) is read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["file", "http", "s3"]
    location: str
    network: NetworkPolicy = NetworkPolicy()  # a URL's timeouts and retry budget (NETWORK_* settings)

    @classmethod
    def parse(cls, value: str | os.PathLike[str] | InputSource) -> InputSource:
        """``http(s)://...`` and ``s3://bucket/key`` are URLs; anything else is a local path."""
        if isinstance(value, InputSource):
            return value
        text = os.fspath(value)
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme in ("http", "https"):
            return cls(kind="http", location=text)
        if scheme == "s3":
            bucket, _, key = text[len("s3://") :].partition("/")
            if not bucket or not key:
                raise InvalidInputError("an S3 input is s3://bucket/key", file=text)
            return cls(kind="s3", location=text)
        if scheme:
            raise InvalidInputError(f"{scheme}:// inputs are not supported (a path, http(s):// or s3://)", file=text)
        return cls(kind="file", location=text)

    @property
    def name(self) -> str:
        """What messages and the plan call the file: the base name of a path, else the URL
        without its query (a signed URL's signature is a credential) or user info."""
        if self.kind == "file":
            return os.path.basename(self.location) or self.location
        if self.kind == "s3":
            return self.location
        return url_name(self.location)

    @property
    def stem(self) -> str:
        """The file name without ``.nwb`` (the last path segment of a URL)."""
        path = self.location if self.kind == "file" else urlsplit(self.location).path
        last = [p for p in path.replace(os.sep, "/").split("/") if p]
        base = last[-1] if last else "input"
        return base[: -len(".nwb")] if base.lower().endswith(".nwb") else base

    def s3_location(self) -> tuple[str, str]:
        bucket, _, key = self.location[len("s3://") :].partition("/")
        return bucket, key


# --- opening any input ---------------------------------------------------------------------------


def _s3_client() -> object:
    import boto3

    # The default chain: credentials, region and AWS_ENDPOINT_URL from the environment.
    return boto3.client("s3")


def range_reader(
    source: InputSource, *, stats: ReadStats | None = None, expect: SourceIdentity | None = None
) -> RangeReader | None:
    """The range reader of a URL or S3 input (None for a local file); ``expect``: the version
    planned (a different one raises :class:`~nwb2pennsieve.source.identity.InputChangedError`)."""
    if source.kind == "http":
        return HTTPRangeReader(source.location, name=source.name, stats=stats, expect=expect, policy=source.network)
    if source.kind == "s3":
        from .s3 import S3RangeReader

        bucket, key = source.s3_location()
        reader = S3RangeReader(_s3_client(), bucket, key, stats=stats, expect=expect)  # type: ignore[arg-type]
        if reader.size == 0:
            raise InvalidInputError("the file is empty (0 bytes)", file=source.name)
        return reader
    return None


@dataclass
class OpenedInput(ClosedOnExit):
    """An open input: the HDF5 file and, for a URL or S3 input, the range reader under it."""

    source: InputSource
    h5: h5py.File
    reader: RangeReader | None = None

    @property
    def identity(self) -> SourceIdentity:
        """The version of the input open here (a local file: ``fstat`` of HDF5's own descriptor)."""
        if self.reader is not None:
            return self.reader.identity
        return stat_identity(os.fstat(int(self.h5.id.get_vfd_handle())))

    def close(self) -> None:
        self.h5.close()
        if self.reader is not None:
            self.reader.close()


def open_input(
    source: str | os.PathLike[str] | InputSource,
    *,
    name: str | None = None,
    stats: ReadStats | None = None,
    expect: SourceIdentity | None = None,
) -> OpenedInput:
    """Open a local path, URL or S3 object as an NWB file (see :func:`~nwb2pennsieve.source.nwb.open_nwb`).

    ``name`` is what errors call the file (default: :attr:`InputSource.name`). ``expect``: the
    version the plan was made from; another raises
    :class:`~nwb2pennsieve.source.identity.InputChangedError`.
    """
    src = InputSource.parse(source)
    label = name or src.name
    reader = range_reader(src, stats=stats, expect=expect)
    if reader is None:
        if expect is not None:  # a file cut short or rewritten fails as changed, not as damaged
            check_same(expect, path_identity(src.location, label), label)
        opened = OpenedInput(src, open_nwb(src.location, name=label))
        try:
            check_same(expect, opened.identity, label)
        except BaseException:
            opened.close()
            raise
        return opened
    try:
        h5 = open_nwb(cast(BinaryIO, reader), name=label, cache_bytes=REMOTE_H5_CACHE_BYTES)
    except BaseException:
        reader.close()
        raise_network_failure(reader)
        raise
    return OpenedInput(src, h5, reader)


def raise_network_failure(reader: RangeReader | None) -> None:
    """Raise the reader's network failure, if it had one: h5py reports an exception raised while it
    reads a file object as HDF5 damage ("the file is damaged or truncated"), which it is not."""
    failure = getattr(reader, "failure", None)
    if failure is not None:
        raise failure from None


def check_unchanged(source: InputSource, expected: SourceIdentity | None, name: str) -> None:
    """The input is still the version planned (a local file by its name: a rename is seen too)."""
    if expected is None:
        return
    if source.kind == "file":
        check_same(expected, path_identity(source.location, name), name)
        return
    reader = range_reader(source, expect=expected)
    if reader is not None:
        reader.close()
