"""Channels: the output's channels read from the store, matched with the package's channels on
Pennsieve (pennsieve-api.md §3.4) or created there."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from ..output.storage import Store
from ..plan.models import ChannelMetadata
from .client import PennsieveClient
from .errors import ChannelCreateError, ChannelError, PennsieveHTTPError
from .models import Channel, NewChannel
from .records import ImportState, save_state

log = logging.getLogger(__name__)

CHUNK_RE = re.compile(r"^channel-(\d+)_(\d+)_(\d+)\.bin\.gz$")
METADATA_RE = re.compile(r"^channel-(\d+)\.metadata\.json$")

RATE_TOLERANCE = 0.02  # §3.4: |1 - existing.rate / local.rate| < 0.02
CHANNELS_PER_REQUEST = 200
CHANNEL_ROUNDS = 4


@dataclass(frozen=True)
class LocalChannel:
    """One channel of the output: its metadata and its chunk files (sorted by start time)."""

    index: int
    metadata: ChannelMetadata
    files: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The name sent to Pennsieve: never blank (a blank one becomes ``channel-<index>``)."""
        return self.metadata.name if self.metadata.name.strip() else f"channel-{self.index:05d}"

    def new_channel(self, asset_id: str | None = None) -> NewChannel:
        """The channel to create; in the asset flow, tied to the viewer asset ``asset_id``."""
        m = self.metadata
        return NewChannel(
            name=self.name,
            start=m.start,
            end=m.end,
            unit=m.unit,
            rate=m.rate,
            channel_type=m.type,
            group=m.group or "default",
            last_annotation=m.last_annotation,
            properties=m.properties,
            viewer_asset_id=asset_id,
        )


def chunk_channel_index(name: str) -> int | None:
    """The channel index of a chunk file's name; ``None`` when ``name`` is no chunk file."""
    m = CHUNK_RE.match(name)
    return int(m.group(1)) if m else None


def read_output(store: Store) -> list[LocalChannel]:
    """The channels of a converter output, read from the store's names and metadata files."""
    files: dict[int, list[tuple[int, str]]] = {}
    metadata_names: dict[int, str] = {}
    for name in store.list_names("channel-"):
        if m := CHUNK_RE.match(name):
            files.setdefault(int(m.group(1)), []).append((int(m.group(2)), name))
        elif m := METADATA_RE.match(name):
            metadata_names[int(m.group(1))] = name
    orphans = sorted(set(files) - set(metadata_names))
    if orphans:
        raise ChannelError(
            f"chunk files of channel(s) {', '.join(f'{i:05d}' for i in orphans[:10])} have no"
            " channel-<index>.metadata.json",
            file=store.describe(""),
        )
    channels = []
    for index in sorted(metadata_names):
        name = metadata_names[index]
        try:
            metadata = ChannelMetadata.model_validate_json(store.read_bytes(name))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ChannelError(
                f"invalid metadata ({first['loc']}: {first['msg']})", file=store.describe(name)
            ) from None
        if metadata.rate <= 0:
            raise ChannelError(f"invalid rate {metadata.rate}", file=store.describe(name))
        chunk_names = [n for _, n in sorted(files.get(index, []))]
        channels.append(LocalChannel(index=index, metadata=metadata, files=chunk_names))
    return channels


def channel_matches(local: LocalChannel, remote: Channel) -> bool:
    """§3.4: same name and type (case-insensitive) and rates within 2 %."""
    c = remote.content
    if not c.rate or c.channel_type is None:
        return False
    return (
        c.name.casefold() == local.name.casefold()
        and c.channel_type.casefold() == local.metadata.type.casefold()
        and abs(1 - c.rate / local.metadata.rate) < RATE_TOLERANCE
    )


def match_channels(
    local: Sequence[LocalChannel], remote: Sequence[Channel], known: dict[int, str] | None = None
) -> tuple[dict[int, str], list[LocalChannel]]:
    """Pair local channels with existing remote ones; each remote channel is used at most once.

    ``known`` (from a previous import's state) wins when that channel still exists and still
    matches (it tells same-named channels apart). Returns
    (channel index → node id, local channels still to create).
    """
    by_id = {r.content.id: r for r in remote}
    claimed: set[str] = set()
    mapping: dict[int, str] = {}
    for ch in local:
        node = (known or {}).get(ch.index)
        if node is not None and node in by_id and node not in claimed and channel_matches(ch, by_id[node]):
            mapping[ch.index] = node
            claimed.add(node)
    missing = []
    for ch in local:
        if ch.index in mapping:
            continue
        found = next((r for r in remote if r.content.id not in claimed and channel_matches(ch, r)), None)
        if found is None:
            missing.append(ch)
        else:
            mapping[ch.index] = found.content.id
            claimed.add(found.content.id)
    return mapping, missing


def sync_channels(
    store: Store, client: PennsieveClient, state: ImportState, channels: list[LocalChannel], sleep_s: float
) -> tuple[int, int]:
    """Match or create every channel; the state is saved right after each creation.

    Returns (channels created, channels reused).
    """

    def save(mapping: dict[int, str]) -> None:
        state.channels = dict(mapping)
        save_state(store, state)

    _, created = ensure_channels(client, state.target.package_id, channels, state.channels, save, sleep_s)
    return created, len(channels) - created


Check = Callable[[dict[int, str], Sequence[Channel]], None]


def ensure_channels(
    client: PennsieveClient,
    package: str,
    channels: list[LocalChannel],
    known: dict[int, str],
    save: Callable[[dict[int, str]], None],
    sleep_s: float,
    *,
    asset_id: str | None = None,
    check: Check | None = None,
) -> tuple[dict[int, str], int]:
    """Match every channel with the package's or create it (tied to ``asset_id`` when given);
    ``save`` gets the mapping whenever it changes (right after each creation), ``check`` sees
    every match before anything is created. Returns (channel index → node id, channels created).
    """
    created_total = 0
    mapping = dict(known)
    for round_ in range(1, CHANNEL_ROUNDS + 1):
        remote = client.list_channels(package)
        matched, missing = match_channels(channels, remote, mapping)
        if check is not None:
            check(matched, remote)
        if matched != mapping:
            mapping = matched
            save(mapping)
        if not missing:
            return mapping, created_total
        try:
            for start in range(0, len(missing), CHANNELS_PER_REQUEST):
                part = missing[start : start + CHANNELS_PER_REQUEST]
                created = client.create_channels(package, [ch.new_channel(asset_id) for ch in part])
                for ch, remote_ch in zip(part, created, strict=True):
                    if remote_ch.content.name.casefold() != ch.name.casefold():
                        raise ChannelError(
                            f"created channel {remote_ch.content.id} is named {remote_ch.content.name!r},"
                            f" not {ch.name!r}"
                        )
                    mapping[ch.index] = remote_ch.content.id
                created_total += len(part)
                save(mapping)
            return mapping, created_total
        except PennsieveHTTPError as exc:
            # The server may have created them before failing: list again and match, never blindly re-POST.
            if not exc.retryable or round_ == CHANNEL_ROUNDS:
                raise ChannelCreateError(
                    f"creating channels on {package} failed: {exc.reason}", retryable=exc.retryable
                ) from None
            log.warning("creating channels failed (%s); listing again before retrying", exc.reason)
            time.sleep(sleep_s * round_)
    raise ChannelError(f"creating channels on {package} did not converge")  # pragma: no cover
