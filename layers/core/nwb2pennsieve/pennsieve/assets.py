"""The viewer asset's life (pennsieve-api.md §5.3-§5.5, §5.10, §5.11): find it, decide what a run
does with it, create it without duplicates, finish it, and clean up only what this tool created.

An asset is *ours* when this output's ``import-asset.json`` names it, or when its properties
carry our marker (``creator: nwb2pennsieve``, the recording, the output's fingerprint and the
creating run's nonce; whether Pennsieve keeps an asset's properties is not confirmed, hence both).
What a run does with the assets of this name and type on the lookup packages:

- one is finished: nothing (a rerun of a finished import), unless it is ours for another recording;
- ours, unfinished, same output: resume it (fresh credentials, upload what is missing, finish);
- ours, unfinished, but the output changed: clean it up (its channels, then it) and create anew;
- another recording's (by our marker), or unfinished and not ours: refuse, touching nothing;
- none: create one.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .. import __version__
from ..settings import CommonSettings
from .channels import Check, LocalChannel
from .client import PennsieveClient
from .errors import AssetConflictError, ChannelConflictError, PennsieveError, PennsieveHTTPError
from .models import Channel, NewAsset, UploadCredentials, ViewerAsset
from .records import AssetState
from .target import ImportTarget

log = logging.getLogger(__name__)

CREATOR = "nwb2pennsieve"
CREATE_ROUNDS = 4


@dataclass(frozen=True)
class AssetPolicy:
    """The asset's name and type (what a rerun looks for) and the status of a finished one."""

    name: str
    asset_type: str
    finished_status: str

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> AssetPolicy:
        return cls(settings.asset_name, settings.asset_type, settings.asset_finished_status)


def fingerprint(channels: Sequence[LocalChannel]) -> str:
    """Of the output's channels (metadata) and chunk file names: a resumed asset must hold this output."""
    digest = hashlib.sha256()
    for ch in channels:
        digest.update(f"{ch.index}\n{ch.metadata.model_dump_json()}\n".encode())
        digest.update("\n".join(ch.files).encode() + b"\n")
    return digest.hexdigest()[:32]


def marker(source: str, output: str) -> dict[str, str]:
    """The properties a new asset carries: who made it, for which recording and output; the nonce
    finds it again when the answer to its creation was lost."""
    return {"creator": CREATOR, "creator_version": __version__, "source": source, "fingerprint": output,
            "nonce": uuid.uuid4().hex}  # fmt: skip


def find_assets(
    client: PennsieveClient, dataset_id: str, packages: Sequence[str], policy: AssetPolicy
) -> list[ViewerAsset]:
    """Every asset of this name and type linked to any of ``packages`` (each once)."""
    found: dict[str, ViewerAsset] = {}
    for package in packages:
        for asset in client.list_assets(dataset_id, package):
            if asset.name == policy.name and asset.asset_type == policy.asset_type:
                found.setdefault(asset.id, asset)
    return list(found.values())


@dataclass(frozen=True)
class AssetDecision:
    """What to do: ``finished`` (nothing), ``resume`` ``asset``, or ``create`` one; ``replace``
    are assets of ours to clean up first (a changed output's, duplicates), ``why`` says why."""

    action: Literal["finished", "resume", "create"]
    asset: ViewerAsset | None = None
    replace: tuple[ViewerAsset, ...] = ()
    why: str = ""


def decide(
    found: Sequence[ViewerAsset],
    state: AssetState | None,
    *,
    source: str,
    output: str,
    policy: AssetPolicy,
    package: str,
) -> AssetDecision:
    """The decision for the assets found (pure: no call). Raises :class:`AssetConflictError`."""
    recorded = state.asset_id if state is not None else None

    def ours(a: ViewerAsset) -> bool:
        return a.id == recorded or a.property("creator") == CREATOR

    def recording(a: ViewerAsset) -> str | None:
        return a.property("source") or (state.source if state is not None and a.id == recorded else None)

    for a in found:
        if ours(a) and recording(a) not in (None, source):
            raise AssetConflictError(
                f"package {package} holds viewer asset {a.id} ({a.status}) of another recording,"
                f" {recording(a)!r}: one recording, one package; import {source!r} into a package of its own"
            )
    finished = [a for a in found if a.status == policy.finished_status]
    if finished:
        return AssetDecision("finished", finished[0])
    foreign = [a for a in found if not ours(a)]
    if foreign:
        a = foreign[0]
        raise AssetConflictError(
            f"package {package} has an unfinished viewer asset {a.id} named {a.name!r} (status {a.status!r})"
            " that nwb2pennsieve did not create; delete it or set another ASSET_NAME"
        )
    if not found:
        return AssetDecision("create")
    # The recorded one first, then the newest.
    best, *others = sorted(found, key=lambda a: (a.id == recorded, a.created_at or ""), reverse=True)
    made_for = best.property("fingerprint") or (
        state.fingerprint if state is not None and best.id == recorded else None
    )
    if made_for is not None and made_for != output:
        return AssetDecision("create", replace=(best, *others), why="the output changed since it was created")
    return AssetDecision("resume", best, replace=tuple(others), why="a duplicate of the asset resumed")


