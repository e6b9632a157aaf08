"""Import converted output into Pennsieve (pennsieve-api.md §2-§5).

The public entry points: :func:`~.asset_import.import_store_assets` (a whole viewer-asset import,
rerun-safe), :func:`~.importer.import_store` (the same through Pennsieve's import manifest:
``LEGACY_IMPORT_FLOW``), :func:`~.target.input_targets` (each input file's own target),
:func:`~.target.choose_target_spec` / :func:`~.target.resolve_target` (where to import),
:meth:`~.client.PennsieveClient.from_settings` (an authenticated client) and
:func:`~.cli.add_import_command` (the ``nwb2pennsieve import DIR`` subcommand).

The names load their modules when first used: importing :mod:`nwb2pennsieve.pennsieve.target`
(whose :class:`~.target.TargetSpec` the cloud payloads hold) does not load the HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .asset_import import AssetImportResult, import_store_assets
    from .channels import read_output
    from .cli import add_import_command, import_output
    from .client import PennsieveClient
    from .errors import (
        ChannelError,
        PennsieveAuthError,
        PennsieveError,
        PennsieveHTTPError,
        TargetNotFoundError,
        UploadError,
    )
    from .importer import (
        ImportResult,
        PreparedImport,
        UploadReport,
        import_store,
        prepare_import,
        upload_batches,
        upload_files,
    )
    from .target import (
        ImportTarget,
        TargetSpec,
        choose_target_spec,
        input_targets,
        resolve_target,
        target_spec_from_metadata,
        target_spec_from_s3_object,
    )

_MODULES = {
    "ChannelError": "errors",
    "ImportResult": "importer",
    "ImportTarget": "target",
    "PennsieveAuthError": "errors",
    "PennsieveClient": "client",
    "PennsieveError": "errors",
    "PennsieveHTTPError": "errors",
    "PreparedImport": "importer",
    "TargetNotFoundError": "errors",
    "TargetSpec": "target",
    "UploadError": "errors",
    "UploadReport": "importer",
    "add_import_command": "cli",
    "choose_target_spec": "target",
    "import_output": "cli",
    "input_targets": "target",
    "import_store_assets": "asset_import",
    "AssetImportResult": "asset_import",
    "import_store": "importer",
    "prepare_import": "importer",
    "read_output": "channels",
    "resolve_target": "target",
    "target_spec_from_metadata": "target",
    "target_spec_from_s3_object": "target",
    "upload_batches": "importer",
    "upload_files": "importer",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AssetImportResult",
    "ChannelError",
    "ImportResult",
    "ImportTarget",
    "PennsieveAuthError",
    "PennsieveClient",
    "PennsieveError",
    "PennsieveHTTPError",
    "PreparedImport",
    "TargetNotFoundError",
    "TargetSpec",
    "UploadError",
    "UploadReport",
    "add_import_command",
    "choose_target_spec",
    "import_output",
    "import_store",
    "import_store_assets",
    "input_targets",
    "prepare_import",
    "read_output",
    "resolve_target",
    "target_spec_from_metadata",
    "target_spec_from_s3_object",
    "upload_batches",
    "upload_files",
]
