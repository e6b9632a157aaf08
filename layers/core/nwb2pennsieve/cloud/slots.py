"""Admission slots: the exact count of running conversions, a semaphore in one DynamoDB table.

``ListExecutions`` is eventually consistent, and two Starters count at once: a cap enforced by
counting running executions can be overshot, by how much nobody can say. So the Starter holds a
**slot** for each execution it starts: one item per execution (``lease#<execution name>``) and a
counter (``counter``), changed together by one ``TransactWriteItems``, whose conditions are checked
and applied as one (a second Starter's transaction on the same items is refused, not interleaved):

- :meth:`Slots.acquire`: counter + 1 if it is below the cap, and the lease created if absent. It
  answers ``acquired``, ``full`` (the cap is reached) or ``held`` (that execution already has one:
  a duplicate event, or a second Starter on the same file);
- :meth:`Slots.release`: the lease deleted and the counter - 1, if the lease was there (a status
  event delivered twice releases once);
- :meth:`Slots.hold`: a running execution that has no slot gets one whatever the cap (started by
  hand, or redriven): it runs, so it counts;
- :meth:`Slots.reconcile`: leases older than a few minutes whose execution is not running (a
  release event lost, a Starter that died between acquiring and starting) are released.

The Starter releases a slot when the conversion's "Execution Status Change" event (SUCCEEDED,
FAILED, TIMED_OUT, ABORTED) reaches it, and holds one on RUNNING.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ..errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_stepfunctions import SFNClient

log = logging.getLogger(__name__)

PARTITION = "slots"
COUNTER = "counter"
LEASE = "lease#"
# Transactions refused because another one was changing the same items at that moment.
CONFLICT_ATTEMPTS = 8
# A lease younger than this is never reconciled (its execution may be starting right now).
LEASE_GRACE_SECONDS = 600
RECONCILE_EVERY_SECONDS = 60


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN of the state machine's execution ``name`` (not of a map run's child)."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


class Slot(StrEnum):
    ACQUIRED = "acquired"
    FULL = "full"
    HELD = "held"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


@dataclass
class Slots:
    """The admission slots of one state machine, in the DynamoDB table ``table``."""

    dynamodb: DynamoDBClient
    table: str
    clock: Callable[[], float] = time.time
    _last_reconcile: float = field(default=0.0, repr=False)

    def _key(self, sort: str) -> dict[str, Any]:
        return {"pk": _s(PARTITION), "sk": _s(sort)}

    def _transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """Run the transaction; None when it applied, else each item's cancellation reason code."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                self.dynamodb.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
                return None
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise StorageError(f"the admission slots table {self.table} failed ({exc})") from None
                reasons = [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons or attempt == CONFLICT_ATTEMPTS - 1:
                    return reasons
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # a conflict: another Starter, now
        raise AssertionError("unreachable")

    def acquire(self, name: str, cap: int, **detail: str) -> Slot:
        """A slot for execution ``name`` if fewer than ``cap`` are held."""
        lease = {"pk": _s(PARTITION), "sk": _s(LEASE + name), "acquired_at": _n(int(self.clock()))}
        lease |= {k: _s(v) for k, v in detail.items() if v}
        reasons = self._transact(
            [
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": self._key(COUNTER),
                        "UpdateExpression": "SET n = if_not_exists(n, :zero) + :one",
                        "ConditionExpression": "attribute_not_exists(n) OR n < :cap",
                        "ExpressionAttributeValues": {":zero": _n(0), ":one": _n(1), ":cap": _n(cap)},
                    }
                },
                {"Put": {"TableName": self.table, "Item": lease, "ConditionExpression": "attribute_not_exists(sk)"}},
            ]
        )
        if reasons is None:
            return Slot.ACQUIRED
        if reasons[1:2] == ["ConditionalCheckFailed"]:
            return Slot.HELD
        if reasons[:1] == ["ConditionalCheckFailed"]:
            return Slot.FULL
        raise StorageError(f"the admission slots table {self.table} kept refusing a transaction ({reasons})")

    def hold(self, name: str) -> bool:
        """A slot for the running execution ``name`` whatever the cap; False when it has one already."""
        lease = {"pk": _s(PARTITION), "sk": _s(LEASE + name), "acquired_at": _n(int(self.clock()))}
        reasons = self._transact(
            [
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": self._key(COUNTER),
                        "UpdateExpression": "SET n = if_not_exists(n, :zero) + :one",
                        "ExpressionAttributeValues": {":zero": _n(0), ":one": _n(1)},
                    }
                },
                {"Put": {"TableName": self.table, "Item": lease, "ConditionExpression": "attribute_not_exists(sk)"}},
            ]
        )
        if reasons is None:
            return True
        if reasons[1:2] == ["ConditionalCheckFailed"]:
            return False
        raise StorageError(f"the admission slots table {self.table} kept refusing a transaction ({reasons})")

    def release(self, name: str) -> bool:
        """Give back execution ``name``'s slot; False when it held none (released already)."""
        delete = {
            "Delete": {
                "TableName": self.table,
                "Key": self._key(LEASE + name),
                "ConditionExpression": "attribute_exists(sk)",
            }
        }
        decrement = {
            "Update": {
                "TableName": self.table,
                "Key": self._key(COUNTER),
                "UpdateExpression": "SET n = n - :one",
                "ConditionExpression": "n > :zero",
                "ExpressionAttributeValues": {":zero": _n(0), ":one": _n(1)},
            }
        }
        reasons = self._transact([delete, decrement])
        if reasons is None:
            return True
        if reasons[:1] == ["ConditionalCheckFailed"]:
            return False
        if reasons[1:2] != ["ConditionalCheckFailed"]:
            raise StorageError(f"the admission slots table {self.table} kept refusing a transaction ({reasons})")
        # The lease was there but the counter at 0 (it never goes below): the lease alone goes.
        return self._transact([delete]) is None

    def held(self) -> dict[str, int]:
        """execution name -> when its slot was acquired (epoch seconds), for every slot held."""
        leases: dict[str, int] = {}
        pages = self.dynamodb.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :lease)",
            ExpressionAttributeValues={":pk": _s(PARTITION), ":lease": _s(LEASE)},
        )
        for page in pages:
            for item in page.get("Items", []):
                leases[item["sk"]["S"][len(LEASE) :]] = int(item.get("acquired_at", {}).get("N", "0"))
        return leases

    def in_use(self) -> int:
        """The counter: slots held."""
        answer = self.dynamodb.get_item(TableName=self.table, Key=self._key(COUNTER), ConsistentRead=True)
        return int(answer.get("Item", {}).get("n", {}).get("N", "0"))

    def reconcile(self, sfn: SFNClient, state_machine_arn: str, *, force: bool = False) -> list[str]:
        """Release the slots of executions that are not running (at most once a minute unless ``force``)."""
        now = self.clock()
        if not force and now - self._last_reconcile < RECONCILE_EVERY_SECONDS:
            return []
        self._last_reconcile = now
        released = []
        for name, acquired_at in self.held().items():
            if now - acquired_at < LEASE_GRACE_SECONDS:
                continue
            status: str
            try:
                status = sfn.describe_execution(executionArn=execution_arn(state_machine_arn, name))["status"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                    raise
                status = "NONE"  # a Starter died between acquiring and starting
            if status != "RUNNING" and self.release(name):
                log.warning("released the slot of %s (%s): its end was not reported", name, status)
                released.append(name)
        return released
