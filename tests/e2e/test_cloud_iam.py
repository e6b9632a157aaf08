"""IAM enforced on the state machine under moto (the ``stack`` fixture checks every call of every
handler and of the state machine against template.yaml's policies): a missing permission fails
the execution, and Finalize's check for a newer input version is an error when it may not list
the versions (it used to take the 403 for "deleted")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cloud_fixtures import EXAMPLE_KEY, INPUT_BUCKET, OUTPUT_BUCKET, Stack, load_event
from tests.redrive import unfinished_states


def without(stack: Stack, principal: str, sid: str) -> None:
    """The stack as if template.yaml lacked statement ``sid`` of ``principal``'s policy."""
    real = stack.iam.policies

    def policies(who: str) -> list[dict[str, Any]]:
        found = real(who)
        return [s for s in found if not (who == principal and s.get("Sid") == sid)]

    assert any(s.get("Sid") == sid for s in real(principal)), sid
    stack.iam.policies = policies


def test_every_principal_is_checked(stack: Stack, example_nwb: Path) -> None:
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    assert stack.run(load_event("plan.json"))["status"] == "SUCCEEDED"
    checked = {(p, r.action) for p, r in stack.iam.checked}
    assert {
        ("ConversionStateMachine", "lambda:InvokeFunction"),
        ("ConversionStateMachine", "s3:GetObject"),  # what the ItemReaders read (write-batches.json)
        ("ConversionStateMachine", "s3:PutObject"),  # the ResultWriter's results
        ("PlanFunction", "s3:GetObjectVersion"),
        ("PlanFunction", "s3:PutObject"),
        ("WriteChunksFunction", "s3:ListBucketVersions"),
        ("WriteChunksFunction", "s3:PutObject"),
        ("FinalizeFunction", "s3:ListBucket"),
        ("FinalizeFunction", "s3:ListBucketVersions"),
    } <= checked
    assert stack.iam.denials == []


def test_a_missing_permission_fails_the_execution(stack: Stack, example_nwb: Path) -> None:
    without(stack, "WriteChunksFunction", "WriteVersionFolder")
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    desc = stack.run(load_event("plan.json"))
    assert desc["status"] == "FAILED"
    assert {(d.principal, d.request.action) for d in stack.iam.denials} == {("WriteChunksFunction", "s3:PutObject")}
    stack.iam.denials.clear()  # expected here


def test_a_missing_state_machine_permission_fails_the_execution(stack: Stack, example_nwb: Path) -> None:
    without(stack, "ConversionStateMachine", "ReadMapManifests")
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    desc = stack.run(load_event("plan.json"))
    denied = {d.principal for d in stack.iam.denials}
    stack.iam.denials.clear()
    # The map's ItemReader may not read the write batches: the execution fails in the map itself
    # (no Catch), so a redrive resumes there once the permission is back.
    assert desc["status"] == "FAILED" and denied == {"ConversionStateMachine"}
    assert unfinished_states(stack.sfn, desc["executionArn"]) == ["WriteChunks"]


def test_finalize_that_may_not_list_the_input_versions_fails_and_deletes_nothing(
    stack: Stack, example_nwb: Path
) -> None:
    """On AWS its check got 403 and took the input for deleted: an older execution could then
    delete a newer version's chunk files as stale. Now the 403 is an error."""
    without(stack, "FinalizeFunction", "ListInputVersions")
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    newer_file = "converted/incoming/sub-01_ses-01/@v/vnewer/channel-00000_1_2.bin.gz"  # another version's
    stack.s3.put_object(Bucket=OUTPUT_BUCKET, Key=newer_file, Body=b"a newer version's")
    desc = stack.run(load_event("plan.json"))
    assert (desc["status"], desc["error"]) == ("FAILED", "AccessDeniedError")
    message = json.loads(desc["cause"])["errorMessage"]
    assert message.startswith(f"s3://{INPUT_BUCKET}/{EXAMPLE_KEY}: cannot check that version ")
    assert "AccessDenied" in message
    assert stack.s3.get_object(Bucket=OUTPUT_BUCKET, Key=newer_file)["Body"].read() == b"a newer version's"
    assert {(d.principal, d.request.action) for d in stack.iam.denials} == {
        ("FinalizeFunction", "s3:ListBucketVersions")
    }
    stack.iam.denials.clear()


def test_finalize_of_a_deleted_input_completes(stack: Stack, example_nwb: Path, monkeypatch: Any) -> None:
    """A delete marker on top: the object is gone, nothing newer to protect; Finalize goes on."""
    from functions.finalize import app as finalize_app

    real = finalize_app.finalize

    def delete_input_first(s3: Any, event: Any, **kw: Any) -> Any:
        with stack.iam.acting_as(None):
            stack.s3.delete_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY)
        return real(s3, event, **kw)

    monkeypatch.setattr(finalize_app, "finalize", delete_input_first)
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    desc = stack.run(load_event("plan.json"))
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
