"""IAM as AWS enforces it, for the tests: the policies template.yaml gives each function and the
state machine (translated by the SAM translator, as ``sam deploy`` does), a small evaluator of
those policies, and a hook that checks every AWS call a handler or moto's Step Functions
interpreter makes against its principal's policy before moto answers it.

The evaluator knows what our policies use: Allow/Deny, actions and resources with ``*`` and
``?``, and the conditions ``StringLike``, ``StringEquals``, ``ArnLike`` and ``Bool`` (a key the
request does not have never matches). An S3 call is mapped to the IAM actions AWS authorizes it
with (a GET of a version is ``s3:GetObjectVersion``, a listing is ``s3:ListBucket`` on the bucket
with ``s3:prefix``...); a call without a mapping fails the test, so nothing is allowed unseen. As
on AWS, a GET or HEAD of a missing key answers 403 instead of 404 to a principal that may not
list the bucket.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from statemachine.render import load_template

# The access key moto's Step Functions interpreter signs its calls with (ItemReader, ResultWriter, lambda:invoke).
STATE_MACHINE_KEY = "ak"
STATE_MACHINE = "ConversionStateMachine"


# --- the template's policies ---------------------------------------------------------------------


def translated_template(template: dict[str, Any] | None = None) -> dict[str, Any]:
    """template.yaml through the SAM translator: the roles and inline policies ``sam deploy`` creates."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    source = copy.deepcopy(template or load_template())
    for resource in source["Resources"].values():
        props = resource.get("Properties", {})
        for uri in ("CodeUri", "ContentUri", "DefinitionUri"):
            if uri in props:
                props[uri] = "s3://example-artifacts/code.zip"
    # No managed policy is named (only ARNs), so the translator needs no IAM look-up; nor a network.
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1"))
    return dict(translator.translate(source, parameter_values={}, get_managed_policy_map=dict))


_NO_VALUE = object()
_SUB = re.compile(r"\$\{([A-Za-z0-9_:.]+)\}")


