"""Starter: admit queued "Object Created" events as executions, up to the cap of running ones.

Input: :class:`~nwb2pennsieve.cloud.admission.QueueEvent`, an SQS event (Powertools' SQS model)
whose records carry the EventBridge events of the admission queue (``events/starter.json``).
Output: the partial batch response (``batchItemFailures``): messages deferred because the cap
is reached come back later; started and duplicate ones are removed from the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.admission import QueueEvent, admission_cap, admit
from nwb2pennsieve.cloud.clients import sqs_client, stepfunctions_client
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics
from nwb2pennsieve.cloud.settings import CloudSettings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

sfn: SFNClient = stepfunctions_client()  # module scope: reused across warm invocations; tests replace them
sqs: SQSClient = sqs_client()


@instrument()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = CloudSettings.from_env()
    messages = QueueEvent.model_validate(event).Records
    cap = admission_cap(
        settings.max_running_executions, settings.writers_reserved_concurrency, settings.write_concurrency
    )
    result = admit(
        sfn,
        sqs,
        messages,
        state_machine_arn=settings.state_machine_arn,
        cap=cap,
        retry_seconds=settings.admission_retry_seconds,
        dead_letter_queue_url=settings.dead_letter_queue_url,
    )
    metrics.add_metric(name="ExecutionsStarted", unit=MetricUnit.Count, value=len(result.started))
    metrics.add_metric(name="DuplicateEvents", unit=MetricUnit.Count, value=len(result.duplicates))
    metrics.add_metric(name="DeferredEvents", unit=MetricUnit.Count, value=len(result.deferred))
    metrics.add_metric(name="RejectedEvents", unit=MetricUnit.Count, value=len(result.rejected))
    logger.info(
        "admitted",
        extra={
            "cap": cap,
            "running": result.running,
            "started": len(result.started),
            "duplicates": len(result.duplicates),
            "deferred": len(result.deferred),
            "rejected": len(result.rejected),
        },
    )
    return result.response()
