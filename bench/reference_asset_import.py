"""Run the viewer-asset importer of Pennsieve's reference processor on one output directory.

Runs in the reference's own venv (``make reference-venv``), with ``PYTHONPATH=<reference>/processor:<reference>``
(its modules import both ways) and the reference's environment: ``PENNSIEVE_API_HOST``,
``PENNSIEVE_API_HOST2``, ``SESSION_TOKEN``, ``INTEGRATION_ID``, ``ASSET_NAME``, and
``AWS_ENDPOINT_URL`` (its S3 client honours botocore's configured endpoint). It renames the chunk
files in place: give it a copy. Prints one JSON line: ``{"files", "seconds", "asset"}``.

    REFERENCE_PYTHON bench/reference_asset_import.py OUTPUT_DIR
"""

import json
import logging
import os
import sys
import time

from clients.authentication_client import TokenAuthProvider  # the reference's own modules
from clients.base_client import SessionManager
from importer import import_timeseries_via_assets


def main() -> int:
    logging.disable(logging.INFO)
    output = sys.argv[1]
    files = sum(1 for name in os.listdir(output) if name.endswith(".bin.gz"))
    host, host2 = os.environ["PENNSIEVE_API_HOST"], os.environ["PENNSIEVE_API_HOST2"]
    session = SessionManager(TokenAuthProvider(host, os.environ["SESSION_TOKEN"], None))
    started = time.perf_counter()
    asset = import_timeseries_via_assets(
        host, host2, session, os.environ["INTEGRATION_ID"], output, os.environ.get("ASSET_NAME", "timeseries-asset")
    )
    print(json.dumps({"files": files, "seconds": round(time.perf_counter() - started, 3), "asset": asset}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
