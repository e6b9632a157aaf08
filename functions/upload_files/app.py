"""UploadFiles: presign and PUT one batch of chunk files into the prepared Pennsieve import
(an item of the UploadFiles Distributed Map); without a batch (the CompleteImport state), check
that every chunk file is uploaded and return the import summary.

Input: :class:`~nwb2pennsieve.cloud.models.UploadFilesInput` (built by the Map's ItemSelector),
or :class:`~nwb2pennsieve.cloud.models.CompleteImportInput` (Finalize's output plus the Map's).
Output: :class:`~nwb2pennsieve.cloud.models.UploadFilesOutput`, or
:class:`~nwb2pennsieve.cloud.models.FinalizeOutput` with the import summary.
Rerun-safe: files already uploaded (recorded next to the output) are skipped.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from nwb2pennsieve.cloud.importer import UPLOAD_WORKERS, credentials_env
from nwb2pennsieve.cloud.imports import complete_import, upload_batch
from nwb2pennsieve.cloud.models import CompleteImportInput, UploadFilesInput
from nwb2pennsieve.cloud.settings import CloudSettings

logger = Logger()
# The core's loggers (nwb2pennsieve.*) log through the same structured JSON, with the same keys.
copy_config_to_registered_loggers(source_logger=logger, include={"nwb2pennsieve"})
# boto3 is not patched: thousands of S3 GETs from upload threads would each be a subsegment
# without a parent (the handler's own segment still traces the invocation).
tracer = Tracer(auto_patch=False)
metrics = Metrics()

# One connection per upload thread: each streams its file's body from S3 to the presigned URL.
s3 = boto3.client(
    "s3", config=Config(max_pool_connections=UPLOAD_WORKERS, retries={"mode": "adaptive", "max_attempts": 8})
)
secrets = boto3.client("secretsmanager")
uploader = None  # None: the Pennsieve importer of the core layer; tests may put one with fast retries here


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "batch" not in event:
        request = CompleteImportInput.model_validate(event)
        logger.append_keys(file=request.source)
        done = complete_import(s3, request)
        metrics.add_metric(name="FilesImported", unit=MetricUnit.Count, value=done.chunk_files)
        logger.info("import complete", extra={"import_summary": done.import_summary})
        return done.dump()
    batch = UploadFilesInput.model_validate(event)
    logger.append_keys(file=batch.source, batch=batch.batch.batch)
    settings = CloudSettings.from_env()
    env = credentials_env(
        secrets,
        settings.pennsieve_secret_arn,
        api_host=settings.pennsieve_api_host,
        api_host2=settings.pennsieve_api_host2,
    )
    result = upload_batch(s3, batch, env=env, uploader=uploader)
    metrics.add_metric(name="FilesUploaded", unit=MetricUnit.Count, value=result.uploaded)
    logger.info("uploaded batch", extra=result.dump())
    return result.dump()
