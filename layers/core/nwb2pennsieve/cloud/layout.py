"""Where one input object's output and records go: one folder per key, one subfolder per version.

For an input key ``a/b.nwb`` (the *stem* is the key without ``.nwb``: ``a/b``), in the output bucket:

- ``{OutputPrefix}a/b/``: the key's **output folder**;
- ``{OutputPrefix}a/b/@v/<version token>/``: the **version folder**, one per object version: exactly
  the files the local pool writes (chunk files, channel metadata, the viewer bundle), and with the
  importer on its import records. Only that version's execution writes there;
- ``{OutputPrefix}a/b/@current.json``: the **pointer** (:class:`~.versions.Pointer`): the version
  folder that is published. Finalize moves it by compare-and-swap, only while its version is still
  the object's latest; readers follow it;
- ``{RecordsPrefix}a/b/@v/<version token>/``: the version's records (:mod:`.records`).

The mapping is injective: the key is the stem plus ``.nwb``, nothing is stripped, so ``/edge.nwb``
and ``edge.nwb`` have two folders. Every name the pipeline adds inside a folder starts with ``@``,
and a key with a path segment starting with ``@`` is refused, so no key's folder can fall on
another key's version folders or pointer (``a/b.nwb`` lives in ``a/b/``, beside ``a.nwb``'s ``@v/``).

The **version token** names a version: ``v<version id>`` in a versioned bucket, else
``e<ETag>`` (an unversioned bucket, or a versioning-suspended one, whose uploads all carry the
version id ``null``).
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .models import S3Ref

SUFFIX = ".nwb"
RESERVED = "@"  # every name the pipeline adds inside a folder starts with it
VERSIONS = "@v/"
POINTER_NAME = "@current.json"
S3_KEY_BYTES = 1024  # S3's longest key (UTF-8 bytes)
# The longest name a conversion adds under its version folder, the input's base name aside (the
# viewer bundle's shards, ``<base name>.zarr/<level>/<array>/c/<i>/<j>/<k>``; chunk files are ~55
# bytes); tests/unit/test_cloud_layout.py checks it against a real conversion.
OUTPUT_NAME_BYTES = 96
# The longest name under a version's records folder (``bundle-partials/<work item id>.bin``...).
RECORDS_NAME_BYTES = 64


def key_stem(key: str) -> str:
    """``key`` without ``.nwb``; an :class:`InvalidInputError` for a key that has no folder of its own."""
    if not key.endswith(SUFFIX):
        raise InvalidInputError(f"the key does not end in {SUFFIX} (only such keys are converted)")
    stem = key[: -len(SUFFIX)]
    if not stem or stem.endswith("/"):
        raise InvalidInputError(f"the key has no name before {SUFFIX}")
    if any(segment.startswith(RESERVED) for segment in stem.split("/")):
        raise InvalidInputError(
            f"a path segment of the key starts with {RESERVED!r}, which names the pipeline's own folders"
        )
    return stem


def output_folder(output_prefix: str, key: str) -> str:
    """``{output_prefix}<stem>/``: the key's output folder (its pointer and its version folders)."""
    return f"{output_prefix}{key_stem(key)}/"


def version_token(source: S3Ref) -> str:
    """``v<version id>``, or ``e<ETag>`` for an object without one (unversioned, or ``null``)."""
    if source.version_id:
        return "v" + source.version_id
    if source.etag:
        return "e" + source.etag
    raise InvalidInputError("the object has neither a version id nor an ETag to pin", file=source.uri)


def version_folder(folder: str, token: str) -> str:
    """``<output folder>@v/<token>/``: where one version's output is written."""
    return folder + VERSIONS + token + "/"


def records_folder(records_prefix: str, key: str, token: str) -> str:
    """``{records_prefix}<stem>/@v/<token>/``: one version's records."""
    return f"{records_prefix}{key_stem(key)}/{VERSIONS}{token}/"


def check_key_lengths(version_prefix: str, records_prefix: str, base_name: str, *, file: str) -> None:
    """Refuse, before any write, a key whose derived keys would pass S3's 1,024-byte limit (the
    writers would otherwise fail half-way with KeyTooLongError)."""
    longest = {
        "output": len(version_prefix.encode()) + len(base_name.encode()) + OUTPUT_NAME_BYTES,
        "records": len(records_prefix.encode()) + RECORDS_NAME_BYTES,
    }
    for what, size in longest.items():
        if size > S3_KEY_BYTES:
            raise InvalidInputError(
                f"the key is too long: its {what} keys would take up to {size} bytes, "
                f"more than S3's {S3_KEY_BYTES}; shorten the key (or OutputPrefix/RecordsPrefix)",
                file=file,
            )
