"""WriteChunks: execute one batch of work items (a Distributed Map item) and put their chunk files.

Input: :class:`~nwb2pennsieve.cloud.models.WriteChunksInput` (built by the Map's ItemSelector).
Output: :class:`~nwb2pennsieve.cloud.models.WriteChunksOutput`. Retrying rewrites identical bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.clients import s3_client
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics
from nwb2pennsieve.cloud.models import WriteChunksInput
from nwb2pennsieve.cloud.write_chunks_step import WRITE_THREADS, write_chunks

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# One connection per thread: the parallel range GETs and the parallel PUTs of one invocation.
s3: S3Client = s3_client(threads=WRITE_THREADS)


@instrument()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = WriteChunksInput.model_validate(event)
    logger.append_keys(file=request.source.uri, batch=request.batch.batch, first_item=request.batch.items[0])
    result = write_chunks(s3, request)
    metrics.add_metric(name="ChunkFiles", unit=MetricUnit.Count, value=result.files)
    metrics.add_metric(name="PayloadBytes", unit=MetricUnit.Bytes, value=result.payload_bytes)
    metrics.add_metric(name="BytesRead", unit=MetricUnit.Bytes, value=result.bytes_read)
    logger.info("wrote batch", extra=result.dump())
    return result.dump()
