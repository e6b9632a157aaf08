"""UploadFiles: upload one batch of chunk files (an item of the UploadFiles Distributed Map): into
the viewer asset's prefix with upload credentials this invocation obtains from Pennsieve, or with
LEGACY_IMPORT_FLOW presigned and PUT into the prepared import.

Input: :class:`~nwb2pennsieve.cloud.models.UploadFilesInput` (built by the Map's ItemSelector).
Output: :class:`~nwb2pennsieve.cloud.models.UploadFilesOutput`.
Rerun-safe: the batch holds only what Finalize found missing; the legacy flow skips files
already uploaded (recorded next to the output).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.clients import s3_client
from nwb2pennsieve.cloud.imports import UPLOAD_WORKERS, ImportContext, upload_batch
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics
from nwb2pennsieve.cloud.models import UploadFilesInput
from nwb2pennsieve.cloud.settings import CloudSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# One connection per upload thread: each reads its file's body from S3, then PUTs it.
s3: S3Client = s3_client(threads=UPLOAD_WORKERS)
uploader = None  # None: the Pennsieve importer of the core layer; tests put one with fast retries here


@instrument()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    batch = UploadFilesInput.model_validate(event)
    logger.append_keys(file=batch.source, batch=batch.batch.batch)
    result = upload_batch(s3, batch, ImportContext.of(CloudSettings.from_env()), uploader=uploader)
    metrics.add_metric(name="FilesUploaded", unit=MetricUnit.Count, value=result.uploaded)
    logger.info("uploaded batch", extra=result.dump())
    return result.dump()
