"""The template's functions run in this process: moto's Lambda holds them (empty code), and each
invocation moto's Step Functions makes calls our handler, with clients that sign as that function
(IAM enforced by tests/iam.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.iam import Enforcer


def functions_in_process(
    functions: dict[str, str], template_role: str, enforcer: Enforcer, monkeypatch: pytest.MonkeyPatch, region: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template's functions in moto's Lambda (empty code), and their handler modules with
    clients that sign with each function's own credentials: (their ARNs by ``<Resource>.Arn``, the
    modules by resource)."""
    import importlib
    import io
    import zipfile

    import boto3

    lam = boto3.client("lambda", region_name=region)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("app.py", "")
    refs: dict[str, Any] = {}
    modules = {}
    for resource, module_name in functions.items():
        fn = lam.create_function(
            FunctionName=resource,
            Runtime="python3.12",
            Role=template_role,
            Handler="app.lambda_handler",
            Code={"ZipFile": code.getvalue()},
            Architectures=["arm64"],
        )
        refs[f"{resource}.Arn"] = fn["FunctionArn"]
        module = importlib.import_module(module_name)
        # Clients signing with the function's own credentials (IAM enforced), configured as the
        # handlers' own (adaptive retries, pool size).
        for attr, service in (("s3", "s3"), ("sfn", "stepfunctions"), ("sqs", "sqs"), ("dynamodb", "dynamodb")):
            if hasattr(module, attr):
                client = getattr(module, attr)
                monkeypatch.setattr(module, attr, enforcer.client(resource, service, config=client.meta.config))
        modules[resource] = module
    return refs, modules


def invoker(
    modules: dict[str, Any],
    enforcer: Enforcer,
    invocations: list[tuple[str, dict[str, Any]]],
    service_faults: dict[str, list[Exception]],
    context: Callable[[str], Any],
) -> Callable[..., tuple[str, bool, str]]:
    """moto's ``LambdaFunction._invoke_lambda`` as a call of our handler, returning what the Lambda
    runtime returns (the result, or the runtime's error payload when the handler raises)."""
    import traceback

    def invoke(self: Any, event: Any = None) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str) else event
        invocations.append((self.function_name, payload))
        faults = service_faults.get(self.function_name)
        if faults:
            raise faults.pop(0)
        try:
            with enforcer.acting_as(self.function_name):
                result = modules[self.function_name].lambda_handler(payload, context(self.function_name))
        except Exception as exc:  # what the Python Lambda runtime returns for an unhandled error
            error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "requestId": "00000000-0000-0000-0000-000000000000",
                "stackTrace": traceback.format_tb(exc.__traceback__)[-3:],
            }
            return json.dumps(error), True, ""
        return json.dumps(result), False, ""

    return invoke
