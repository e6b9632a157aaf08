"""The IAM policies template.yaml gives each function and the state machine (as the SAM translator
deploys them), probed with the test evaluator of tests/iam.py: what each may do, what it may not,
and that no S3 grant is wider than the prefix the function uses."""

from __future__ import annotations

from typing import Any

import pytest

from nwb2pennsieve.cloud.records import RecordsFolder, map_results
from statemachine.render import load_template, template_refs
from tests.iam import Request, allowed, role_statements, translated_template

TEMPLATE = load_template()
TRANSLATED = translated_template(TEMPLATE)
FUNCTIONS = [n for n, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
PRINCIPALS = [*FUNCTIONS, "ConversionStateMachine"]
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pennsieve-AbCdEf"
IN, OUT = "arn:aws:s3:::in-bucket", "arn:aws:s3:::out-bucket"
SM = "arn:aws:states:us-east-1:123456789012"
FN = "arn:aws:lambda:us-east-1:123456789012:function"
# The records of a.nwb at version v under the default RecordsPrefix (records/a/@v/vv/).
RECORDS = RecordsFolder.of_version("out-bucket", "records/", "a.nwb", "vv")
# Its version folder, and the key's published pointer.
VERSION = f"{OUT}/converted/a/@v/vv"
POINTER = f"{OUT}/converted/a/@current.json"
PLAN_JSON = f"{OUT}/{RECORDS.plan.key}"
RESULTS = f"{OUT}/{map_results('out-bucket', 'records/').prefix}"


def statements(principal: str, **values: Any) -> list[dict[str, Any]]:
    refs = template_refs(TEMPLATE, InputBucket="in-bucket", OutputBucket="out-bucket", InputPrefix="incoming/")
    refs.update({f: f for f in FUNCTIONS})
    refs.update({"AWS::StackName": "stack", "PennsieveSecretArn": SECRET, "HasSecret": True, **values})
    return role_statements(TRANSLATED, principal, refs)


def may(principal: str, action: str, resource: str, prefix: str | None = None, **values: Any) -> bool:
    context = () if prefix is None else (("s3:prefix", prefix),)
    return allowed(statements(principal, **values), Request(action, resource, context))


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_every_s3_grant_is_scoped_to_a_prefix_the_principal_uses(principal: str) -> None:
    """No `*` where a prefix would do: objects under the input, output or records prefix only;
    bucket-level grants are listings with an s3:prefix condition."""
    prefixes = (f"{IN}/incoming/", f"{OUT}/converted/", f"{OUT}/records/")
    for statement in statements(principal):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), statement
        if resources == ["*"]:
            # Logs and X-Ray have no resource ARNs for these actions; nothing else may be granted on "*".
            assert all(a.startswith(("logs:", "xray:")) for a in actions), statement
            continue
        if not any(a.startswith("s3:") for a in actions):
            continue
        for resource in resources:
            if resource in (IN, OUT):
                assert set(actions) <= {"s3:ListBucket", "s3:ListBucketVersions"}, statement
                wanted = statement["Condition"]["StringLike"]["s3:prefix"]
                assert wanted.startswith(("incoming/", "converted/", "records/")) and wanted.endswith("*"), statement
            else:
                # every object under a prefix (converted/*), or one name in each of its folders (converted/*/x.json,
                # the pointer converted/*/@current.json)
                assert resource.startswith(prefixes) and (resource.endswith("*") or "/*/" in resource), statement


