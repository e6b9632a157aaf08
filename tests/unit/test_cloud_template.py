"""template.yaml: our own rules (the validators run in tests/integration/test_template_validators.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from statemachine.render import load_template, render, substitutions, template_refs
from tests.cloud_fixtures import ROOT

TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]


def of_type(kind: str) -> dict[str, Any]:
    return {k: v for k, v in RESOURCES.items() if v["Type"] == kind}


def test_buckets_are_encrypted_private_and_https_only() -> None:
    buckets = of_type("AWS::S3::Bucket")
    assert set(buckets) == {"InputBucket", "OutputBucket"}
    policies = {v["Properties"]["Bucket"]["Ref"] for v in of_type("AWS::S3::BucketPolicy").values()}
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert (
            all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
        )
        assert name in policies
    assert (
        RESOURCES["InputBucket"]["Properties"]["NotificationConfiguration"]["EventBridgeConfiguration"][
            "EventBridgeEnabled"
        ]
        is True
    )


def test_functions_are_python312_arm64_with_both_layers_and_log_retention() -> None:
    glob = TEMPLATE["Globals"]["Function"]
    assert glob["Runtime"] == "python3.12" and glob["Architectures"] == ["arm64"]
    assert glob["Layers"] == [{"Ref": "CoreLayer"}, {"Ref": "DepsLayer"}]
    functions = of_type("AWS::Serverless::Function")
    assert set(functions) == {
        "PlanFunction",
        "WriteChunksFunction",
        "FinalizeFunction",
        "UploadFilesFunction",
        "CompleteImportFunction",
        "StarterFunction",
    }
    groups = of_type("AWS::Logs::LogGroup")
    for name in functions:
        assert (ROOT / functions[name]["Properties"]["CodeUri"] / "app.py").is_file()
        group = groups[f"{name}LogGroup"]["Properties"]
        assert group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{name}}}"}
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_least_privilege() -> None:
    text = (ROOT / "template.yaml").read_text()
    assert "FullAccess" not in text
    allowed = {
        "LambdaInvokePolicy",
        "AWSSecretsManagerGetSecretValuePolicy",
        "Statement",
        "Fn::If",
    }
    for name, res in {**of_type("AWS::Serverless::Function"), **of_type("AWS::Serverless::StateMachine")}.items():
        for policy in res["Properties"]["Policies"]:
            assert isinstance(policy, dict) and set(policy) <= allowed, (name, policy)
            for statement in policy.get("Statement", []):
                for action in statement["Action"]:
                    assert not action.endswith(":*"), (name, action)
                if statement["Resource"] == "*":  # only log delivery, which has no resource-level permissions
                    assert all(a.startswith("logs:") for a in statement["Action"]), (name, statement)


def test_credentials_are_only_a_secret_arn() -> None:
    params = TEMPLATE["Parameters"]
    for name in params:
        lowered = name.lower()
        assert not any(w in lowered for w in ("apikey", "apisecret", "token", "password")), name
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["PENNSIEVE_SECRET_ARN"] == {"Ref": "PennsieveSecretArn"}
    assert not any(k in variables for k in ("PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET", "SESSION_TOKEN"))


def test_required_parameters_exist() -> None:
    assert {
        "ChunkSizeMb",
        "ImporterEnabled",
        "PennsieveApiHost",
        "PennsieveApiHost2",
        "WriteConcurrency",
        "UploadConcurrency",
        "UploadBatchFiles",
        "PennsieveSecretArn",
        "InputBucketName",
        "InputPrefix",
        "InputSuffix",
        "OutputPrefix",
    } <= set(TEMPLATE["Parameters"])


def test_state_machine_is_started_through_the_admission_queue_and_logs() -> None:
    sm = RESOURCES["ConversionStateMachine"]["Properties"]
    assert sm["DefinitionUri"] == "statemachine/nwb2pennsieve.asl.json"
    assert "Events" not in sm  # only the Starter starts executions
    assert sm["Logging"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
    (target,) = RESOURCES["NwbObjectCreatedRule"]["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["AdmissionQueue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["AdmissionDeadLetterQueue", "Arn"]}
    queue = RESOURCES["AdmissionQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["AdmissionDeadLetterQueue", "Arn"]}
    # An explicit mapping (SAM's SQS event would attach a managed policy that reaches every queue).
    assert "Events" not in RESOURCES["StarterFunction"]["Properties"]
    (mapping,) = of_type("AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["AdmissionQueue", "Arn"]}
    assert props["FunctionName"] == {"Ref": "StarterFunction"}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    alarm = RESOURCES["AdmissionDeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["AdmissionDeadLetterQueue", "QueueName"]}
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_writers_reserve_is_optional_and_off_by_default() -> None:
    """A reserve of 600 needs an account concurrency of 700; new accounts have less, and the deploy
    would fail. Off by default: WriteChunks then has no ReservedConcurrentExecutions at all."""
    param = TEMPLATE["Parameters"]["WritersReservedConcurrency"]
    assert param["Default"] == 0 and param["MinValue"] == 0
    assert TEMPLATE["Conditions"]["HasWritersReserve"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WritersReservedConcurrency"}, 0]}]
    }
    writer = RESOURCES["WriteChunksFunction"]["Properties"]
    assert writer["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasWritersReserve", {"Ref": "WritersReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }


def test_the_defaults_leave_headroom() -> None:
    """The admitted maps ask for at most 80 % of the writers' concurrency: the reserve if one is set,
    else an account's documented default of 1,000 (the real account is `make preflight`'s job);
    with Plan and Finalize of each running execution and two Starters, as docs/deploy.md's rule."""
    from nwb2pennsieve.cloud.admission import WRITERS_HEADROOM, admission_cap

    params = TEMPLATE["Parameters"]
    reserved = params["WritersReservedConcurrency"]["Default"]
    write = params["WriteConcurrency"]["Default"]
    upload = params["UploadConcurrency"]["Default"]
    cap = admission_cap(params["MaxRunningExecutions"]["Default"], reserved, write)
    budget = reserved or 1000
    assert cap * (max(write, upload) + 2) + 2 <= WRITERS_HEADROOM * budget
    # With a reserve the cap keeps the same headroom inside it.
    for reserve in (125, 600, 625, 1000):
        assert (
            admission_cap(50, reserve, write) * write <= WRITERS_HEADROOM * reserve
            or admission_cap(50, reserve, write) == 1
        )


