"""Where an import goes: an integration (workflow run), or a dataset + package.

:func:`choose_target_spec` picks the first complete source (execution input or command line,
then the S3 object metadata of the uploaded NWB, then ``INTEGRATION_ID``) without any network
call, so a run can fail before converting anything; :func:`resolve_target` then asks Pennsieve
(§3.1, §3.2) for the dataset and the target package.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from ..errors import ConfigurationError
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
        """An integration, or a package (its dataset is asked for when not given)."""
        return bool(self.integration_id) or bool(self.package_id)

    def describe(self) -> str:
        if self.package_id:
            return f"dataset {self.dataset_id}, package {self.package_id}" if self.dataset_id else self.package_id
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

    A candidate with a dataset id but no package id is an error (not silently skipped); a
    package id alone is complete (its dataset is asked for). Raises :class:`TargetNotFoundError`
    when none is complete.
    """
    for spec in candidates:
        if spec is None:
            continue
        if spec.dataset_id and not spec.package_id and not spec.integration_id:
            raise TargetNotFoundError("a dataset id needs a package id")
        if spec.complete:
            return spec
    raise TargetNotFoundError(
        "no import target: give an integration id (INTEGRATION_ID, --integration-id, the execution"
        " input or x-amz-meta-integration-id on the NWB object) or a dataset id and a package id"
    )


def _dataset_of(client: PennsieveClient, package_id: str) -> str:
    dataset = client.get_package(package_id).content.dataset_node_id
    if not dataset:
        raise TargetNotFoundError(f"package {package_id}: Pennsieve does not say its dataset; give the dataset id too")
    return dataset


def resolve_target(client: PennsieveClient, spec: TargetSpec) -> ImportTarget:
    """Ask Pennsieve for the dataset and target package (§3.1, §3.2)."""
    if spec.package_id and (spec.dataset_id or not spec.integration_id):
        dataset = spec.dataset_id or _dataset_of(client, spec.package_id)
        return ImportTarget(dataset_id=dataset, package_id=spec.package_id, integration_id=spec.integration_id)
    if not spec.integration_id:
        raise TargetNotFoundError("no integration id and no package id")
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


def resolve_asset_target(client: PennsieveClient, spec: TargetSpec) -> tuple[ImportTarget, list[str]]:
    """The viewer-asset flow's target: (where channels and ranges go, the packages the asset is
    linked to and looked up by, §5.2).

    A workflow run's own packages link the asset; channels and ranges go to its one package or,
    when it has several, to the first ``N:package:`` id (not their parent collection, as the
    legacy flow does: the ranges endpoint refuses a collection). A given package is both.
    """
    if spec.package_id and (spec.dataset_id or not spec.integration_id):
        target = resolve_target(client, spec)
        lookup = [target.package_id]
    else:
        assert spec.integration_id is not None
        run = client.get_workflow_run(spec.integration_id)
        packages = run.package_ids()
        if not run.dataset_id or not packages:
            what = "no dataset id" if not run.dataset_id else "no data source packages"
            raise TargetNotFoundError(f"workflow run {spec.integration_id} has {what}")
        first = spec.package_id or next((p for p in packages if p.startswith("N:package:")), None)
        if first is None:
            raise TargetNotFoundError(f"workflow run {spec.integration_id}: no N:package: id among its packages")
        if len(packages) > 1 and not spec.package_id:
            log.warning("workflow run %s has %d packages: importing into the first, %s", spec.integration_id,
                        len(packages), first)  # fmt: skip
        target = ImportTarget(dataset_id=run.dataset_id, package_id=first, integration_id=spec.integration_id)
        lookup = packages
    if target.package_id.startswith("N:collection:"):
        raise TargetNotFoundError(
            f"{target.package_id} is a collection: the viewer-asset import needs a time-series package"
            " (LEGACY_IMPORT_FLOW=true imports into a collection)"
        )
    return target, lookup


# -- one recording, one target ---------------------------------------------------------------------

_MAP_VALUE = 'a package id, or {"package_id": ..., "dataset_id": ...}, or {"integration_id": ...}'


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigurationError(f"names {key!r} twice")
        out[key] = value
    return out


def load_package_map(path: Path) -> dict[str, TargetSpec]:
    """``PACKAGE_MAP``: a JSON object, input file stem → its import target (``"N:package:..."``,
    ``{"package_id": ..., "dataset_id": ...}`` or ``{"integration_id": ...}``). A bad file is a
    :class:`ConfigurationError` naming the file and the key."""
    try:
        data = json.loads(path.read_text(), object_pairs_hook=_no_duplicates)
    except ConfigurationError as exc:
        raise ConfigurationError(f"PACKAGE_MAP {path} {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"PACKAGE_MAP {path} is not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigurationError(f"PACKAGE_MAP {path} must be a JSON object: input file stem -> {_MAP_VALUE}")
    targets = {}
    for stem, value in data.items():
        try:
            spec = TargetSpec(package_id=value) if isinstance(value, str) else TargetSpec.model_validate(value)
        except ValidationError:
            spec = TargetSpec()
        if not spec.complete or (spec.dataset_id and not spec.package_id):
            raise ConfigurationError(f"PACKAGE_MAP {path}: {stem!r} must map to {_MAP_VALUE}")
        targets[stem] = spec
    return targets


def parse_target_options(options: Sequence[str]) -> dict[str, TargetSpec]:
    """``--target STEM=PACKAGE`` (repeatable): a package of its own for one input file."""
    targets: dict[str, TargetSpec] = {}
    for option in options:
        stem, sep, package = (part.strip() for part in option.partition("="))
        if not sep or not stem or not package:
            raise ConfigurationError(f"--target must be STEM=PACKAGE (a file stem and a package id), not {option!r}")
        if stem in targets:
            raise ConfigurationError(f"--target names {stem!r} twice")
        targets[stem] = TargetSpec(package_id=package)
    return targets


def input_targets(
    settings: Settings, stems: Sequence[str], options: Sequence[str] = ()
) -> dict[str, TargetSpec] | None:
    """Each input file's import target, before any conversion; ``None`` when the importer is off.

    One recording, one target: with several inputs each needs its own (``PACKAGE_MAP`` or
    ``--target STEM=PACKAGE``), and no two may share a package; else a :class:`ConfigurationError`
    says which. One input may use ``INTEGRATION_ID``.
    """
    if not settings.importer_enabled:
        return None
    settings.require_credentials()
    own = load_package_map(settings.package_map) if settings.package_map else {}
    own |= parse_target_options(options)
    for stem in sorted(set(own) - set(stems)):
        log.warning("the import target given for %r names no input file", stem)
    if len(stems) > 1:
        missing = [s for s in stems if s not in own]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise ConfigurationError(
                f"{len(stems)} input files but {'no import target' if not own else 'not a target each'}"
                f"{' (INTEGRATION_ID names one)' if settings.integration_id else ''}: each recording needs a"
                f" package of its own; give PACKAGE_MAP (file stem -> package id) or --target STEM=PACKAGE for {shown}"
            )
    packages: dict[str, str] = {}
    for stem in stems:
        package = own[stem].package_id if stem in own else None
        if package and package in packages:
            raise ConfigurationError(
                f"{packages[package]!r} and {stem!r} are given one package, {package}: one recording, one package"
            )
        if package:
            packages[package] = stem
    default = TargetSpec(integration_id=settings.integration_id)
    return {stem: choose_target_spec(own.get(stem), default) for stem in stems}
