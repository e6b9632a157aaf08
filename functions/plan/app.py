"""Plan: open the new NWB object in place on S3, write its plan and work-item manifest.

Input: the EventBridge "Object Created" event, or ``{"bucket", "key", "versionId", ...overrides}``.
Output: :class:`~nwb2pennsieve.cloud.models.PlanOutput` (keys of the plan and manifest, counts).
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.conversion import plan_object
from nwb2pennsieve.cloud.models import PlanInput
from nwb2pennsieve.cloud.s3reader import ReadStats
from nwb2pennsieve.cloud.settings import CloudSettings

logger = Logger()
# The core's loggers (nwb2pennsieve.*) log through the same structured JSON, with the same keys.
copy_config_to_registered_loggers(source_logger=logger, include={"nwb2pennsieve"})
tracer = Tracer()
metrics = Metrics()

s3 = boto3.client("s3")  # module scope: reused across warm invocations; tests replace it


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = PlanInput.parse(event)
    logger.append_keys(file=request.source.uri)
    stats = ReadStats()
    result = plan_object(s3, request, CloudSettings.from_env(), stats=stats)
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
