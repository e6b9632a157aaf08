"""Plan: open the new NWB object in place on S3, write its plan and write batches.

Input: the EventBridge "Object Created" event, or ``{"bucket", "key", "versionId", ...overrides}``.
Output: :class:`~nwb2pennsieve.cloud.models.PlanOutput` (keys of the plan and the write batches, counts),
or :class:`~nwb2pennsieve.cloud.models.Superseded` when a newer version of the object exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.clients import s3_client
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics, report_superseded
from nwb2pennsieve.cloud.models import PlanInput, Superseded
from nwb2pennsieve.cloud.plan_step import plan_object
from nwb2pennsieve.cloud.settings import CloudSettings
from nwb2pennsieve.source.s3 import ReadStats

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

s3: S3Client = s3_client()  # module scope: reused across warm invocations; tests replace it


@instrument(trace_aws_calls=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = PlanInput.parse(event)
    logger.append_keys(file=request.source.uri)
    stats = ReadStats()
    result = plan_object(s3, request, CloudSettings.from_env(), stats=stats)
    if isinstance(result, Superseded):
        return report_superseded(result)
    metrics.add_metric(name="WorkItems", unit=MetricUnit.Count, value=result.work_items)
    metrics.add_metric(name="PlanBytesRead", unit=MetricUnit.Bytes, value=stats.bytes)
    logger.info(
        "planned",
        extra={
            "work_items": result.work_items,
            "batches": result.batches,
            "bytes_read": stats.bytes,
            "requests": stats.requests,
        },
    )
    return result.dump()
