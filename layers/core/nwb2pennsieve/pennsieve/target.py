"""Where an import goes: an integration (workflow run), or a dataset + package.

:func:`choose_target_spec` picks the first complete source (execution input or command line,
then the S3 object metadata of the uploaded NWB, then ``INTEGRATION_ID``) without any network
call, so a run can fail before converting anything; :func:`resolve_target` then asks Pennsieve
(§3.1, §3.2) for the dataset and the target package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from .errors import TargetNotFoundError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from ..settings import Settings
    from .client import PennsieveClient

log = logging.getLogger("nwb2pennsieve.pennsieve.target")


class TargetSpec(BaseModel):
    """The import target as the caller knows it (ids only, never a credential): an integration id,
    and/or a dataset id + a package id.

    It travels in the state machine's payloads too, camelCase there (``integrationId``...) like
    every payload field; in Python and as keyword arguments, snake_case.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    integration_id: str | None = None
    dataset_id: str | None = None
    package_id: str | None = None

    @property
    def complete(self) -> bool:
        return bool(self.integration_id) or bool(self.dataset_id and self.package_id)

    def describe(self) -> str:
        if self.dataset_id and self.package_id:
            return f"dataset {self.dataset_id}, package {self.package_id}"
        return f"integration {self.integration_id}"


class ImportTarget(BaseModel):
    """A resolved target: where channels are created and the import manifest is sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset_id: str
    package_id: str
    integration_id: str | None = None


_META_KEYS = {
    "integration_id": ("integration-id", "integration_id", "integrationid"),
    "dataset_id": ("dataset-id", "dataset_id", "datasetid"),
    "package_id": ("package-id", "package_id", "packageid"),
}


def target_spec_from_metadata(metadata: Mapping[str, str]) -> TargetSpec:
    """From S3 user metadata (``x-amz-meta-integration-id`` is ``integration-id`` in boto3)."""
    lowered = {k.lower().removeprefix("x-amz-meta-"): v.strip() for k, v in metadata.items() if v}
    values = {field: next((lowered[k] for k in keys if lowered.get(k)), None) for field, keys in _META_KEYS.items()}
    return TargetSpec(**values)


def target_spec_from_s3_object(s3_client: S3Client, bucket: str, key: str) -> TargetSpec:
    """The target written as user metadata on the uploaded NWB object (empty when there is none)."""
    head = s3_client.head_object(Bucket=bucket, Key=key)
    return target_spec_from_metadata(head.get("Metadata") or {})


def choose_target_spec(*candidates: TargetSpec | None) -> TargetSpec:
    """The first complete candidate, in the caller's order of precedence.

    A candidate with only one of dataset/package id is an error (not silently skipped).
    Raises :class:`TargetNotFoundError` when none is complete.
    """
    for spec in candidates:
        if spec is None:
            continue
        if bool(spec.dataset_id) != bool(spec.package_id) and not spec.integration_id:
            raise TargetNotFoundError("a dataset id needs a package id and a package id needs a dataset id")
        if spec.complete:
            return spec
    raise TargetNotFoundError(
        "no import target: give an integration id (INTEGRATION_ID, --integration-id, the execution"
        " input or x-amz-meta-integration-id on the NWB object) or a dataset id and a package id"
    )


def resolve_target(client: PennsieveClient, spec: TargetSpec) -> ImportTarget:
    """Ask Pennsieve for the dataset and target package (§3.1, §3.2)."""
    if spec.dataset_id and spec.package_id:
        return ImportTarget(dataset_id=spec.dataset_id, package_id=spec.package_id, integration_id=spec.integration_id)
    if not spec.integration_id:
        raise TargetNotFoundError("no integration id and no dataset/package ids")
    run = client.get_workflow_run(spec.integration_id)
    if not run.dataset_id:
        raise TargetNotFoundError(f"workflow run {spec.integration_id} has no dataset id")
    package_ids = run.package_ids()
    if spec.package_id:
        package = spec.package_id
    elif not package_ids:
        raise TargetNotFoundError(f"workflow run {spec.integration_id} has no data source packages")
    elif len(package_ids) == 1:
        package = package_ids[0]
    else:
        first = next((p for p in package_ids if p.startswith("N:package:")), None)
        if first is None:
            raise TargetNotFoundError(f"workflow run {spec.integration_id}: no N:package: id among its packages")
        parent = client.get_package(first).parent
        if parent is None:
            raise TargetNotFoundError(
                f"workflow run {spec.integration_id}: its packages are at the dataset root (no parent"
                " collection to import into); give --package-id"
            )
        package = parent.content.node_id
    target = ImportTarget(dataset_id=run.dataset_id, package_id=package, integration_id=spec.integration_id)
    log.info("import target: dataset %s, package %s", target.dataset_id, target.package_id)
    return target


def import_preflight(settings: Settings, *candidates: TargetSpec | None) -> TargetSpec | None:
    """Before any conversion: ``None`` when the importer is disabled, else the chosen target spec.

    ``candidates`` in order of precedence (execution input or options, then S3 metadata);
    ``INTEGRATION_ID`` comes last. Fails (no network call) when credentials or a target are missing.
    """
    if not settings.importer_enabled:
        return None
    settings.require_credentials()
    return choose_target_spec(*candidates, TargetSpec(integration_id=settings.integration_id))
