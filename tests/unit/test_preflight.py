"""`make preflight` (statemachine/preflight.py), offline: the account's answers replayed from
tests/fixtures/preflight/ through botocore's Stubber (which checks each against the AWS API's
model), S3's from moto. moto has neither Lambda's GetAccountSettings nor Service Quotas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from statemachine import preflight
from statemachine.render import load_template
from tests.cloud_fixtures import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "preflight"
TEMPLATE = load_template()


def replayed(case: str) -> Any:
    """A client factory whose clients answer with ``case``'s recorded calls, in order."""
    calls = json.loads((FIXTURES / f"{case}.json").read_text())["calls"]
    made: dict[str, Any] = {}
    stubs: dict[str, Stubber] = {}
    from botocore import xform_name

    def client(service: str) -> Any:
        if service not in made:
            made[service] = boto3.client(
                service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
            )
            stubs[service] = Stubber(made[service])
            for call in calls:
                name, _, operation = call["call"].rpartition(".")
                if name != service:
                    continue
                method = xform_name(operation)
                if "error" in call:
                    e = call["error"]
                    stubs[service].add_client_error(method, e["Code"], e["Message"], e.get("HTTPStatusCode", 400))
                else:
                    stubs[service].add_response(method, call["response"])
            stubs[service].activate()
        return made[service]

    client.stubs = stubs  # type: ignore[attr-defined]
    return client


def run(case: str, capsys: pytest.CaptureFixture[str], *overrides: str, strict: bool = False) -> tuple[int, str]:
    clients = replayed(case)
    argv = ["--parameter-overrides", *overrides] if overrides else ["--parameter-overrides", "ImporterEnabled=false"]
    code = preflight.main([*argv, *(["--strict"] if strict else [])], clients=clients)
    for stub in clients.stubs.values():
        stub.assert_no_pending_responses()  # every recorded answer was asked for
    return code, capsys.readouterr().out


def line(out: str, check: str) -> str:
    (found,) = [row for row in out.splitlines() if row.startswith(check + " ")]
    return found


def test_the_defaults_fit_a_default_account(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run("default-account", capsys)
    assert code == 0, out
    assert "lambda.reserve" in out and "SKIP" in line(out, "lambda.reserve")
    assert " OK " in line(out, "lambda.budget")
    assert out.splitlines()[-1].startswith("RESULT 0 FAIL")
    assert "account ...9012, us-east-1" in out


def test_a_new_account_is_told_before_the_deploy(capsys: pytest.CaptureFixture[str]) -> None:
    """Item 1: reserving 600 needs 700 of concurrency (AWS keeps 100 unreserved): on a new account
    with 400 the deploy would fail; the preflight says so, and what to do. The defaults (no
    reserve) fit it, with a WARN where its reduced state-transition quota is short."""
    code, out = run("new-account", capsys, "WritersReservedConcurrency=600")
    assert code == 1
    reserve = line(out, "lambda.reserve")
    assert "FAIL" in reserve and ">= 700 unreserved" in reserve and "400 (account 400)" in reserve
    assert "WritersReservedConcurrency=0" in reserve
    code, out = run("new-account", capsys, "ImporterEnabled=false")
    assert code == 0, out
    assert "WARN" in line(out, "states.transitions") and "L-0000STRR" in line(out, "states.transitions")
    code, _ = run("new-account", capsys, "ImporterEnabled=false", strict=True)
    assert code == 1


def test_concurrency_taken_by_other_functions_is_counted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run("reserved-by-others", capsys, "MaxRunningExecutions=5", "WriteConcurrency=100")
    assert code == 0 and "WARN" in line(out, "lambda.budget")  # 512 > 80 % of 300 unreserved
    code, out = run("reserved-by-others", capsys, "WriteConcurrency=400")
    assert code == 1 and "FAIL" in line(out, "lambda.budget")


def test_an_existing_stack_gives_back_its_own_reserve_first(capsys: pytest.CaptureFixture[str]) -> None:
    """An update of a stack that reserves 600: those 600 come back before the new reserve is taken."""
    code, out = run("existing-stack", capsys, "WritersReservedConcurrency=625")
    assert code == 0, out
    assert "960 (account 1000)" in line(out, "lambda.reserve")


def test_step_functions_quotas_are_read_by_name_and_access_denied_is_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run("default-account", capsys)
    quotas = line(out, "states.quotas")
    assert "Open executions (L-0000OPEN) 1e+06" in quotas and "OK" in quotas
    code, out = run("quotas-denied", capsys)
    assert code == 0
    denied = line(out, "states.quotas")
    assert "WARN" in denied and "AccessDeniedException" in denied and "Service Quotas console" in denied


def test_parameters_are_checked_against_the_template(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run("default-account", capsys, "AdmissionRetrySeconds=3600", "InputPrefix=")
    assert code == 1
    assert "above 900" in line(out, "params.AdmissionRetrySeconds")
    assert "FAIL" in line(out, "input.prefix") and "AllowWholeInputBucket=true" in line(out, "input.prefix")
    code, out = run("default-account", capsys, "InputPrefix=", "AllowWholeInputBucket=true")
    assert code == 0 and "WARN" in line(out, "input.prefix")
    assert preflight.main(["--parameter-overrides", "NoSuchParameter=1"], clients=replayed("default-account")) == 2


def test_samconfig_sets_no_concurrency_or_admission_parameter() -> None:
    values = preflight.parameters(TEMPLATE, None)
    defaults = {n: str(p.get("Default", "")) for n, p in TEMPLATE["Parameters"].items()}
    assert {k for k in values if values[k] != defaults[k]} <= {"ImporterEnabled"}
    assert preflight.parse_overrides('A=1 B="two words"') == {"A": "1", "B": "two words"}


def test_an_existing_input_bucket_needs_eventbridge_and_versioning(capsys: pytest.CaptureFixture[str]) -> None:
    """A bucket of moto's (no EventBridge, unversioned); then one answering as S3 does with both on
    (moto never returns EventBridgeConfiguration, so that answer is stubbed)."""
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lab-bucket")
        replay = replayed("default-account")
        code = preflight.main(
            ["--parameter-overrides", "InputBucketName=lab-bucket"],
            clients=lambda service: s3 if service == "s3" else replay(service),
        )
    out = capsys.readouterr().out
    assert code == 1 and "FAIL" in line(out, "input.eventbridge") and "WARN" in line(out, "input.versioning")
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(s3)
    stub.add_response("get_bucket_versioning", {"Status": "Enabled"}, {"Bucket": "lab-bucket"})
    stub.add_response(
        "get_bucket_notification_configuration", {"EventBridgeConfiguration": {}}, {"Bucket": "lab-bucket"}
    )
    replay = replayed("default-account")
    with stub:
        code = preflight.main(
            ["--parameter-overrides", "InputBucketName=lab-bucket"],
            clients=lambda service: s3 if service == "s3" else replay(service),
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OK" in line(out, "input.eventbridge") and "OK" in line(out, "input.versioning")


def test_a_recording_masks_the_account_and_replays(tmp_path: Path) -> None:
    record = preflight.recorder(tmp_path / "real.json")
    client = boto3.client("sts", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_response(
        "get_caller_identity", {"UserId": "U", "Account": "210987654321", "Arn": "arn:aws:iam::210987654321:user/me"}
    )
    client.meta.events.register("after-call", record)
    with stub:
        client.get_caller_identity()
    saved = json.loads((tmp_path / "real.json").read_text())
    assert saved["calls"][0]["call"] == "sts.GetCallerIdentity"
    assert "210987654321" not in json.dumps(saved) and saved["calls"][0]["response"]["Account"] == "123456789012"
