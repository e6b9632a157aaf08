"""Starter: admit queued "Object Created" events as executions, up to the cap of running ones.

Input: an SQS event (a batch of EventBridge events from the admission queue).
Output: the partial batch response (``batchItemFailures``): messages deferred because the cap
is reached come back later; started and duplicate ones are removed from the queue.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from nwb2pennsieve.cloud.admission import QueueMessage, admission_cap, admit
from nwb2pennsieve.cloud.clients import aws_client
from nwb2pennsieve.cloud.lambda_support import instrument, logger, metrics
from nwb2pennsieve.cloud.settings import CloudSettings

sfn: Any = aws_client("stepfunctions")
sqs: Any = aws_client("sqs")


@instrument()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = CloudSettings.from_env()
    messages = [QueueMessage.model_validate(r) for r in event.get("Records", [])]
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
