"""Typed bodies of the Pennsieve API (pennsieve-api.md §3), tolerant of the server's real shapes.

Answers ignore unknown fields and accept missing optional ones (``group``, ``dataSources``, any
``channelType``); requests serialize with the server's camelCase names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