def channel_owners(asset_id: str | None, package: str) -> Check:
    """A check of matched channels: each must belong to ``asset_id`` (None: no asset yet, so none may match)."""

    def check(mapping: dict[int, str], remote: Sequence[Channel]) -> None:
        by_id = {r.content.id: r.content for r in remote}
        for node in mapping.values():
            channel = by_id[node]
            if channel.viewer_asset_id == asset_id and asset_id is not None:
                continue
            owner = f"viewer asset {channel.viewer_asset_id}" if channel.viewer_asset_id else (
                "no viewer asset (an import of the legacy flow?)")  # fmt: skip
            ours = f"asset {asset_id}" if asset_id else "asset (none was created)"
            raise ChannelConflictError(
                f"channel {node} ({channel.name!r}) on package {package} belongs to {owner}, not to this"
                f" import's {ours}; delete that channel or import into another package"
            )

    return check


def create_asset(
    client: PennsieveClient,
    target: ImportTarget,
    lookup: Sequence[str],
    policy: AssetPolicy,
    properties: dict[str, str],
    *,
    sleep_s: float = 1.0,
) -> tuple[ViewerAsset, UploadCredentials | None]:
    """Create the asset (linked to ``lookup``), never twice: after a lost or failed answer the
    assets are listed again and one carrying this run's nonce is adopted (its credentials then
    come from a renewal: None here)."""
    body = NewAsset(name=policy.name, asset_type=policy.asset_type, package_ids=list(lookup), properties=properties)
    for round_ in range(1, CREATE_ROUNDS + 1):
        try:
            created = client.create_asset(target.dataset_id, body)
            log.info("created viewer asset %s (%s) linked to %s", created.asset.id, policy.name, ", ".join(lookup))
            return created.asset, created.upload_credentials
        except PennsieveError as exc:
            retryable = not isinstance(exc, PennsieveHTTPError) or exc.retryable
            landed = [a for a in find_assets(client, target.dataset_id, lookup, policy)
                      if a.property("nonce") == properties["nonce"]]  # fmt: skip
            if landed:
                log.info("the viewer asset %s was created although its answer was lost: adopting it", landed[0].id)
                return landed[0], None
            if not retryable or round_ == CREATE_ROUNDS:
                raise
            log.warning("creating the viewer asset failed (%s); trying again", exc.reason)
            time.sleep(sleep_s * round_)
    raise AssertionError("unreachable")  # pragma: no cover


def finish_asset(client: PennsieveClient, target: ImportTarget, asset_id: str, policy: AssetPolicy) -> None:
    """§5.10: mark the asset finished; only that turns the next run into a no-op."""
    asset = client.update_asset(asset_id, target.dataset_id, status=policy.finished_status)
    if asset.status != policy.finished_status:
        raise PennsieveError(
            f"viewer asset {asset_id} is {asset.status!r} after being marked {policy.finished_status!r}"
        )


def cleanup_asset(client: PennsieveClient, target: ImportTarget, asset_id: str) -> str:
    """§5.11: delete the target's channels tied to the asset (only an asset of ours is ever cleaned
    up, so they are ours), then the asset. Best effort; says what it did and what is left."""
    deleted, left = 0, []
    try:
        channels = [
            c.content.id for c in client.list_channels(target.package_id) if c.content.viewer_asset_id == asset_id
        ]
    except PennsieveError as exc:
        channels, left = [], [f"its channels (listing them failed: {exc.reason})"]
    for node in channels:
        try:
            client.delete_channel(target.package_id, node)
            deleted += 1
        except PennsieveError as exc:
            log.error("could not delete channel %s: %s", node, exc.reason)
            left.append(f"channel {node}")
    try:
        client.delete_asset(asset_id, target.dataset_id)
        done = f"deleted {deleted} channels and viewer asset {asset_id}"
    except PennsieveError as exc:
        log.error("could not delete viewer asset %s (needs manual cleanup): %s", asset_id, exc.reason)
        done, left = f"deleted {deleted} channels", [*left, f"viewer asset {asset_id}"]
    return done + (f"; delete by hand: {', '.join(left[:5])}" if left else "")
