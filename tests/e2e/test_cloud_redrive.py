"""Redrive: a failed conversion resumes from the step that failed (item 5).

AWS redrives the states entered and never exited. With every error caught into a Fail state, that
state was the Fail state, and a console redrive failed again at once. Now the state that fails
after its Retry fails the execution itself; tests/redrive.py applies AWS's rule to moto's history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nwb2pennsieve.errors import ConfigurationError
from tests.cloud_fixtures import EXAMPLE_KEY, INPUT_BUCKET, OUTPUT_BUCKET, Stack, load_event
from tests.redrive import NotRedrivable, redrive, unfinished_states


def test_a_redrive_resumes_at_the_step_that_failed(stack: Stack, example_nwb: Path, monkeypatch: Any) -> None:
    from functions.finalize import app as finalize_app

    real = finalize_app.finalize
    failures = [ConfigurationError("the Pennsieve secret cannot be read (AccessDeniedException)")]

    def fails_once(s3: Any, request: Any, **kw: Any) -> Any:
        if failures:
            raise failures.pop()  # not retried: a setting an operator must fix, then redrive
        return real(s3, request, **kw)

    monkeypatch.setattr(finalize_app, "finalize", fails_once)
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    desc = stack.run(load_event("plan.json"))
    assert (desc["status"], desc["error"]) == ("FAILED", "ConfigurationError")
    assert json.loads(desc["cause"])["errorMessage"].endswith("cannot be read (AccessDeniedException)")
    assert unfinished_states(stack.sfn, desc["executionArn"]) == ["Finalize"]
    before = len(stack.invocations)

    again = redrive(stack.sfn, desc["executionArn"], stack.role)

    assert (again["status"], again["redriven_at"]) == ("SUCCEEDED", "Finalize"), again.get("cause")
    rerun = [f for f, _ in stack.invocations[before:]]
    assert rerun == ["FinalizeFunction"]  # no Plan, no writer: only the step that failed
    assert json.loads(again["output"])["outcome"] == "converted"
    assert stack.published(EXAMPLE_KEY)  # published by the redriven Finalize


def test_a_succeeded_execution_is_not_redriven(stack: Stack, example_nwb: Path) -> None:
    stack.s3.put_object(Bucket=INPUT_BUCKET, Key=EXAMPLE_KEY, Body=example_nwb.read_bytes())
    desc = stack.run(load_event("plan.json"))
    assert desc["status"] == "SUCCEEDED"
    with pytest.raises(NotRedrivable, match="SUCCEEDED"):
        redrive(stack.sfn, desc["executionArn"], stack.role)
    assert "Contents" in stack.s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="converted/")
