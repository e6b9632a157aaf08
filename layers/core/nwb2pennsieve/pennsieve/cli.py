"""``nwb2pennsieve import DIR``: import a local output directory into Pennsieve.

Configured like the reference processor (see :class:`~nwb2pennsieve.settings.Settings`); the options
``--integration-id``, ``--dataset-id``, ``--package-id`` win over ``INTEGRATION_ID``. The
viewer-asset flow (:mod:`.asset_import`) unless ``LEGACY_IMPORT_FLOW`` (:mod:`.importer`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..output.storage import LocalStore, Store
from ..settings import Settings
from .asset_import import AssetImportResult, import_store_assets
from .assets import AssetPolicy
from .client import PennsieveClient
from .importer import ImportResult, import_store
from .target import ImportTarget, TargetSpec, choose_target_spec, resolve_asset_target, resolve_target

log = logging.getLogger("nwb2pennsieve.pennsieve.cli")

DEFAULT_WORKERS = 64


def add_import_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``import`` on an ``argparse`` subparsers object; its handler is ``args.handler(args)``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "import",
        help="import a converted output directory into Pennsieve",
        description=(
            "Import the channel-*.bin.gz and channel-*.metadata.json files of DIR into Pennsieve."
            " Credentials: SESSION_TOKEN (+REFRESH_TOKEN) or PENNSIEVE_API_KEY and PENNSIEVE_API_SECRET;"
            " hosts: PENNSIEVE_API_HOST, PENNSIEVE_API_HOST2. Into a viewer asset (ASSET_NAME), or with"
            " LEGACY_IMPORT_FLOW=true through an import manifest. Rerun-safe: a second run only completes"
            " what is missing."
        ),
    )
    parser.add_argument("directory", type=Path, help="a converter output directory")
    parser.add_argument("--integration-id", help="the workflow run (default: INTEGRATION_ID)")
    parser.add_argument("--dataset-id", help="the dataset (N:dataset:...), with --package-id")
    parser.add_argument(
        "--package-id", help="the target package (N:package:...; a collection only with LEGACY_IMPORT_FLOW)"
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help=f"parallel uploads (default {DEFAULT_WORKERS})"
    )
    parser.set_defaults(handler=run_import_command)
    return parser


def import_output(
    store: Store,
    settings: Settings,
    spec: TargetSpec | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
    client: PennsieveClient | None = None,
    source: str | None = None,
) -> ImportResult | AssetImportResult:
    """Import ``store`` into ``spec`` (default: ``INTEGRATION_ID``) with the settings' credentials,
    through the flow the settings choose; ``source`` names the recording (default: the output
    folder's name, its file stem).

    What ``make run``/``nwb2pennsieve run`` calls after converting, with the spec that
    :func:`~.target.input_targets` returned before converting.
    """
    spec = spec or choose_target_spec(TargetSpec(integration_id=settings.integration_id))
    own = client is None
    client = client or PennsieveClient.from_settings(settings, pool_size=max(workers, 16))
    try:
        if settings.legacy_import_flow:
            target: ImportTarget = resolve_target(client, spec)
            return import_store(store, target, client, workers=workers)
        target, lookup = resolve_asset_target(client, spec)
        name = source or (store.root.name if isinstance(store, LocalStore) else store.describe(""))
        policy = AssetPolicy.from_settings(settings)
        return import_store_assets(store, target, lookup, client, policy, source=name, workers=workers)
    finally:
        if own:
            client.close()


def run_import_command(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """The ``import`` handler; raises a one-line :class:`~nwb2pennsieve.errors.Nwb2PennsieveError`."""
    directory: Path = args.directory
    if not directory.is_dir():
        raise ConfigurationError(f"{directory} is not a directory")
    if args.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    settings = Settings.from_env(env)
    spec = choose_target_spec(
        TargetSpec(integration_id=args.integration_id, dataset_id=args.dataset_id, package_id=args.package_id),
        TargetSpec(integration_id=settings.integration_id),
    )
    settings.require_credentials()
    result = import_output(LocalStore(directory), settings, spec, workers=args.workers)
    log.info("import result: %s", result.model_dump_json())
    print(result.summary_line())  # noqa: T201 - the command's output
    return 0
