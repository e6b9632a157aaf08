"""Starter: admit queued "Object Created" events as executions, up to the cap of running ones;
give back an admission slot when a conversion ends.

Input, either
- :class:`~nwb2pennsieve.cloud.admission.QueueEvent`, an SQS event (Powertools' SQS model) whose
  records carry the EventBridge events of the admission queue (``events/starter.json``); output:
  the partial batch response (``batchItemFailures``: only records whose handling failed; deferred
  ones were sent again), or
- a "Step Functions Execution Status Change" event of a conversion (the ConversionStatusRule):
  its admission slot is released when it ends, held when it runs without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.admission import STATUS_CHANGE, QueueEvent, Starter, admission_cap, on_status_change
from nwb2pennsieve.cloud.clients import dynamodb_client, s3_client, sqs_client, stepfunctions_client
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics
from nwb2pennsieve.cloud.settings import CloudSettings
from nwb2pennsieve.cloud.slots import Slots

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

sfn: SFNClient = stepfunctions_client()  # module scope: reused across warm invocations; tests replace them
sqs: SQSClient = sqs_client()
s3: S3Client = s3_client()
dynamodb: DynamoDBClient = dynamodb_client()
# Warm invocations share it: it remembers when it last looked for slots whose release was lost.
_slots: dict[str, Slots] = {}


def slots_of(table: str) -> Slots:
    if table not in _slots or _slots[table].dynamodb is not dynamodb:
        _slots[table] = Slots(dynamodb, table)
    return _slots[table]


@instrument()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = CloudSettings.from_env()
    slots = slots_of(settings.admission_slots_table)
    if event.get("detail-type") == STATUS_CHANGE:
        done = on_status_change(slots, event)
        logger.info("status change", extra={"execution": event["detail"].get("name"), "slot": done})
        return {"slot": done}
    starter = Starter(
        sfn=sfn,
        sqs=sqs,
        s3=s3,
        slots=slots,
        state_machine_arn=settings.state_machine_arn,
        cap=admission_cap(
            settings.max_running_executions, settings.writers_reserved_concurrency, settings.write_concurrency
        ),
        admission_queue_url=settings.admission_queue_url,
        dead_letter_queue_url=settings.dead_letter_queue_url,
        retry_seconds=settings.admission_retry_seconds,
        max_wait_hours=settings.admission_max_wait_hours,
    )
    result = starter.admit(QueueEvent.model_validate(event).Records)
    counts = {
        "ExecutionsStarted": result.started,
        "DuplicateEvents": result.duplicates,
        "DeferredEvents": result.deferred,
        "SupersededEvents": result.superseded,
        "GoneEvents": result.gone,
        "RejectedEvents": result.rejected,
    }
    for name, items in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=len(items))
    metrics.add_metric(name="AdmissionWaitSeconds", unit=MetricUnit.Seconds, value=round(result.waited))
    logger.info(
        "admitted", extra={"cap": starter.cap, "failed": len(result.failed)} | {k: len(v) for k, v in counts.items()}
    )
    return result.response()
