"""Typed bodies of the Pennsieve API (pennsieve-api.md §3, §5), tolerant of the server's real shapes.

Answers ignore unknown fields and accept missing optional ones (``group``, ``dataSources``, any
``channelType``, ``viewerAssetId``); requests serialize with the server's names (camelCase on
API, snake_case on the asset and ranges routes of API2).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class DataSource(_Answer):
    package_ids: list[str] = Field(default_factory=list, alias="packageIds")
    path: str | None = None


class WorkflowRun(_Answer):
    """``GET {API2}/compute/workflows/runs/{runId}`` (§3.1)."""

    uuid: str
    dataset_id: str | None = Field(default=None, alias="datasetId")
    status: str | None = None
    organization_id: str | int | None = Field(default=None, alias="organizationId")
    data_sources: dict[str, DataSource | None] | None = Field(default=None, alias="dataSources")

    def package_ids(self) -> list[str]:
        """All ``dataSources.*.packageIds``, in key order."""
        out: list[str] = []
        for key in sorted(self.data_sources or {}):
            source = (self.data_sources or {})[key]
            if source is not None:
                out.extend(source.package_ids)
        return out


class PackageContent(_Answer):
    node_id: str = Field(alias="nodeId")
    name: str | None = None
    package_type: str | None = Field(default=None, alias="packageType")
    dataset_node_id: str | None = Field(default=None, alias="datasetNodeId")


class Package(_Answer):
    """``GET {API}/packages/{id}?includeAncestors=true`` (§3.2); ``parent`` is absent at the dataset root."""

    content: PackageContent
    parent: Package | None = None


class PackageProperty(_Request):
    key: str
    value: str
    data_type: str = Field(default="string", alias="dataType")
    category: str
    fixed: bool = False
    hidden: bool = True


TIMESERIES_PROPERTIES = (
    PackageProperty(key="subtype", value="pennsieve_timeseries", category="Viewer"),
    PackageProperty(key="icon", value="timeseries", category="Pennsieve"),
)


class ChannelContent(_Answer):
    id: str
    package_id: str | None = Field(default=None, alias="packageId")
    name: str = ""
    start: int | None = None
    end: int | None = None
    unit: str | None = None
    rate: float | None = None
    channel_type: str | None = Field(default=None, alias="channelType")
    group: str | None = None
    last_annotation: int | None = Field(default=None, alias="lastAnnotation")
    # The viewer asset the channel belongs to (§5.6); absent or null for channels of the legacy flow.
    viewer_asset_id: str | None = Field(default=None, alias="viewerAssetId")


class Channel(_Answer):
    """A channel as the server returns it: ``{"content": {...}, "properties": [...]}`` (§3.4)."""

    content: ChannelContent
    properties: list[Any] | None = None


class NewChannel(_Request):
    """The body of ``POST {API}/timeseries/{packageId}/channels``."""

    name: str
    start: int
    end: int
    unit: str
    rate: float
    channel_type: str = Field(alias="channelType")
    group: str
    last_annotation: int = Field(default=0, alias="lastAnnotation")
    properties: list[dict[str, str]] = Field(default_factory=list)
    viewer_asset_id: str | None = Field(default=None, alias="viewerAssetId")

    def body(self) -> dict[str, Any]:
        """The legacy flow's body has no ``viewerAssetId``; the asset flow's has it (§5.6)."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class ImportFile(_Request):
    upload_key: str
    file_path: str


class ImportCreate(_Request):
    """The body of ``POST {API2}/import?dataset_id=...`` (§3.5)."""

    integration_id: str | None
    package_id: str
    import_type: Literal["timeseries"] = "timeseries"
    files: list[ImportFile]


class ImportFiles(_Request):
    files: list[ImportFile]


class ImportCreated(_Answer):
    id: str


class PresignedUrl(_Answer):
    url: str


# -- the viewer-asset flow (§5) -------------------------------------------------------------------


class ViewerAsset(_Answer):
    """An asset of ``GET``/``POST {API2}/packages/assets`` (§5.3); ``id`` is a bare uuid."""

    id: str
    dataset_id: str | None = None
    name: str
    asset_type: str
    status: str
    package_ids: list[str] | None = None
    properties: dict[str, Any] | None = None
    created_at: str | None = None

    def property(self, key: str) -> str | None:
        value = (self.properties or {}).get(key)
        return value if isinstance(value, str) else None


class AssetList(_Answer):
    assets: list[ViewerAsset] | None = None  # a missing list counts as empty (§5.3)


class NewAsset(_Request):
    """The body of ``POST {API2}/packages/assets?dataset_id=...`` (§5.4): ``properties`` only when given."""

    name: str
    asset_type: str
    package_ids: list[str]
    properties: dict[str, str] | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


_UNSAFE_PREFIX = re.compile(r"(^/)|(^|/)\.\.(/|$)|://")


class UploadCredentials(_Answer):
    """Short-lived STS credentials for the asset's S3 prefix (§5.4): all seven fields are required.

    The key id, the secret and the session token are :class:`~pydantic.SecretStr`: the model
    prints, logs and dumps none of them.
    """

    access_key_id: SecretStr
    secret_access_key: SecretStr
    session_token: SecretStr
    expiration: datetime
    bucket: str = Field(min_length=3)
    region: str = Field(min_length=1)
    key_prefix: str

    @field_validator("expiration")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    @field_validator("key_prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        if _UNSAFE_PREFIX.search(value):
            raise ValueError("an unsafe key prefix")
        return value if not value or value.endswith("/") else value + "/"

    def seconds_left(self, now: float) -> float:
        return self.expiration.timestamp() - now


class CreatedAsset(_Answer):
    """The 201 answer of ``POST {API2}/packages/assets`` (§5.4)."""

    asset: ViewerAsset
    upload_credentials: UploadCredentials


class RangeChunk(_Request):
    """One chunk file's span on one channel (§5.9); ``s3_key`` is relative to the asset's prefix."""

    channel_node_id: str
    start: int
    end: int
    s3_key: str


class RangesRequest(_Request):
    viewer_asset_id: str
    chunks: list[RangeChunk]


class RangesResult(_Answer):
    """The 201 answer of the ranges call: ``skipped`` counts chunks the service already had."""

    requested: int
    created: int
    skipped: int
