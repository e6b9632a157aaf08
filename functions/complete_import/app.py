"""CompleteImport: after the UploadFiles Map (or its failure), check that every chunk file is
uploaded (in the viewer-asset flow: listed under the asset's prefix, then every chunk's range
registered and the asset marked finished) and return the import summary; else fail with the
count and the list of those that are not (also written to ``import-failed.json`` next to the output).

Input: :class:`~nwb2pennsieve.cloud.models.CompleteImportInput` (Finalize's output plus the
Map's result or error).
Output: :class:`~nwb2pennsieve.cloud.models.FinalizeOutput` with the import summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.clients import s3_client
from nwb2pennsieve.cloud.imports import ImportContext, complete_import
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics
from nwb2pennsieve.cloud.models import CompleteImportInput
from nwb2pennsieve.cloud.settings import CloudSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

s3: S3Client = s3_client()


@instrument()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = CompleteImportInput.model_validate(event)
    logger.append_keys(file=request.source)
    done = complete_import(s3, request, ImportContext.of(CloudSettings.from_env()))
    metrics.add_metric(name="FilesImported", unit=MetricUnit.Count, value=done.chunk_files)
    summary = done.import_summary.dump() if done.import_summary else None
    logger.info("import complete", extra={"import_summary": summary})
    return done.dump()
