"""Fixtures of the cloud tests: moto (S3, Lambda, Step Functions), NWB files, event fixtures.

Nothing here talks to AWS: moto runs in process, with fake credentials and region set before
any boto3 client is made.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from statemachine.render import load_template, render, resolve, substitutions, template_refs
from tests.iam import Enforcer, template_policies
from tests.lambda_in_process import functions_in_process, invoker

# The caller's real AWS settings, kept for the deployed-stack test only (every other test uses moto).
REAL_AWS_ENV = {
    k: os.environ[k]
    for k in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_SAM_STACK_NAME",
    )
    if os.environ.get(k)
}

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "nwb2pennsieve-test",
    "POWERTOOLS_SERVICE_NAME": "nwb2pennsieve",
    "SAM_CLI_TELEMETRY": "0",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
REGION = "us-east-1"
# The buckets the event fixtures name (also what `sam local invoke -e` users replace).
INPUT_BUCKET = "nwb2pennsieve-input-example"
OUTPUT_BUCKET = "nwb2pennsieve-output-example"
EXAMPLE_KEY = "incoming/sub-01_ses-01.nwb"


def load_event(name: str) -> dict[str, Any]:
    """One of the JSON events in ``events/`` (the ones ``sam local invoke -e`` uses)."""
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


@dataclass
class FakeLambdaContext:
    function_name: str = "test"
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    log_group_name: str = "/aws/lambda/test"
    log_stream_name: str = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


# --- template.yaml -------------------------------------------------------------------------------


def function_environment(*, output_bucket: str, **overrides: str) -> dict[str, str]:
    """The Globals environment of template.yaml, resolved with its defaults."""
    template = load_template()
    refs = template_refs(template, region=REGION, OutputBucket=output_bucket)
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    env = {k: str(resolve(v, refs)) for k, v in variables.items()}
    env.update(overrides)
    return env


# --- NWB files ---------------------------------------------------------------------------------


def make_nwb(
    path: Path,
    *,
    channels: int = 8,
    samples: int = 40_000,
    chunks: tuple[int, int] | None = (4096, 4),
    compression: str | None = "gzip",
    shuffle: bool = False,
    dtype: str = "int16",
    second_series: bool = True,
    seed: int = 0,
) -> Path:
    """A real NWB file (pynwb): one int16 ElectricalSeries and, optionally, a float32 one with gaps."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    rng = np.random.default_rng(seed)
    nwb = NWBFile(
        session_description="cloud test",
        identifier=f"cloud-test-{seed}",
        session_start_time=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    device = nwb.create_device("probe")
    group = nwb.create_electrode_group("shank0", description="s", location="CA1", device=device)
    n_electrodes = channels + (3 if second_series else 0)
    for _ in range(n_electrodes):
        nwb.add_electrode(group=group, location="CA1")
    data = rng.normal(0, 300, (samples, channels)).astype(dtype)
    options: dict[str, Any] = {}
    if chunks:
        options["chunks"] = chunks
    if compression:
        options["compression"] = compression
    if shuffle:
        options["shuffle"] = True
    wrapped = H5DataIO(data, **options) if options else data
    nwb.add_acquisition(
        ElectricalSeries(
            name="ElectricalSeries",
            data=wrapped,
            electrodes=nwb.create_electrode_table_region(list(range(channels)), "probe"),
            rate=30_000.0,
            starting_time=0.5,
            conversion=0.195e-6,
        )
    )
    if second_series:
        n2 = 5_000
        ts = np.arange(n2) / 1_000.0
        ts[3_000:] += 7.25  # a gap: a chunk file never spans it
        nwb.add_acquisition(
            ElectricalSeries(
                name="LFP",
                data=rng.normal(0, 1e-4, (n2, 3)).astype("float32"),
                electrodes=nwb.create_electrode_table_region(list(range(channels, channels + 3)), "lfp"),
                timestamps=ts,
            )
        )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


@pytest.fixture(scope="session")
def nwb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nwb")


@pytest.fixture(scope="session")
def example_nwb(nwb_dir: Path) -> Path:
    """The file the event fixtures describe: two series, chunked gzip + a float32 series with a gap."""
    return make_nwb(nwb_dir / "sub-01_ses-01.nwb")


@pytest.fixture(scope="session")
def contiguous_nwb(nwb_dir: Path) -> Path:
    return make_nwb(nwb_dir / "contiguous.nwb", chunks=None, compression=None, channels=5, samples=30_000, seed=1)


@pytest.fixture(scope="session")
def shuffled_nwb(nwb_dir: Path) -> Path:
    return make_nwb(
        nwb_dir / "shuffled.nwb",
        chunks=(3000, 3),
        shuffle=True,
        channels=7,
        samples=20_000,
        seed=2,
        second_series=False,
    )


# --- moto ----------------------------------------------------------------------------------------


@pytest.fixture
def aws() -> Iterator[None]:
    """moto for every service, with the Step Functions interpreter executing definitions."""
    from moto import mock_aws

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


def scale_retry_waits(monkeypatch: pytest.MonkeyPatch, factor: float) -> None:
    """moto's interpreter really sleeps each Retry interval: ``factor`` times shorter."""
    import time

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class ScaledTime:
        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(seconds * factor)

    monkeypatch.setattr(retrier_decl, "time", ScaledTime)


@pytest.fixture
def quick_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Retry interval 1,000 times shorter (the budgets themselves are checked on the
    definition, tests/unit/test_cloud_contracts.py)."""
    scale_retry_waits(monkeypatch, 1 / 1000)


@pytest.fixture(autouse=True)
def fresh_secrets() -> Iterator[None]:
    """Powertools caches secrets (and its Secrets Manager client) across warm invocations: start
    each test without them, so a test reads its own moto secret with a client made under moto."""
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    yield
    parameters.clear_caches()


@pytest.fixture
def s3(aws: None) -> Any:
    import boto3

    client = boto3.client("s3", region_name=REGION)
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=INPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture
def cloud_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The functions' environment as template.yaml sets it (with its parameter defaults)."""
    env = function_environment(output_bucket=OUTPUT_BUCKET)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


# --- the state machine under moto ----------------------------------------------------------------

FUNCTIONS = {
    "PlanFunction": "functions.plan.app",
    "WriteChunksFunction": "functions.write_chunks.app",
    "FinalizeFunction": "functions.finalize.app",
    "UploadFilesFunction": "functions.upload_files.app",
    "CompleteImportFunction": "functions.complete_import.app",
    "StarterFunction": "functions.starter.app",
}


@dataclass
class Stack:
    """The deployed shape of template.yaml, in moto: buckets, the functions, the state machine."""

    s3: Any
    sfn: Any
    state_machine_arn: str
    invocations: list[tuple[str, dict[str, Any]]]
    # Exceptions the Lambda service raises (instead of invoking) on the next calls of a function.
    service_faults: dict[str, list[Exception]]
    template: dict[str, Any]
    refs: dict[str, Any]
    role: str
    # Every AWS call of a handler or of the state machine, checked against its template policy.
    iam: Enforcer

    def redeploy(self, **parameters: Any) -> None:
        """Replace the state machine by one rendered with other parameter values (e.g. a
        concurrency), under the same name (its ARN, which the Starter's policy names, stays)."""
        definition = render(substitutions(self.template, {**self.refs, **parameters}))
        self.sfn.update_state_machine(stateMachineArn=self.state_machine_arn, definition=definition)

    def run(self, execution_input: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        import time
        import uuid

        arn = self.sfn.start_execution(
            stateMachineArn=self.state_machine_arn, name=uuid.uuid4().hex, input=json.dumps(execution_input)
        )["executionArn"]
        deadline = time.monotonic() + timeout
        while True:
            desc: dict[str, Any] = self.sfn.describe_execution(executionArn=arn)
            if desc["status"] != "RUNNING":
                return desc
            if time.monotonic() > deadline:
                raise AssertionError(f"execution still running after {timeout} s")
            time.sleep(0.02)

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        return out

    def published(self, key: str, output_prefix: str = "converted/") -> dict[str, bytes]:
        """The published output of input ``key``: the version folder its ``@current.json`` names,
        every object by its name in that folder ({} when nothing is published)."""
        return published(self.s3, key, output_prefix)

    def published_folder(self, key: str, output_prefix: str = "converted/") -> str:
        """The key prefix of the version folder ``key``'s ``@current.json`` names ("" before a publish)."""
        return published_folder(self.s3, key, output_prefix)


def published_folder(s3: Any, key: str, output_prefix: str = "converted/") -> str:
    """The version folder a reader of the output bucket finds for input ``key`` through its
    ``@current.json`` ("" before the first publish)."""
    from nwb2pennsieve.cloud.layout import output_folder
    from nwb2pennsieve.cloud.models import S3Prefix
    from nwb2pennsieve.cloud.versions import read_pointer

    pointer = read_pointer(s3, S3Prefix(bucket=OUTPUT_BUCKET, prefix=output_folder(output_prefix, key)))
    return pointer.folder if pointer else ""


def published(s3: Any, key: str, output_prefix: str = "converted/") -> dict[str, bytes]:
    """What a reader finds for input ``key``: every object of its published version folder, by its
    name there ({} before the first publish)."""
    folder = published_folder(s3, key, output_prefix)
    if not folder:
        return {}
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=OUTPUT_BUCKET, Prefix=folder):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(folder) :]] = s3.get_object(Bucket=OUTPUT_BUCKET, Key=obj["Key"])["Body"].read()
    return out


