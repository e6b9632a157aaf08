"""The command line's conversion options (``convert``, ``plan``, ``inspect``) and the list of
environment variables ``run --help`` prints: one place for every flag's text."""

from __future__ import annotations

import argparse

from ..settings import DEFAULT_CHUNK_SIZE_MB, DEFAULT_MAX_ITEM_MB, LOCAL_GZIP_LEVEL

RUN_EPILOG = """\
environment variables (an option, where there is one, wins over its variable):
  INPUT_DIR             where the *.nwb files are (default data/input; when that default
                        folder is empty or absent, the bundled sample is converted)
  OUTPUT_DIR            where each file's output goes, as OUTPUT_DIR/<file stem>/ (default data/output)
  CHUNK_SIZE_MB         MiB of float64 per channel per chunk file (default 1)
  MAX_ITEM_MB           float64 MiB one work item writes at most (default 512)
  GZIP_LEVEL            0: stored gzip blocks; 1-3: ISA-L deflate (default 1 when importing, else 0)
  WORKERS               worker processes (default: CPUs)
  SKIP_INVALID_SERIES   true: convert the valid series and report the invalid ones
  SERIES                the series to convert, comma-separated HDF5 paths (default: all)
  OUTPUT_FORMATS        chunks (default), bundle (Pennsieve's viewer bundle) or chunks,bundle
  BUNDLE_ZSTD_LEVEL     the viewer bundle's Zstd level, 1-22 (default 4)
  BUNDLE_LAYOUT         ts-zarr (Pennsieve's TS-Zarr, default) or legacy (the older ts-zarr-py layout)
  DEIDENTIFY            true: the bundle without meta/ and without the file's free text
  PLAN_TIMEOUT_S        seconds planning one file may take (default 600; 0: no limit, in process)
  READ_STALL_S          seconds the workers may read nothing before they are stopped (default 120; 0: no limit)
  SETTLE_S              a file modified this recently is watched this long; one still growing is skipped (default 2)
  NETWORK_TIMEOUT_S, NETWORK_BUDGET_S
                        a URL input: seconds without a byte of an answer (default 15), and without any
                        range read (default 60), before the network is declared failed
  ENVIRONMENT           local (default) or production
  IMPORTER_ENABLED      import each output into Pennsieve (default: off when ENVIRONMENT=local)
  INTEGRATION_ID        the workflow run to import for (one input file; several need PACKAGE_MAP or --target)
  PACKAGE_MAP           a JSON file: input file stem -> its own package id (one recording, one package)
  LEGACY_IMPORT_FLOW    true: import through Pennsieve's import manifest instead of a viewer asset
  ASSET_NAME, ASSET_TYPE, ASSET_FINISHED_STATUS
                        the viewer asset's name, type and finished status (nwb-asset, timeseries, active)
  SESSION_TOKEN (+REFRESH_TOKEN), or PENNSIEVE_API_KEY and PENNSIEVE_API_SECRET
                        Pennsieve credentials
  PENNSIEVE_API_HOST, PENNSIEVE_API_HOST2
                        the Pennsieve API (default https://api.pennsieve.net, https://api2.pennsieve.net)

exit status: 0 when every file converted, 1 when any failed, 2 for a bad setting or INPUT_DIR.
"""


def add_conversion_options(p: argparse.ArgumentParser) -> None:
    # Flags are kept as given (None: not given) and validated with the environment by
    # Settings.from_env when the command runs: one parser, one message form, exit status 2.
    p.add_argument(
        "--chunk-size-mb",
        default=None,
        help=f"MiB of float64 per channel per chunk file (env CHUNK_SIZE_MB; default {DEFAULT_CHUNK_SIZE_MB})",
    )
    p.add_argument(
        "--max-item-mb",
        default=None,
        help=f"float64 MiB one work item writes at most (env MAX_ITEM_MB; default {DEFAULT_MAX_ITEM_MB}, "
        "sized for a 2 GB Lambda)",
    )
    p.add_argument(
        "--gzip-level",
        default=None,
        help="0: stored gzip blocks (no compression CPU, ~4x the int16 input); 1-3: ISA-L deflate "
        "(~4x smaller on Neuropixels) (env GZIP_LEVEL; default: compressed when importing, else "
        f"{LOCAL_GZIP_LEVEL})",
    )
    p.add_argument(
        "--formats",
        dest="output_formats",
        default=None,
        help="what to write: chunks (the chunk files, default), bundle (Pennsieve's viewer bundle, "
        "<stem>.zarr) or chunks,bundle (env OUTPUT_FORMATS)",
    )
    p.add_argument(
        "--bundle-layout",
        default=None,
        help="the viewer bundle's layout: ts-zarr (Pennsieve's TS-Zarr, default) or legacy (the older "
        "ts-zarr-py layout, for an older reader) (env BUNDLE_LAYOUT)",
    )
    p.add_argument(
        "--deidentify",
        action="store_true",
        default=None,
        help="write the bundle without meta/ (subject, session) and without free text from the file "
        "(docs/bundle.md) (env DEIDENTIFY=true)",
    )
    p.add_argument(
        "--skip-invalid-series",
        action="store_true",
        default=None,
        help="convert the valid series and report the invalid ones (env SKIP_INVALID_SERIES=true)",
    )
    p.add_argument(
        "--series",
        action="append",
        default=None,
        metavar="PATH",
        help="convert only this series (HDF5 path, e.g. /acquisition/ElectricalSeries; repeatable; "
        "env SERIES, comma-separated); its channels keep their whole-file indices and names",
    )
