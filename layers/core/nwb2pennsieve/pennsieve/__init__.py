"""Import converted output into Pennsieve (pennsieve-api.md §2-§4).

The public entry points: :func:`~.importer.import_store` (a whole import, rerun-safe),
:func:`~.target.choose_target_spec` / :func:`~.target.resolve_target` (where to import),
:meth:`~.client.PennsieveClient.from_settings` (an authenticated client) and
:func:`~.cli.add_import_command` (the ``nwb2pennsieve import DIR`` subcommand).
"""

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
    read_output,
    upload_batches,
    upload_files,
)
from .target import (
    ImportTarget,
    TargetSpec,
    choose_target_spec,
    import_preflight,
    resolve_target,
    target_spec_from_metadata,
    target_spec_from_s3_object,
)

__all__ = [
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
    "import_preflight",
    "import_store",
    "prepare_import",
    "read_output",
    "resolve_target",
    "target_spec_from_metadata",
    "target_spec_from_s3_object",
    "upload_batches",
    "upload_files",
]