@pytest.fixture
def stack(s3: Any, cloud_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """moto's Step Functions runs the real ASL; its Lambda invocations run our handlers in process.

    moto's Lambda would start a container for an invocation; here ``LambdaFunction._invoke_lambda``
    is replaced by a call of the handler the function's name maps to, returning what the Lambda
    runtime returns (the result, or the runtime's error payload when the handler raises).

    IAM is enforced (tests/iam.py): each handler's clients sign with its own credentials, the state
    machine's calls with moto's, and every call is checked against the policy template.yaml gives
    that function or the state machine's role; a call it does not allow answers AccessDenied, and
    any denial fails the test at teardown (a handler that swallowed it included).
    """
    import boto3
    from moto.awslambda.models import LambdaFunction

    template = load_template()
    enforcer = Enforcer(policies=lambda principal: policies(principal))
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="nwb2pennsieve-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    refs, modules = functions_in_process(FUNCTIONS, role, enforcer, monkeypatch, REGION)
    # The state machine below is "test-conversion"; each function's name is its resource's.
    iam_refs: dict[str, Any] = {"AWS::StackName": "test", **{resource: resource for resource in FUNCTIONS}}
    invocations: list[tuple[str, dict[str, Any]]] = []
    service_faults: dict[str, list[Exception]] = {}
    invoke = invoker(modules, enforcer, invocations, service_faults, FakeLambdaContext)
    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", invoke)

    all_refs = template_refs(template, OutputBucket=OUTPUT_BUCKET, InputBucket=INPUT_BUCKET, **refs)
    policies = template_policies({**all_refs, **iam_refs}, lambda: dict(os.environ))
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(
        name="test-conversion", definition=render(substitutions(template, all_refs)), roleArn=role
    )["stateMachineArn"]
    enforcer.install(monkeypatch)
    yield Stack(
        s3=s3,
        sfn=sfn,
        state_machine_arn=arn,
        invocations=invocations,
        service_faults=service_faults,
        template=template,
        refs=all_refs,
        role=role,
        iam=enforcer,
    )
    assert not enforcer.denials, "calls the template's IAM policies do not allow:\n" + "\n".join(
        str(d) for d in enforcer.denials
    )


def use_import_secret(monkeypatch: pytest.MonkeyPatch, pennsieve_url: str) -> None:
    """A Pennsieve secret in moto's Secrets Manager and the environment that points the importer at
    it and at the fake Pennsieve server (``pennsieve_url``)."""
    import boto3

    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="pennsieve", SecretString=json.dumps({"SESSION_TOKEN": "session-token-789"})
    )["ARN"]
    monkeypatch.setenv("PENNSIEVE_SECRET_ARN", secret)
    monkeypatch.setenv("PENNSIEVE_API_HOST", pennsieve_url)
    monkeypatch.setenv("PENNSIEVE_API_HOST2", pennsieve_url)
