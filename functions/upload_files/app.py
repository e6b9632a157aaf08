"""UploadFiles: presign and PUT one batch of chunk files into the prepared Pennsieve import
(an item of the UploadFiles Distributed Map).

Input: :class:`~nwb2pennsieve.cloud.models.UploadFilesInput` (built by the Map's ItemSelector).
Output: :class:`~nwb2pennsieve.cloud.models.UploadFilesOutput`.
Rerun-safe: files already uploaded (recorded next to the output) are skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.clients import s3_client
from nwb2pennsieve.cloud.imports import UPLOAD_WORKERS, credentials_env, upload_batch
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics
from nwb2pennsieve.cloud.models import UploadFilesInput
from nwb2pennsieve.cloud.settings import CloudSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# One connection per upload thread: each streams its file's body from S3 to the presigned URL.
s3: S3Client = s3_client(threads=UPLOAD_WORKERS)
uploader = None  # None: the Pennsieve importer of the core layer; tests put one with fast retries here


@instrument()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    batch = UploadFilesInput.model_validate(event)
    logger.append_keys(file=batch.source, batch=batch.batch.batch)
    settings = CloudSettings.from_env()
    env = credentials_env(
        settings.pennsieve_secret_arn,
        api_host=settings.pennsieve_api_host,
        api_host2=settings.pennsieve_api_host2,
    )
    result = upload_batch(s3, batch, env=env, uploader=uploader)
    metrics.add_metric(name="FilesUploaded", unit=MetricUnit.Count, value=result.uploaded)
    logger.info("uploaded batch", extra=result.dump())
    return result.dump()