def test_samconfig_has_a_default_environment() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert config["default"]["global"]["parameters"]["stack_name"]


def test_rendered_definition_is_small() -> None:
    text = render(substitutions(TEMPLATE, template_refs(TEMPLATE)))
    assert len(json.dumps(json.loads(text))) < 16_000


def test_only_the_importing_functions_read_the_secret_and_only_finalize_deletes() -> None:
    def policy_names(function: str) -> list[str]:
        names = []
        for policy in RESOURCES[function]["Properties"]["Policies"]:
            if "Fn::If" in policy:
                policy = policy["Fn::If"][1]
            names.extend(policy)
        return names

    for function in of_type("AWS::Serverless::Function"):
        reads_secret = "AWSSecretsManagerGetSecretValuePolicy" in policy_names(function)
        importing = ("FinalizeFunction", "UploadFilesFunction", "CompleteImportFunction")  # the last: asset flow
        assert reads_secret == (function in importing), function
        # Explicit statements only: SAM's S3 policy templates grant lifecycle and ACL changes too.
        assert not any(n.startswith("S3") for n in policy_names(function)), function
    # Only Finalize deletes (stale chunk files, superseded version folders, an earlier run's upload
    # records); Plan deletes nothing (each version has its own folder).
    for function in of_type("AWS::Serverless::Function"):
        text = json.dumps(RESOURCES[function]["Properties"]["Policies"])
        assert ("s3:DeleteObject" in text) == (function == "FinalizeFunction"), function


def test_the_state_machine_may_invoke_each_function_and_only_those() -> None:
    policies = RESOURCES["ConversionStateMachine"]["Properties"]["Policies"]
    invoked = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in policies if "LambdaInvokePolicy" in p}
    assert invoked == set(of_type("AWS::Serverless::Function")) - {"StarterFunction"}  # the queue invokes it


