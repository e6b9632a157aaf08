"""The Powertools setup every Lambda handler shares: one Logger, Tracer and Metrics, and the
decorator that puts all three on a handler.

A handler in ``functions/`` wears :func:`instrument` and logs and counts through :data:`logger`
and :data:`metrics`::

    @instrument()
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]: ...

Service name, metrics namespace and log level come from the environment ``template.yaml`` sets
(``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_LOG_LEVEL``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from .models import Superseded

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

logger = Logger()
# The core's loggers (nwb2pennsieve.*) log through the same structured JSON, with the same keys:
# they are children of the service's logger when the service is "nwb2pennsieve" (template.yaml),
# and get its handler and level copied to their root otherwise.
logging.getLogger("nwb2pennsieve")
copy_config_to_registered_loggers(source_logger=logger, include={"nwb2pennsieve"})
# boto3 is not patched unless a handler asks: hundreds of S3 calls from worker threads would each
# be a subsegment without a parent (the handler's own segment still traces the invocation).
tracer = Tracer(auto_patch=False)
metrics = Metrics()


def instrument(*, trace_aws_calls: bool = False) -> Callable[[Handler], Handler]:
    """Logger context (keys cleared each invocation, the event never logged), the invocation's
    X-Ray segment, and the metrics flushed when the handler returns.

    ``trace_aws_calls`` also traces each boto3 call as a subsegment: for a function whose calls
    are few and made from the handler's own thread (Plan).
    """
    if trace_aws_calls:
        tracer.patch(("botocore",))

    def wrap(handler: Handler) -> Handler:
        traced: Handler = tracer.capture_lambda_handler(metrics.log_metrics(handler))
        wrapped: Handler = logger.inject_lambda_context(log_event=False, clear_state=True)(traced)
        return wrapped

    return wrap


def report_superseded(result: Superseded) -> dict[str, Any]:
    """A step's answer when its version was replaced: logged, counted (``SupersededConversions``;
    the execution then succeeds, outside the failure alarm) and returned as the state's output."""
    metrics.add_metric(name="SupersededConversions", unit=MetricUnit.Count, value=1)
    logger.info("superseded", extra={"latest": result.latest, "step": result.step, "removed": result.removed})
    return result.dump()
