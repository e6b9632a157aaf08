"""Channel attributes and the bundle's metadata documents (every ``zarr.json``, consolidated in the root)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from ..output.storage import Store
from ..plan.bundle_layout import LevelLayout
from .encode import ZSTD_LEVEL, ArraySpec, consolidated_root, dumps, group_metadata
from .sink import put

UNIT = "uV"
ASSET_PROPERTIES = "asset-properties.json"


@dataclass(frozen=True)
class ChannelInfo:
    """What a channel group's attributes say. ``index`` is its group name in the bundle (dense, from 0)."""

    index: int
    id: str
    name: str
    rate_hz: float
    start_us: int
    kind: Literal["continuous", "unit"] = "continuous"

    def attributes(self) -> dict[str, Any]:
        """Exactly the keys the format defines, in its order."""
        return {
            "id": self.id,
            "rate_hz": float(self.rate_hz),
            "start_us": int(self.start_us),
            "kind": self.kind,
            "name": self.name,
            "unit": UNIT,
        }


def level_spec(layout: LevelLayout, *, zstd_level: int = ZSTD_LEVEL) -> ArraySpec:
    """The array of one pyramid level (float32, NaN fill, ``period_us`` attribute)."""
    return ArraySpec(
        shape=layout.shape,
        dtype="float32",
        chunk_rows=layout.chunk_bins,
        shard_rows=layout.shard_bins,
        attributes={"period_us": float(layout.period_us)},
        zstd_level=zstd_level,
    )


def continuous_documents(
    channel: ChannelInfo, levels: list[LevelLayout], *, zstd_level: int = ZSTD_LEVEL
) -> dict[str, dict[str, Any]]:
    """``{path: zarr.json document}`` for a continuous channel's group and its level arrays."""
    docs = {str(channel.index): group_metadata(channel.attributes())}
    for layout in levels:
        docs[f"{channel.index}/{layout.level}"] = level_spec(layout, zstd_level=zstd_level).metadata()
    return docs


def write_documents(store: Store, documents: dict[str, dict[str, Any]]) -> None:
    """Write every node's ``zarr.json``, then the root's (with all of them consolidated) last.

    The root is written last so a reader that finds it finds a bundle whose metadata is complete.
    """
    for path in sorted(documents):
        put(store, f"{path}/zarr.json", dumps(documents[path]))
    put(store, "zarr.json", dumps(consolidated_root(documents)))


def asset_properties(bundle_name: str) -> bytes:
    """``asset-properties.json``, written beside the bundle: it names the bundle's directory."""
    return (json.dumps({"root_path": bundle_name}) + "\n").encode()