def test_records_prefix_can_never_be_blank_or_the_output() -> None:
    """The records expire after RecordsDays: a blank RecordsPrefix would expire the chunk output too."""
    import re

    param = TEMPLATE["Parameters"]["RecordsPrefix"]
    pattern = re.compile(param["AllowedPattern"])
    for bad in ("", "/", "records", "/records/"):
        assert not pattern.fullmatch(bad), bad
    for good in (param["Default"], "records/", "nwb2pennsieve/records/"):
        assert pattern.fullmatch(good), good
    (assertion,) = TEMPLATE["Rules"]["RecordsApartFromOutput"]["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "RecordsPrefix"}, {"Ref": "OutputPrefix"}]}]}
    rules = {r["Id"]: r for r in RESOURCES["OutputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireRecords"]["Prefix"] == {"Ref": "RecordsPrefix"}


def test_replaced_input_versions_expire() -> None:
    rules = {r["Id"]: r for r in RESOURCES["InputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    noncurrent = rules["ExpireNoncurrentInputVersions"]
    assert noncurrent["NoncurrentVersionExpiration"]["NoncurrentDays"] == {"Ref": "NoncurrentInputDays"}
    assert "Prefix" not in noncurrent and "ExpirationInDays" not in noncurrent  # current versions stay


def test_the_outcome_of_each_conversion_is_published_with_file_status_and_cause() -> None:
    rule = RESOURCES["ConversionOutcomeRule"]["Properties"]
    detail = rule["EventPattern"]["detail"]
    assert sorted(detail["status"]) == ["ABORTED", "FAILED", "SUCCEEDED", "TIMED_OUT"]
    assert detail["stateMachineArn"] == [{"Ref": "ConversionStateMachine"}]
    # Conversions only: a Distributed Map child execution's ARN has "<name>/<label>:", not "<name>:".
    (prefix,) = detail["executionArn"]
    assert prefix["prefix"]["Fn::Sub"].endswith(":execution:${AWS::StackName}-conversion:")
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": "NotificationTopic"}
    paths = target["InputTransformer"]["InputPathsMap"]
    assert {"status", "input", "cause", "output"} <= set(paths)
    template = target["InputTransformer"]["InputTemplate"]
    assert all(f"<{name}>" in template for name in paths)
    subscription = RESOURCES["NotificationEmailSubscription"]
    assert subscription["Condition"] == "HasNotificationEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "NotificationEmail"}
    statements = RESOURCES["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    publishers = {s["Principal"]["Service"] for s in statements}
    assert publishers == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}


def test_alarms_watch_failures_throttles_and_errors_and_tell_the_topic() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")
    assert {"FailedConversionsAlarm", "LambdaThrottlesAlarm", "LambdaErrorsAlarm", "AdmissionDeadLetterAlarm"} <= set(
        alarms
    )
    functions = set(of_type("AWS::Serverless::Function"))
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "NotificationTopic"}], name
        metrics = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
        if name.startswith("Lambda"):
            watched = {d["Value"]["Ref"] for m in metrics for d in m["Dimensions"]}
            assert watched == functions, name  # every function, and only ours
    assert "OperationsDashboard" in of_type("AWS::CloudWatch::Dashboard")


def test_functions_take_aws_endpoint_url_from_a_parameter_that_is_empty_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sam local invoke` sets only declared variables: AWS_ENDPOINT_URL is one, empty on AWS."""
    from nwb2pennsieve.cloud.clients import s3_client

    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["AWS_ENDPOINT_URL"] == {"Ref": "AwsEndpointUrl"}
    assert TEMPLATE["Parameters"]["AwsEndpointUrl"]["Default"] == ""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")  # the deployed default: botocore keeps AWS's endpoint
    assert s3_client().meta.endpoint_url == "https://s3.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://172.17.0.1:5000")  # a local S3 (botocore >= 1.31 reads it)
    assert s3_client(threads=16).meta.endpoint_url == "http://172.17.0.1:5000"


def _holds(condition: Any, parameters: dict[str, str]) -> bool:
    """A Rules assertion (Fn::Or, Fn::And, Fn::Not, Fn::Equals over Refs) with ``parameters``."""
    ((fn, arg),) = condition.items()
    if fn == "Ref":
        return parameters[arg]  # type: ignore[return-value]
    if fn == "Fn::Equals":
        a, b = (_value(x, parameters) for x in arg)
        return a == b
    if fn == "Fn::Not":
        return not _holds(arg[0], parameters)
    if fn == "Fn::Or":
        return any(_holds(c, parameters) for c in arg)
    if fn == "Fn::And":
        return all(_holds(c, parameters) for c in arg)
    raise AssertionError(fn)


def _value(x: Any, parameters: dict[str, str]) -> str:
    return parameters[x["Ref"]] if isinstance(x, dict) else str(x)


def test_an_empty_input_prefix_needs_an_explicit_opt_in() -> None:
    """Every function reads objects under InputPrefix only: empty, that is the whole input bucket.
    The default is a prefix; an empty one is refused at deploy unless AllowWholeInputBucket=true."""
    params = TEMPLATE["Parameters"]
    assert params["InputPrefix"]["Default"] == "incoming/"
    assert params["AllowWholeInputBucket"]["Default"] == "false"
    (assertion,) = TEMPLATE["Rules"]["InputPrefixOrOptIn"]["Assertions"]
    rule = assertion["Assert"]
    assert _holds(rule, {"InputPrefix": "incoming/", "AllowWholeInputBucket": "false"})
    assert not _holds(rule, {"InputPrefix": "", "AllowWholeInputBucket": "false"})
    assert _holds(rule, {"InputPrefix": "", "AllowWholeInputBucket": "true"})
    assert "AllowWholeInputBucket=true" in assertion["AssertDescription"]


def test_the_admission_queue_cannot_expire_or_outlive_its_dead_letter_queue() -> None:
    """Item 2: a deferral is a new message delayed by AdmissionRetrySeconds (SQS allows 900 s at
    most); the dead-letter queue keeps a moved message's first enqueue time, so it must keep
    messages longer than the admission queue; the visibility timeout is at least six times the
    Starter's timeout (plus its batching window), as AWS advises for a Lambda event source; the age
    of the oldest message of both queues raises alarms."""
    retry = TEMPLATE["Parameters"]["AdmissionRetrySeconds"]
    assert retry["MaxValue"] <= 900 and retry["MinValue"] >= 1
    queue = RESOURCES["AdmissionQueue"]["Properties"]
    dead = RESOURCES["AdmissionDeadLetterQueue"]["Properties"]
    assert dead["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert dead["MessageRetentionPeriod"] == 1_209_600  # SQS's longest: 14 days
    starter = RESOURCES["StarterFunction"]["Properties"]
    (mapping,) = of_type("AWS::Lambda::EventSourceMapping").values()
    window = mapping["Properties"]["MaximumBatchingWindowInSeconds"]
    assert queue["VisibilityTimeout"] >= 6 * starter["Timeout"] + window
    # Receives count only failures now (a deferral is a new message): a handful is plenty.
    assert 3 <= queue["RedrivePolicy"]["maxReceiveCount"] <= 10
    ages = {
        name: a["Properties"]
        for name, a in of_type("AWS::CloudWatch::Alarm").items()
        if a["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"
    }
    watched = {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]: a["Threshold"] for a in ages.values()}
    assert watched["AdmissionQueue"] <= 3600
    assert watched["AdmissionDeadLetterQueue"] <= dead["MessageRetentionPeriod"] / 2  # a week left to act


def test_the_starter_holds_admission_slots_and_hears_every_conversion_end() -> None:
    """Item 3: the cap is a semaphore (a DynamoDB table of slots), not a count of ListExecutions;
    each conversion's start and end reach the Starter, which gives the slot back."""
    table = RESOURCES["AdmissionSlotsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST" and table["SSESpecification"]["SSEEnabled"]
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["ADMISSION_SLOTS_TABLE"] == {"Ref": "AdmissionSlotsTable"}
    assert variables["ADMISSION_QUEUE_URL"] == {"Ref": "AdmissionQueue"}
    rule = RESOURCES["ConversionStatusRule"]["Properties"]
    assert set(rule["EventPattern"]["detail"]["status"]) == {"RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
    (prefix,) = rule["EventPattern"]["detail"]["executionArn"]
    assert prefix["prefix"]["Fn::Sub"].endswith(":execution:${AWS::StackName}-conversion:")  # not map children
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["StarterFunction", "Arn"]}
    permission = RESOURCES["StarterStatusPermission"]["Properties"]
    assert permission["SourceArn"] == {"Fn::GetAtt": ["ConversionStatusRule", "Arn"]}
    assert permission["Principal"] == "events.amazonaws.com"
    text = json.dumps(RESOURCES["StarterFunction"]["Properties"]["Policies"])
    assert "states:ListExecutions" not in text and "sqs:ChangeMessageVisibility" not in text