@pytest.mark.parametrize(
    ("principal", "action", "resource", "prefix", "expected"),
    [
        # Plan: reads the input (pinned version), is it still the latest?, writes records; nothing else.
        ("PlanFunction", "s3:GetObjectVersion", f"{IN}/incoming/a.nwb", None, True),
        ("PlanFunction", "s3:GetObject", f"{IN}/elsewhere/a.nwb", None, False),
        ("PlanFunction", "s3:ListBucketVersions", IN, "incoming/a.nwb", True),
        ("PlanFunction", "s3:PutObject", PLAN_JSON, None, True),
        ("PlanFunction", "s3:PutObject", f"{VERSION}/channel-00000_1_2.bin.gz", None, False),
        ("PlanFunction", "s3:PutObject", f"{IN}/incoming/a.nwb", None, False),
        # ... and deletes nothing, an earlier bundle included (each version has its own folder).
        ("PlanFunction", "s3:ListBucket", OUT, "converted/a/", False),
        ("PlanFunction", "s3:DeleteObject", f"{OUT}/converted/a/a.zarr/0/0/c/0", None, False),
        ("PlanFunction", "s3:DeleteObject", f"{VERSION}/a.zarr/0/0/c/0", None, False),
        # WriteChunks: reads input and plan, writes chunk files into version folders; never deletes,
        # never writes records but its own, never the pointer.
        ("WriteChunksFunction", "s3:PutObject", f"{VERSION}/channel-00000_1_2.bin.gz", None, True),
        ("WriteChunksFunction", "s3:PutObject", f"{OUT}/converted/a/channel-00000_1_2.bin.gz", None, False),
        ("WriteChunksFunction", "s3:PutObject", POINTER, None, False),
        ("WriteChunksFunction", "s3:GetObject", PLAN_JSON, None, True),
        ("WriteChunksFunction", "s3:PutObject", PLAN_JSON, None, False),
        ("WriteChunksFunction", "s3:PutObject", f"{OUT}/{RECORDS.bundle_partial('000-w000000-00000').key}", None, True),
        ("WriteChunksFunction", "s3:DeleteObject", f"{VERSION}/channel-00000_1_2.bin.gz", None, False),
        ("WriteChunksFunction", "s3:ListBucketVersions", IN, "incoming/a.nwb", True),
        ("WriteChunksFunction", "s3:ListBucketVersions", IN, "", False),
        # Finalize: lists the versions of the input key (check_current), manages the output.
        ("FinalizeFunction", "s3:ListBucketVersions", IN, "incoming/a.nwb", True),
        ("FinalizeFunction", "s3:GetObjectVersion", f"{IN}/incoming/a.nwb", None, True),  # the bundle's units
        ("FinalizeFunction", "s3:GetObject", f"{IN}/elsewhere/a.nwb", None, False),
        ("FinalizeFunction", "s3:ListBucket", OUT, "converted/a/channel-00003", True),
        ("FinalizeFunction", "s3:ListBucket", OUT, "", False),
        ("FinalizeFunction", "s3:ListBucket", OUT, None, False),
        ("FinalizeFunction", "s3:DeleteObject", f"{VERSION}/channel-00000_1_2.bin.gz", None, True),
        ("FinalizeFunction", "s3:DeleteObject", f"{OUT}/elsewhere/x", None, False),
        # ... publishes a version (the pointer, never deleted), writes nothing outside version folders.
        ("FinalizeFunction", "s3:PutObject", POINTER, None, True),
        ("FinalizeFunction", "s3:GetObject", POINTER, None, True),
        ("FinalizeFunction", "s3:DeleteObject", POINTER, None, False),
        ("FinalizeFunction", "s3:PutObject", f"{OUT}/converted/a/channel-00000_1_2.bin.gz", None, False),
        ("FinalizeFunction", "secretsmanager:GetSecretValue", SECRET, None, True),
        # The uploaders read and record; they delete nothing.
        ("UploadFilesFunction", "s3:GetObject", f"{OUT}/converted/a/channel-00000_1_2.bin.gz", None, True),
        ("UploadFilesFunction", "s3:DeleteObject", f"{OUT}/converted/a/channel-00000_1_2.bin.gz", None, False),
        ("UploadFilesFunction", "secretsmanager:GetSecretValue", SECRET, None, True),
        ("CompleteImportFunction", "s3:PutObject", f"{OUT}/converted/a/import-failed.json", None, True),
        # The state machine: the lists its ItemReaders read, its map results (multipart), its child executions.
        ("ConversionStateMachine", "s3:GetObject", f"{OUT}/{RECORDS.write_batches.key}", None, True),
        ("ConversionStateMachine", "s3:PutObject", f"{RESULTS}/run/SUCCEEDED_0.json", None, True),
        ("ConversionStateMachine", "s3:ListMultipartUploadParts", f"{RESULTS}/r/x.json", None, True),
        ("ConversionStateMachine", "s3:AbortMultipartUpload", f"{RESULTS}/r/x.json", None, True),
        ("ConversionStateMachine", "s3:PutObject", PLAN_JSON, None, False),
        ("ConversionStateMachine", "s3:PutObject", f"{OUT}/converted/a/x", None, False),
        ("ConversionStateMachine", "states:StartExecution", f"{SM}:stateMachine:stack-conversion", None, True),
        ("ConversionStateMachine", "states:StartExecution", f"{SM}:stateMachine:another", None, False),
        ("ConversionStateMachine", "states:DescribeExecution", f"{SM}:execution:stack-conversion:e1", None, True),
        ("ConversionStateMachine", "states:StopExecution", f"{SM}:execution:stack-conversion/Map:c1", None, True),
        ("ConversionStateMachine", "states:DescribeExecution", f"{SM}:execution:another:e1", None, False),
        ("ConversionStateMachine", "lambda:InvokeFunction", f"{FN}:PlanFunction", None, True),
        ("ConversionStateMachine", "lambda:InvokeFunction", f"{FN}:Other", None, False),
    ],
)  # fmt: skip
def test_what_each_principal_may_and_may_not_do(
    principal: str, action: str, resource: str, prefix: str | None, expected: bool
) -> None:
    assert may(principal, action, resource, prefix) is expected


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize(
    "action", ["s3:PutLifecycleConfiguration", "s3:PutObjectAcl", "s3:PutBucketPolicy", "s3:DeleteBucket"]
)
def test_no_one_changes_buckets_or_acls(principal: str, action: str) -> None:
    for resource in (IN, OUT, f"{OUT}/converted/a/x", f"{OUT}/records/a/x", f"{IN}/incoming/a.nwb"):
        assert not may(principal, action, resource), (principal, action, resource)


