"""The fake Pennsieve's viewer-asset routes (pennsieve-api.md §5): assets, their upload
credentials, chunk ranges; mixed into :class:`~.server.FakePennsieve`.

Credentials it mints are registered with the S3 gate (:mod:`.s3gate`) when it has one: only
they may write the asset's prefix ``viewer-assets/O{org}/D{dataset}/{asset}/``, until they
expire (``credential_ttl`` seconds, or ``credential_puts`` PUTs: a fault). Deleting an asset
revokes its credentials and purges its prefix (Pennsieve queues that purge). Where §5 is silent
the fake does what the service plausibly does, marked [guess].
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from .s3gate import Issued

if TYPE_CHECKING:
    from .s3gate import S3Gate

ASSET_BUCKET = "pennsieve-viewer-assets"
MAX_RANGE_CHUNKS = 10_000  # the service's own cap per request
RANGES_MAX_BODY = 10 * 1_048_576  # [guess]: the reference's 10,000-chunk batches are ~2.2 MB
_UNSAFE_KEY = re.compile(r"(^/)|(^|/)\.\.(/|$)|://")


class _AssetError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        self.status = status
        self.message = message
        self.extra = extra


class AssetRoutes:
    """State and handlers of the asset flow; :class:`~.server.FakePennsieve` provides the rest."""

    datasets: dict[str, dict[str, Any]]
    packages: dict[str, dict[str, Any]]
    channels: dict[str, list[dict[str, Any]]]

    def _init_assets(
        self,
        s3: S3Gate | None,
        *,
        finished_status: str = "active",
        credential_ttl: float = 3600.0,
        credential_puts: int | None = None,
        refresh: Literal["ok", "unsupported"] = "ok",
    ) -> None:
        self.s3 = s3
        self.finished_status = finished_status
        self.credential_ttl = credential_ttl
        self.credential_puts = credential_puts
        self.refresh = refresh
        self.assets: dict[str, dict[str, Any]] = {}
        self.issued: list[Issued] = []  # every credential minted (the tests search outputs for them)
        self.ranges: dict[str, dict[tuple[str, int, int], dict[str, str]]] = {}  # package → chunk → key, asset
        self.range_requests: list[dict[str, Any]] = []
        self.deletions: list[tuple[str, str]] = []  # ("asset" | "channel", id), in order
        if s3 is not None:
            s3.call("bucket", {"name": ASSET_BUCKET})

    # -- seeding and inspection -------------------------------------------------------------------

    def add_asset(
        self,
        dataset_id: str,
        package_ids: list[str],
        *,
        name: str = "nwb-asset",
        status: str = "created",
        properties: dict[str, Any] | None = None,
        asset_type: str = "timeseries",
    ) -> str:
        """Seed an asset (an earlier run's, finished or not, ours or someone else's)."""
        asset = self._new_asset(dataset_id, name, asset_type, package_ids, properties or {})
        asset["status"] = status
        return str(asset["id"])

    def asset_prefix(self, asset_id: str) -> str:
        return str(self.assets[asset_id]["_prefix"])

    def assets_of(self, package_id: str) -> list[dict[str, Any]]:
        return [self._asset_json(a) for a in self.assets.values() if package_id in a["package_ids"]]

    def secrets_issued(self) -> list[str]:
        """Every key id, secret and session token minted so far."""
        return [v for c in self.issued for v in (c.access_key_id, c.secret_access_key, c.session_token)]

    # -- helpers ------------------------------------------------------------------------------------

    def _dataset_number(self, dataset_id: str) -> int:
        return 1000 + list(self.datasets).index(dataset_id)

    def _new_asset(
        self, dataset_id: str, name: str, asset_type: str, package_ids: list[str], properties: dict[str, Any]
    ) -> dict[str, Any]:
        asset_id = str(uuid.uuid4())
        asset = {
            "id": asset_id,
            "dataset_id": dataset_id,
            "name": name,
            "asset_type": asset_type,
            "asset_url": "",
            "properties": properties,
            "status": "created",
            "package_ids": list(package_ids),
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "_prefix": f"viewer-assets/O19/D{self._dataset_number(dataset_id)}/{asset_id}/",
        }
        self.assets[asset_id] = asset
        return asset

    @staticmethod
    def _asset_json(asset: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in asset.items() if not k.startswith("_")}

    def _mint(self, asset: dict[str, Any]) -> dict[str, str]:
        issued = Issued(
            access_key_id="ASIA" + secrets.token_hex(8).upper(),
            secret_access_key=secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(60),
            bucket=ASSET_BUCKET,
            prefix=asset["_prefix"],
            expires_at=time.time() + self.credential_ttl,
            puts_left=self.credential_puts,
        )
        self.issued.append(issued)
        if self.s3 is not None:
            self.s3.register(issued)
        return {
            "access_key_id": issued.access_key_id,
            "secret_access_key": issued.secret_access_key,
            "session_token": issued.session_token,
            "expiration": datetime.fromtimestamp(issued.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bucket": ASSET_BUCKET,
            "region": "us-east-1",
            "key_prefix": issued.prefix,
        }

    def _asset_of(self, q: dict[str, str], asset_id: str) -> dict[str, Any]:
        dataset = q.get("dataset_id")
        if not dataset:
            raise _AssetError(400, "dataset_id is required")
        asset = self.assets.get(asset_id)
        if asset is None or asset["dataset_id"] != dataset:
            raise _AssetError(404, f"asset {asset_id} not found")
        return asset

    # -- routes (API2) ----------------------------------------------------------------------------

    def _list_assets(self, q: dict[str, str], body: Any) -> Any:
        if not q.get("dataset_id") or not q.get("package_id"):
            raise _AssetError(400, "dataset_id and package_id are required")
        found = [a for a in self.assets.values() if q["package_id"] in a["package_ids"]]
        return 200, {"assets": [self._asset_json(a) for a in found if a["dataset_id"] == q["dataset_id"]]}

    def _create_asset(self, q: dict[str, str], body: Any) -> Any:
        dataset = q.get("dataset_id")
        if not dataset or dataset not in self.datasets:
            raise _AssetError(404 if dataset else 400, f"dataset {dataset} not found")
        if not isinstance(body, dict) or not body.get("name") or not body.get("asset_type"):
            raise _AssetError(400, "name and asset_type are required")
        packages = body.get("package_ids")
        if not isinstance(packages, list) or not packages:
            raise _AssetError(400, "package_ids is required")
        for p in packages:
            if p not in self.packages or self.packages[p]["datasetNodeId"] != dataset:
                raise _AssetError(404, f"package {p} not found in {dataset}")
        asset = self._new_asset(dataset, body["name"], body["asset_type"], packages, body.get("properties") or {})
        return 201, {"asset": self._asset_json(asset), "upload_credentials": self._mint(asset)}

    def _refresh_credentials(self, q: dict[str, str], body: Any, asset_id: str) -> Any:
        if self.refresh == "unsupported":
            raise _AssetError(404, "Not Found")  # the route does not exist (yet)
        asset = self._asset_of(q, asset_id)
        if asset["status"] == self.finished_status:
            raise _AssetError(409, f"asset {asset_id} is {asset['status']}")  # [guess]
        return 200, {"upload_credentials": self._mint(asset)}

    def _patch_asset(self, q: dict[str, str], body: Any, asset_id: str) -> Any:
        asset = self._asset_of(q, asset_id)
        if not isinstance(body, dict) or not set(body) <= {"status", "properties", "package_ids"} or not body:
            raise _AssetError(400, "only status, properties and package_ids can change")
        if "status" in body and not str(body["status"]).strip():
            raise _AssetError(400, "status must not be blank")
        asset.update(body)
        return 200, self._asset_json(asset)  # the bare asset (§5.5)

    def _delete_asset(self, q: dict[str, str], body: Any, asset_id: str) -> Any:
        asset = self._asset_of(q, asset_id)
        del self.assets[asset_id]
        self.deletions.append(("asset", asset_id))
        if self.s3 is not None:  # the service queues the purge of the prefix; here it is immediate
            self.s3.call("revoke", {"prefix": asset["_prefix"]})
            self.s3.call("purge", {"bucket": ASSET_BUCKET, "prefix": asset["_prefix"]})
        return 204, None

    def _ranges(self, q: dict[str, str], body: Any, package_id: str) -> Any:
        package = self.packages.get(package_id)
        if package is None or package["packageType"] == "Collection":
            raise _AssetError(404, f"time series package {package_id} not found")  # collections have no channels
        chunks = body.get("chunks") if isinstance(body, dict) else None
        asset = self.assets.get(str(body.get("viewer_asset_id"))) if isinstance(body, dict) else None
        if asset is None or not isinstance(chunks, list):
            raise _AssetError(400, "viewer_asset_id (of an existing asset) and chunks are required")
        if len(chunks) > MAX_RANGE_CHUNKS:
            raise _AssetError(400, f"at most {MAX_RANGE_CHUNKS} chunks per request")
        self.range_requests.append({"package": package_id, "dataset_id": q.get("dataset_id"), "chunks": len(chunks)})
        ours = {c["id"] for c in self.channels[package_id] if c.get("viewerAssetId") == asset["id"]}
        invalid = [
            {"index": i, "reason": reason}
            for i, chunk in enumerate(chunks)
            if (reason := _chunk_problem(chunk, ours)) is not None
        ]
        if invalid:
            raise _AssetError(400, "invalid chunks", invalid_chunks=invalid)
        known = self.ranges.setdefault(package_id, {})
        created = 0
        for chunk in chunks:
            span = (chunk["channel_node_id"], chunk["start"], chunk["end"])
            if span not in known:
                known[span] = {"s3_key": chunk["s3_key"], "asset": asset["id"]}
                created += 1
        return 201, {"requested": len(chunks), "created": created, "skipped": len(chunks) - created}

    def _delete_channel(self, q: dict[str, str], body: Any, package_id: str, node_id: str) -> Any:
        channels = self.channels.get(package_id)
        if channels is None or not any(c["id"] == node_id for c in channels):
            raise _AssetError(404, f"channel {node_id} not found")
        self.channels[package_id] = [c for c in channels if c["id"] != node_id]
        self.deletions.append(("channel", node_id))
        return 204, None

    def _asset_routes(self) -> list[tuple[str, str, bool, Any]]:
        # (method, path regex, api2, handler); before the API's /packages/{id} routes, which would match too
        return [
            ("GET", r"^/packages/assets$", True, self._list_assets),
            ("POST", r"^/packages/assets$", True, self._create_asset),
            ("POST", r"^/packages/assets/([^/]+)/upload-credentials$", True, self._refresh_credentials),
            ("PATCH", r"^/packages/assets/([^/]+)$", True, self._patch_asset),
            ("DELETE", r"^/packages/assets/([^/]+)$", True, self._delete_asset),
            ("POST", r"^/timeseries/package/([^/]+)/ranges$", True, self._ranges),
            ("DELETE", r"^/timeseries/([^/]+)/channels/([^/]+)$", False, self._delete_channel),
        ]


def _chunk_problem(chunk: Any, channels: set[str]) -> str | None:
    if not isinstance(chunk, dict) or not {"channel_node_id", "start", "end", "s3_key"} <= set(chunk):
        return "channel_node_id, start, end and s3_key are required"
    if chunk["channel_node_id"] not in channels:
        return "no channel of this package and viewer asset has this id"
    if not isinstance(chunk["start"], int) or not isinstance(chunk["end"], int) or chunk["end"] < chunk["start"]:
        return "start and end must be integers, start <= end"
    if _UNSAFE_KEY.search(str(chunk["s3_key"])) or not chunk["s3_key"]:
        return "unsafe s3_key"
    return None
