"""Step Functions' redrive, emulated for moto (which raises NotImplementedError for RedriveExecution).

AWS's documented rule (RedriveExecution API reference; "Redriving executions" and "Redriving Map
Runs" in the Step Functions guide): a Standard execution that FAILED, TIMED_OUT or was ABORTED
within the last 14 days, with fewer than 24,999 history events, is restarted with the same input
and definition from its *unsuccessful* states: those with a ``<type>StateEntered`` event and no
matching ``<type>StateExited``. The successful states are not run again.

:func:`redrive` applies that rule to moto's history. When the unsuccessful state is a Fail state
(what a Catch into a Fail state leaves: the failing Task exited through its Catch) it does what AWS
does, fails again at once, without running anything. Otherwise it runs a twin of the state machine
whose ``StartAt`` is that state, on the input that state was entered with, and returns the twin's
description. (For a failed Distributed Map AWS reruns only the failed children; the twin reruns the
whole map: every writer is idempotent, so the result is the same, only slower.)
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

REDRIVABLE = ("FAILED", "TIMED_OUT", "ABORTED")
REDRIVE_DAYS = 14
MAX_EVENTS = 24_999


class NotRedrivable(Exception):
    """AWS would answer ExecutionNotRedrivable."""


def history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token = None
    while True:
        page = sfn.get_execution_history(executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {}))
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            return events


def unfinished_states(sfn: Any, arn: str) -> list[str]:
    """The states of the execution entered and never exited (what a redrive runs again), in order."""
    entered: dict[str, dict[str, Any]] = {}
    for event in history(sfn, arn):
        if event["type"].endswith("StateEntered"):
            entered[event["stateEnteredEventDetails"]["name"]] = event
        elif event["type"].endswith("StateExited"):
            entered.pop(event["stateExitedEventDetails"]["name"], None)
    return list(entered)


def _entered_input(sfn: Any, arn: str, state: str) -> str:
    inputs = [
        e["stateEnteredEventDetails"]["input"]
        for e in history(sfn, arn)
        if e["type"].endswith("StateEntered") and e["stateEnteredEventDetails"]["name"] == state
    ]
    return str(inputs[-1])


def redrive(sfn: Any, arn: str, role: str, *, timeout: float = 120.0) -> dict[str, Any]:
    """Redrive the execution ``arn`` as AWS would; the description of how it ends."""
    desc = sfn.describe_execution(executionArn=arn)
    if desc["status"] not in REDRIVABLE:
        raise NotRedrivable(f"status {desc['status']}")
    if datetime.now(UTC) - desc["stopDate"] > timedelta(days=REDRIVE_DAYS):
        raise NotRedrivable("closed more than 14 days ago")
    if len(history(sfn, arn)) >= MAX_EVENTS:
        raise NotRedrivable("history too long")
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=desc["stateMachineArn"])["definition"])
    (state, *_) = unfinished_states(sfn, arn)
    if definition["States"][state]["Type"] == "Fail":
        # The Fail state is entered again and fails the execution again, with the same error.
        return {**desc, "redriven_at": state}
    twin = sfn.create_state_machine(
        name=f"redrive-{uuid.uuid4().hex[:12]}", definition=json.dumps({**definition, "StartAt": state}), roleArn=role
    )["stateMachineArn"]
    run = sfn.start_execution(stateMachineArn=twin, input=_entered_input(sfn, arn, state))["executionArn"]
    deadline = time.monotonic() + timeout
    while (again := sfn.describe_execution(executionArn=run))["status"] == "RUNNING":
        if time.monotonic() > deadline:
            raise AssertionError(f"the redriven execution still runs after {timeout} s")
        time.sleep(0.02)
    return {**again, "redriven_at": state}
