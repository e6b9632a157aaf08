"""Finalize: check every chunk file exists, write the channel metadata, publish the version; with
the importer on, prepare the Pennsieve import (target, the viewer asset and its channels, or with
LEGACY_IMPORT_FLOW channels and the import manifest) and write the upload batches.

Input: :class:`~nwb2pennsieve.cloud.models.FinalizeInput` (Plan's output plus the Map's result).
Output: :class:`~nwb2pennsieve.cloud.models.FinalizeOutput`, a small summary (with ``upload``,
the upload plan with the upload batches' key, when the importer is on), or
:class:`~nwb2pennsieve.cloud.models.Superseded` when a newer version of the object exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.clients import s3_client
from nwb2pennsieve.cloud.finalize_step import FINALIZE_THREADS, finalize
from nwb2pennsieve.cloud.imports import ImportContext
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics, report_superseded
from nwb2pennsieve.cloud.models import FinalizeInput, Superseded
from nwb2pennsieve.cloud.settings import CloudSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# One connection per thread: the parallel listings, deletions and PUTs.
s3: S3Client = s3_client(threads=FINALIZE_THREADS)


@instrument()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = FinalizeInput.model_validate(event)
    logger.append_keys(file=request.source.uri)
    result = finalize(s3, request, importing=ImportContext.of(CloudSettings.from_env()))
    if isinstance(result, Superseded):
        return report_superseded(result)
    metrics.add_metric(name="ChunkFiles", unit=MetricUnit.Count, value=result.chunk_files)
    upload = result.upload
    logger.info(
        "finalized",
        extra={
            "chunk_files": result.chunk_files,
            "files_to_upload": upload.files if upload else 0,
            "upload_batches": upload.batches if upload else 0,
        },
    )
    return result.dump()