CHUNK = f"{OUT}/converted/a/channel-00000_1_2.bin.gz"


@pytest.mark.parametrize("legacy", [False, True])
def test_the_uploaders_may_write_only_what_their_flow_writes(legacy: bool) -> None:
    """UploadFiles and CompleteImport never write a chunk file or the importer's state; the legacy
    flow's UploadFiles records its uploads, the asset flow's writes nothing under the output (the
    asset's own credentials write the asset's prefix: no statement names Pennsieve's bucket)."""
    flow = {"LegacyImport": legacy, "AssetImportWithSecret": not legacy}
    for principal in ("UploadFilesFunction", "CompleteImportFunction"):
        assert may(principal, "s3:GetObject", CHUNK, **flow)
        for name in ("channel-00000_1_2.bin.gz", "channel-00000.metadata.json", "import-state.json",
                     "import-asset.json", "import-claim.json", "import-manifest-x.json"):  # fmt: skip
            assert not may(principal, "s3:PutObject", f"{OUT}/converted/a/{name}", **flow), (principal, name)
        assert not may(principal, "s3:PutObject", "arn:aws:s3:::pennsieve-viewer-assets/viewer-assets/x", **flow)
    uploaded = f"{OUT}/converted/a/import-uploaded-0f1e-00000.json"
    assert may("UploadFilesFunction", "s3:PutObject", uploaded, **flow) is legacy
    assert may("UploadFilesFunction", "s3:ListBucket", OUT, "converted/a/import-uploaded-", **flow) is legacy
    assert may("CompleteImportFunction", "s3:PutObject", f"{OUT}/converted/a/import-failed.json", **flow)
    assert not may("UploadFilesFunction", "s3:PutObject", f"{OUT}/converted/a/import-failed.json", **flow)
    assert may("CompleteImportFunction", "secretsmanager:GetSecretValue", SECRET, **flow) is not legacy


def test_an_sse_kms_input_bucket_is_decrypted_through_s3_only() -> None:
    kms = {"HasInputKmsKey": True, "InputKmsKeyArn": KMS_KEY}
    through_s3 = Request("kms:Decrypt", KMS_KEY, (("kms:ViaService", "s3.us-east-1.amazonaws.com"),))
    directly = Request("kms:Decrypt", KMS_KEY)
    for function in ("PlanFunction", "WriteChunksFunction"):
        assert allowed(statements(function, **kms), through_s3)
        assert not allowed(statements(function, **kms), directly)
        assert not allowed(statements(function), through_s3)  # no key given: no grant
    assert not allowed(statements("UploadFilesFunction", **kms), through_s3)


def test_the_state_machine_may_redrive_its_map_run_children() -> None:
    """A redriven execution redrives its failed Map Run, whose children the state machine's role redrives."""
    child = f"{SM}:execution:stack-conversion/WriteChunks:c1"
    assert may("ConversionStateMachine", "states:RedriveExecution", child)
    assert not may("ConversionStateMachine", "states:RedriveExecution", f"{SM}:execution:another/WriteChunks:c1")
    for function in FUNCTIONS:
        assert not may(function, "states:RedriveExecution", child), function