def resolve_all(value: Any, refs: dict[str, Any]) -> Any:
    """Every intrinsic function of ``value`` resolved with ``refs`` (names, ``Name.Attr``, conditions)."""
    if isinstance(value, list):
        items = [resolve_all(v, refs) for v in value]
        return [v for v in items if v is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return _NO_VALUE if arg == "AWS::NoValue" else refs[arg]
        if fn == "Fn::GetAtt":
            return refs[".".join(arg) if isinstance(arg, list) else arg]
        if fn == "Fn::If":
            cond, yes, no = arg
            return resolve_all(yes if refs[cond] else no, refs)
        if fn == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            values = {**refs, **{k: resolve_all(v, refs) for k, v in local.items()}}
            return _SUB.sub(lambda m: str(values[m.group(1)]), text.replace("${!", "\0")).replace("\0", "${")
        if fn == "Fn::Join":
            sep, parts = arg
            return sep.join(str(p) for p in resolve_all(parts, refs))
    out = {k: resolve_all(v, refs) for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not _NO_VALUE}


# The AWS managed policies SAM attaches to our roles (AWSLambdaBasicExecutionRole,
# AWSXrayWriteOnlyAccess, and for a SAM SQS event AWSLambdaSQSQueueExecutionRole), as moto ships
# them (tests/unit/test_cloud_iam.py keeps this copy equal to moto's).
MANAGED_POLICIES = Path(__file__).with_name("aws_managed_policies.json")


def managed_policy_statements(arn: str) -> list[dict[str, Any]]:
    """The statements of the AWS managed policy ``arn`` (its default version)."""
    known: dict[str, Any] = json.loads(MANAGED_POLICIES.read_text())
    if arn not in known:
        raise AssertionError(f"{arn} is attached but not in {MANAGED_POLICIES.name}: add its document")
    found = known[arn]["Document"]["Statement"]
    return list(found if isinstance(found, list) else [found])


def role_statements(translated: dict[str, Any], resource: str, refs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every policy statement of ``resource``'s role (``<resource>Role``), resolved: its inline
    policies and the AWS managed policies the translator attached (what AWS evaluates)."""
    role = translated["Resources"][f"{resource}Role"]["Properties"]
    statements: list[dict[str, Any]] = []
    for policy in resolve_all(role.get("Policies", []), refs):
        document = policy["PolicyDocument"]
        found = document["Statement"]
        statements.extend(found if isinstance(found, list) else [found])
    for arn in resolve_all(role.get("ManagedPolicyArns", []), refs):
        statements.extend(managed_policy_statements(arn))
    return statements


# --- the evaluator -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One IAM authorization: action, resource ARN and the condition keys the request has."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        extra = "".join(f" {k}={v!r}" for k, v in self.context)
        return f"{self.action} on {self.resource}{extra}"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, *, case: bool = True) -> bool:
    regex = fnmatch.translate(pattern) if case else fnmatch.translate(pattern.lower())
    return re.fullmatch(regex, value if case else value.lower()) is not None


def _conditions_hold(conditions: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, wanted in tests.items():
            have = context.get(key)
            if have is None:
                return False
            patterns = [str(w) for w in _as_list(wanted)]
            if operator in ("StringLike", "ArnLike"):
                ok = any(_like(p, have) for p in patterns)
            elif operator in ("StringEquals", "ArnEquals"):
                ok = have in patterns
            elif operator == "Bool":
                ok = have.lower() in (p.lower() for p in patterns)
            else:
                raise AssertionError(f"the test evaluator does not know the condition operator {operator}")
            if not ok:
                return False
    return True


def statement_matches(statement: dict[str, Any], request: Request) -> bool:
    if "NotAction" in statement or "NotResource" in statement:
        raise AssertionError(f"the test evaluator does not know NotAction/NotResource: {statement}")
    if not any(_like(a, request.action, case=False) for a in _as_list(statement["Action"])):
        return False
    if not any(_like(r, request.resource) for r in _as_list(statement["Resource"])):
        return False
    return _conditions_hold(statement.get("Condition", {}), dict(request.context))


def allowed(statements: list[dict[str, Any]], request: Request) -> bool:
    """AWS's rule for one identity policy: an explicit Deny wins, else an Allow is needed."""
    matching = [s for s in statements if statement_matches(s, request)]
    if any(s["Effect"] == "Deny" for s in matching):
        return False
    return any(s["Effect"] == "Allow" for s in matching)


# --- AWS calls → IAM requests --------------------------------------------------------------------


def _s3_object(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def iam_requests(service: str, operation: str, params: dict[str, Any], region: str) -> list[Request]:
    """The IAM authorizations AWS checks for one API call (those our code and Step Functions make)."""
    if service == "s3":
        bucket = params.get("Bucket", "")
        key = params.get("Key", "")
        versioned = "VersionId" in params
        if operation in ("GetObject", "HeadObject"):
            return [Request("s3:GetObjectVersion" if versioned else "s3:GetObject", _s3_object(bucket, key))]
        if operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
            return [Request("s3:PutObject", _s3_object(bucket, key))]
        if operation == "DeleteObject":
            return [Request("s3:DeleteObjectVersion" if versioned else "s3:DeleteObject", _s3_object(bucket, key))]
        if operation == "DeleteObjects":
            return [
                Request(
                    "s3:DeleteObjectVersion" if "VersionId" in o else "s3:DeleteObject", _s3_object(bucket, o["Key"])
                )
                for o in params["Delete"]["Objects"]
            ]
        if operation == "AbortMultipartUpload":
            return [Request("s3:AbortMultipartUpload", _s3_object(bucket, key))]
        if operation == "ListParts":
            return [Request("s3:ListMultipartUploadParts", _s3_object(bucket, key))]
        if operation == "CopyObject":
            src = params["CopySource"]
            src_bucket, src_key = (src["Bucket"], src["Key"]) if isinstance(src, dict) else src.split("/", 1)
            return [
                Request("s3:PutObject", _s3_object(bucket, key)),
                Request("s3:GetObject", _s3_object(src_bucket, src_key)),
            ]
        if operation in ("ListObjectsV2", "ListObjects", "ListObjectVersions"):
            action = "s3:ListBucketVersions" if operation == "ListObjectVersions" else "s3:ListBucket"
            return [Request(action, f"arn:aws:s3:::{bucket}", (("s3:prefix", params.get("Prefix", "")),))]
    if service == "secretsmanager" and operation == "GetSecretValue":
        return [Request("secretsmanager:GetSecretValue", params["SecretId"])]
    if service == "stepfunctions" and operation in ("StartExecution", "ListExecutions"):
        return [Request(f"states:{operation}", params["stateMachineArn"])]
    if service == "stepfunctions" and operation == "DescribeExecution":
        return [Request("states:DescribeExecution", params["executionArn"])]
    if service == "dynamodb":
        return _dynamodb_requests(operation, params, region)
    if service == "sqs" and operation in ("ChangeMessageVisibility", "SendMessage"):
        # https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (or moto's host) -> arn:aws:sqs:REGION:ACCOUNT:NAME
        account, name = params["QueueUrl"].rstrip("/").split("/")[-2:]
        return [Request(f"sqs:{operation}", f"arn:aws:sqs:{region}:{account}:{name}")]
    if service == "sqs" and operation == "GetQueueUrl":
        account = params.get("QueueOwnerAWSAccountId", "123456789012")
        return [Request("sqs:GetQueueUrl", f"arn:aws:sqs:{region}:{account}:{params['QueueName']}")]
    if service == "lambda" and operation == "Invoke":
        name = params["FunctionName"]
        arn = name if name.startswith("arn:") else f"arn:aws:lambda:{region}:123456789012:function:{name}"
        return [Request("lambda:InvokeFunction", arn)]
    raise AssertionError(
        f"tests/iam.py has no IAM mapping for {service}.{operation}: add the actions AWS checks for it"
    )


def _dynamodb_requests(operation: str, params: dict[str, Any], region: str) -> list[Request]:
    """A transaction is authorized item by item, with each item's own action (UpdateItem, PutItem...)."""

    def table(name: str) -> str:
        return f"arn:aws:dynamodb:{region}:123456789012:table/{name}"

    if operation == "TransactWriteItems":
        actions = {
            "Update": "UpdateItem",
            "Put": "PutItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
        }
        return [
            Request(f"dynamodb:{actions[kind]}", table(item["TableName"]))
            for entry in params["TransactItems"]
            for kind, item in entry.items()
        ]
    if operation in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"):
        return [Request(f"dynamodb:{operation}", table(params["TableName"]))]
    raise AssertionError(f"tests/iam.py has no IAM mapping for dynamodb.{operation}")


# --- enforcement ---------------------------------------------------------------------------------


@dataclass
class Denial:
    principal: str
    call: str
    request: Request

    def __str__(self) -> str:
        return f"{self.principal} may not {self.request} ({self.call})"


@dataclass
class Enforcer:
    """Checks AWS calls against the policy of the principal whose access key signs them.

    A function's clients are made with :meth:`client` (its access key is its logical id); calls a
    handler makes with the default credentials (Powertools' Secrets Manager client) count as the
    handler's while :meth:`acting_as` runs it on that thread. Calls of the test itself (default
    credentials, no handler running) are not checked: they stand for the user and the deployment.
    """

    policies: Callable[[str], list[dict[str, Any]]]
    region: str = "us-east-1"
    denials: list[Denial] = field(default_factory=list)
    checked: list[tuple[str, Request]] = field(default_factory=list)
    principals: dict[str, str] = field(default_factory=lambda: {STATE_MACHINE_KEY: STATE_MACHINE})
    # Keys whose authority is elsewhere: the upload credentials Pennsieve issues for a viewer asset
    # (the fake's S3 gate checks them); calls signed with them are not the function's.
    external: Callable[[str], bool] = lambda key: False
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, principal: str, service: str, **options: Any) -> Any:
        """A client signing with ``principal``'s own credentials (its access key is the principal)."""
        import boto3

        self.principals[principal] = principal
        return boto3.client(
            service,
            **options,
            region_name=self.region,
            aws_access_key_id=principal,
            aws_secret_access_key="not-a-secret",
            aws_session_token="",
        )

    def acting_as(self, principal: str | None) -> _Acting:
        """Calls with the default credentials on this thread are ``principal``'s (None: the test's own)."""
        return _Acting(self, principal)

    def principal_of(self, client: Any) -> str | None:
        credentials = client._request_signer._credentials
        key = credentials.get_frozen_credentials().access_key if credentials else None
        if key is not None and self.external(key):
            return None
        if key in self.principals:
            return self.principals[key]
        return getattr(self._local, "principal", None)

    def check(self, client: Any, operation: str, params: dict[str, Any], call: Callable[[], Any]) -> Any:
        principal = self.principal_of(client)
        if principal is None:
            return call()
        service = client.meta.service_model.service_name
        statements = self.policies(principal)
        for request in iam_requests(service, operation, params, self.region):
            with self._lock:
                self.checked.append((principal, request))
            if not allowed(statements, request):
                denial = Denial(principal, f"{service}.{operation}", request)
                with self._lock:
                    self.denials.append(denial)
                raise ClientError(
                    {
                        "Error": {"Code": "AccessDenied", "Message": str(denial)},
                        "ResponseMetadata": {"HTTPStatusCode": 403},
                    },
                    operation,
                )
        try:
            return call()
        except ClientError as exc:
            # AWS answers 403, not 404, for a missing key to a principal that may not list the bucket.
            missing = exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
            if service == "s3" and operation in ("GetObject", "HeadObject") and missing:
                listing = Request("s3:ListBucket", f"arn:aws:s3:::{params.get('Bucket', '')}")
                if not allowed(statements, listing):
                    raise ClientError(
                        {
                            "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                            "ResponseMetadata": {"HTTPStatusCode": 403},
                        },
                        operation,
                    ) from None
            raise

    def install(self, monkeypatch: Any) -> None:
        """Route every botocore call through :meth:`check` (for the rest of the test)."""
        from botocore.client import BaseClient

        real = BaseClient._make_api_call
        enforcer = self

        def checked_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            return enforcer.check(client, operation_name, api_params, lambda: real(client, operation_name, api_params))

        monkeypatch.setattr(BaseClient, "_make_api_call", checked_call)


class _Acting:
    def __init__(self, enforcer: Enforcer, principal: str | None) -> None:
        self.enforcer, self.principal = enforcer, principal

    def __enter__(self) -> None:
        self.previous = getattr(self.enforcer._local, "principal", None)
        self.enforcer._local.principal = self.principal

    def __exit__(self, *exc: object) -> None:
        self.enforcer._local.principal = self.previous


def template_policies(refs: dict[str, Any], env: Callable[[], dict[str, str]]) -> Callable[[str], list[dict[str, Any]]]:
    """principal → its resolved statements; the secret's ARN is read from ``env()`` when first needed."""
    translated = translated_template()
    cache: dict[str, list[dict[str, Any]]] = {}

    def policies(principal: str) -> list[dict[str, Any]]:
        if principal not in cache:
            environ = env()
            secret = environ.get("PENNSIEVE_SECRET_ARN", "")
            legacy = environ.get("LEGACY_IMPORT_FLOW", "false").strip().lower() == "true"
            values = {**refs, "PennsieveSecretArn": secret, "HasSecret": bool(secret), "LegacyImport": legacy,
                      "AssetImportWithSecret": bool(secret) and not legacy}  # fmt: skip
            cache[principal] = role_statements(translated, principal, values)
        return cache[principal]

    return policies