def test_operators_get_a_policy_to_redrive_conversions_and_nothing_else() -> None:
    from tests.iam import resolve_all

    refs = template_refs(TEMPLATE) | {"AWS::StackName": "stack"}
    policy = resolve_all(TEMPLATE["Resources"]["RedriveOperatorPolicy"]["Properties"]["PolicyDocument"], refs)
    operator = policy["Statement"]
    for execution in (f"{SM}:execution:stack-conversion:e1", f"{SM}:execution:stack-conversion/WriteChunks:c1"):
        assert allowed(operator, Request("states:RedriveExecution", execution))
        assert allowed(operator, Request("states:GetExecutionHistory", execution))
    assert not allowed(operator, Request("states:RedriveExecution", f"{SM}:execution:another:e1"))
    assert not allowed(operator, Request("states:StartExecution", f"{SM}:stateMachine:stack-conversion"))
    assert not allowed(operator, Request("states:StopExecution", f"{SM}:execution:stack-conversion:e1"))
    assert TEMPLATE["Outputs"]["RedriveOperatorPolicyArn"]["Value"] == {"Ref": "RedriveOperatorPolicy"}


def test_the_managed_policies_are_read_as_moto_ships_them() -> None:
    """The vendored copy of the AWS managed policies SAM attaches equals moto's (AWS's own, 2018)."""
    import json

    from moto.iam.aws_managed_policies import aws_managed_policies_data

    from tests.iam import MANAGED_POLICIES

    moto = json.loads(aws_managed_policies_data)
    for arn, policy in json.loads(MANAGED_POLICIES.read_text()).items():
        name = arn.rsplit("/", 1)[-1]
        assert policy["Document"] == moto[name]["Document"], name
    roles = [r for r in TRANSLATED["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert all(r["Properties"].get("ManagedPolicyArns") for r in roles)  # the translator attaches some: read


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_no_principal_may_use_another_queue(principal: str) -> None:
    """SAM's SQS event would attach AWSLambdaSQSQueueExecutionRole (receive and delete on every
    queue of the account): the Starter's event source mapping is explicit, its statement scoped."""
    other = "arn:aws:sqs:us-east-1:123456789012:someone-elses-queue"
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"):
        assert not may(principal, action, other), (principal, action)


def test_the_starter_receives_only_from_the_admission_queue() -> None:
    queue = "arn:aws:sqs:us-east-1:123456789012:admissionqueue-example"
    dead = "arn:aws:sqs:us-east-1:123456789012:admissiondeadletterqueue-example"
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"):
        assert may("StarterFunction", action, queue), action
    assert may("StarterFunction", "sqs:SendMessage", dead)
    assert not may("StarterFunction", "sqs:ReceiveMessage", dead)
    assert not may("StarterFunction", "sqs:ChangeMessageVisibility", queue)  # a deferral is sent again


def test_the_starter_holds_slots_resolves_keys_and_starts_only_conversions() -> None:
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/admissionslotstable-example"
    for action in ("dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"):
        assert may("StarterFunction", action, table), action
    assert not may("StarterFunction", "dynamodb:PutItem", "arn:aws:dynamodb:us-east-1:123456789012:table/other")
    assert may("StarterFunction", "s3:ListBucketVersions", IN, "incoming/a b.nwb")
    assert not may("StarterFunction", "s3:ListBucketVersions", IN, "")
    assert not may("StarterFunction", "s3:GetObject", f"{IN}/incoming/a.nwb")  # it never reads the data
    assert may("StarterFunction", "states:StartExecution", f"{SM}:stateMachine:stack-conversion")
    assert may("StarterFunction", "states:DescribeExecution", f"{SM}:execution:stack-conversion:e1")
    assert not may("StarterFunction", "states:ListExecutions", f"{SM}:stateMachine:stack-conversion")
    assert not may("StarterFunction", "states:StartExecution", f"{SM}:stateMachine:another")


def test_the_evaluator_can_deny() -> None:
    allow = {"Effect": "Allow", "Action": ["s3:Get*"], "Resource": f"{OUT}/records/*"}
    deny = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"{OUT}/records/secret*"}
    assert allowed([allow], Request("s3:GetObject", f"{OUT}/records/a"))
    assert not allowed([allow, deny], Request("s3:GetObject", f"{OUT}/records/secret.json"))
    assert not allowed([allow], Request("s3:PutObject", f"{OUT}/records/a"))
    assert not allowed([], Request("s3:GetObject", f"{OUT}/records/a"))
