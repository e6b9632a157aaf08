"""One conversion, one function invocation at a time: the walkthrough ``make local-invoke`` runs.

Step Functions builds each function's event from the previous state's output: the WriteChunks
and UploadFiles maps hand each write batch or upload batch to a function with their ItemSelector, Finalize
gets Plan's output, NextImportStep picks what follows Finalize. ``sam local invoke`` has no state
machine, and the events in ``events/`` name an object version and records that exist in no one's
bucket. This module uploads an NWB file to an input bucket, invokes Plan on it, and derives every
later event from the real output and records (``write-batches.json``, the upload batches) as the
definition does, then invokes the functions in the state machine's order.

    python -m statemachine.walkthrough --input-bucket IN --output-bucket OUT   # real S3
    python -m statemachine.walkthrough --local-s3                              # a moto server

An invocation goes through an :data:`Invoke`: ``sam local invoke`` (:func:`sam_invoker`, Docker)
or the handlers in this process (:func:`process_invoker`, no Docker). docs/cloud.md has the walkthrough.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nwb2pennsieve.cloud.models import (
    CompleteImportInput,
    FinalizeInput,
    FinalizeOutput,
    PlanInput,
    PlanOutput,
    S3Ref,
    Superseded,
    UploadFilesInput,
    WriteChunksInput,
)
from nwb2pennsieve.errors import Nwb2PennsieveError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# (function's logical id in template.yaml, event) -> the function's response.
Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]

# The template's functions and their handler modules (functions/<name>/app.py).
HANDLERS = {
    "PlanFunction": "plan",
    "WriteChunksFunction": "write_chunks",
    "FinalizeFunction": "finalize",
    "UploadFilesFunction": "upload_files",
    "CompleteImportFunction": "complete_import",
}
SAMPLE = Path(str(resources.files("nwb2pennsieve") / "sample" / "sample.nwb"))
DEFAULT_KEY = "incoming/sample.nwb"
LOCAL_INPUT_BUCKET = "nwb2pennsieve-input-local"
LOCAL_OUTPUT_BUCKET = "nwb2pennsieve-output-local"


class WalkthroughError(Nwb2PennsieveError):
    """A step of the walkthrough failed (the function's error, or ``sam`` itself)."""


# --- the events, derived as the definition derives them ------------------------------------------


def write_chunks_events(planned: PlanOutput, items: list[Any]) -> list[dict[str, Any]]:
    """The WriteChunks map's ItemSelector: source, output and plan of Plan's output, and one item
    of write-batches.json as it is; each event is checked against WriteChunksInput."""
    common = {"source": planned.source.dump(), "output": planned.output.dump(), "plan": planned.plan.dump()}
    events = [common | {"batch": item} for item in items]
    for event in events:
        WriteChunksInput.model_validate(event)
    return events


def finalize_event(planned: PlanOutput) -> FinalizeInput:
    """Finalize's input: Plan's output (the map adds only ``writeChunks``, its map run, which a
    local walkthrough does not have)."""
    return FinalizeInput.model_validate(planned.dump())


def next_import_step(finalized: FinalizeOutput) -> Literal["Converted", "CompleteImport", "UploadFiles"]:
    """The NextImportStep Choice: no upload plan -> Converted; no upload batch left -> CompleteImport."""
    if finalized.upload is None:
        return "Converted"
    return "CompleteImport" if finalized.upload.batches == 0 else "UploadFiles"


def upload_files_events(finalized: FinalizeOutput, items: list[Any]) -> list[dict[str, Any]]:
    """The UploadFiles map's ItemSelector: source, the upload plan, and one item of
    upload-batches.json as it is; each event is checked against UploadFilesInput."""
    upload = finalized.upload
    if upload is None:
        return []
    common = {"source": finalized.source, "upload": upload.dump()}
    events = [common | {"batch": item} for item in items]
    for event in events:
        UploadFilesInput.model_validate(event)
    return events


def complete_import_event(finalized: FinalizeOutput) -> CompleteImportInput:
    """CompleteImport's input: Finalize's output (the map adds only ``uploadFiles``, its map run)."""
    return CompleteImportInput.model_validate(finalized.dump())


def read_json(s3: S3Client, ref: S3Ref) -> Any:
    return json.loads(s3.get_object(Bucket=ref.bucket, Key=ref.key)["Body"].read())


@dataclass(frozen=True)
class Step:
    function: str
    event: dict[str, Any]
    response: dict[str, Any]


def walk(invoke: Invoke, s3: S3Client, execution_input: dict[str, Any]) -> list[Step]:
    """Run one conversion through ``invoke`` in the state machine's order; return every step.

    ``s3`` reads the lists the maps' ItemReaders would read (write-batches.json, upload-batches.json).
    """
    steps: list[Step] = []

    def call(function: str, event: dict[str, Any]) -> dict[str, Any]:
        response = invoke(function, event)
        steps.append(Step(function, event, response))
        return response

    PlanInput.parse(execution_input)  # a malformed input fails here, as Plan would
    answer = call("PlanFunction", execution_input)
    if answer.get("outcome") == "superseded":  # PlanOutcome: a newer version exists
        return steps
    planned = PlanOutput.model_validate(answer)
    for event in write_chunks_events(planned, read_json(s3, planned.write_batches)):
        call("WriteChunksFunction", event)
    answer = call("FinalizeFunction", finalize_event(planned).dump())
    if answer.get("outcome") == "superseded":  # FinalizeOutcome
        return steps
    finalized = FinalizeOutput.model_validate(answer)
    step = next_import_step(finalized)
    if step == "Converted":
        return steps
    if step == "UploadFiles" and finalized.upload is not None:
        for event in upload_files_events(finalized, read_json(s3, finalized.upload.upload_batches)):
            call("UploadFilesFunction", event)
    call("CompleteImportFunction", complete_import_event(finalized).dump())
    return steps


def upload_example(s3: S3Client, path: Path, bucket: str, key: str) -> dict[str, Any]:
    """Put ``path`` at ``s3://bucket/key``; return Plan's by-hand input pinning the new version."""
    with path.open("rb") as body:
        put = s3.put_object(Bucket=bucket, Key=key, Body=body)
    event: dict[str, Any] = {"bucket": bucket, "key": key}
    if put.get("VersionId"):
        event["versionId"] = put["VersionId"]
    return event


# --- invokers ------------------------------------------------------------------------------------


def _raise_on_error(function: str, response: Any) -> dict[str, Any]:
    if not isinstance(response, dict):
        raise WalkthroughError(f"{function} returned {response!r}, not an object")
    if "errorType" in response:
        raise WalkthroughError(f"{function} failed: {response['errorType']}: {response.get('errorMessage', '')}")
    return response


def sam_invoker(
    template: Path, env_vars: Path, events_dir: Path, *, sam: str = "sam", extra: tuple[str, ...] = ()
) -> Invoke:
    """``sam local invoke`` each function (Docker); each event is kept in ``events_dir``."""
    counter = iter(range(1, 10_000))

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        events_dir.mkdir(parents=True, exist_ok=True)
        path = events_dir / f"{next(counter):02d}-{HANDLERS[function]}.json"
        path.write_text(json.dumps(event, indent=2) + "\n")
        command = [sam, "local", "invoke", function, "-t", str(template), "-e", str(path)]
        command += ["--env-vars", str(env_vars), "--skip-pull-image", *extra]
        print(f"$ {' '.join(command)}", file=sys.stderr)  # noqa: T201 - the walkthrough shows what it runs
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        sys.stderr.write(done.stderr)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        if not lines:
            raise WalkthroughError(f"sam local invoke {function} answered nothing (exit {done.returncode})")
        try:
            response = json.loads(lines[-1])
        except json.JSONDecodeError:
            raise WalkthroughError(f"sam local invoke {function} answered {lines[-1][:200]!r}") from None
        path.with_suffix(".response.json").write_text(json.dumps(response, indent=2) + "\n")
        return _raise_on_error(function, response)

    return invoke


class _Context:
    """The few LambdaContext attributes the handlers' Powertools decorators read."""

    function_name = "walkthrough"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:walkthrough"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def handler_modules() -> dict[str, Any]:
    """The ``app`` module of every function, by its logical id (imported here: they read their
    environment when imported)."""
    from functions.complete_import import app as complete_import
    from functions.finalize import app as finalize
    from functions.plan import app as plan
    from functions.upload_files import app as upload_files
    from functions.write_chunks import app as write_chunks

    modules = {"plan": plan, "write_chunks": write_chunks, "finalize": finalize}
    modules |= {"upload_files": upload_files, "complete_import": complete_import}
    return {function: modules[name] for function, name in HANDLERS.items()}


def process_invoker(handlers: dict[str, Any] | None = None) -> Invoke:
    """The handlers of ``functions/`` in this process (run from the project root; no Docker).

    ``handlers`` maps a function's logical id to its ``app`` module (default: :func:`handler_modules`).
    """
    modules = handlers or handler_modules()

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        module = modules[function]
        try:
            response = module.lambda_handler(json.loads(json.dumps(event)), _Context())
        except Nwb2PennsieveError as exc:
            raise WalkthroughError(f"{function} failed: {type(exc).__name__}: {exc}") from None
        return _raise_on_error(function, response)

    return invoke


# --- the template variant and the local S3 -------------------------------------------------------


def template_variant(template: Path, out: Path, *, arch: str, layers: Path) -> Path:
    """``template`` as JSON with every path absolute, the functions on ``arch`` and the layers
    from ``layers`` (``{deps,core}``): what ``sam local invoke -t`` needs for another architecture."""
    data = _load_template(template)
    root = template.resolve().parent
    data["Globals"]["Function"]["Architectures"] = [arch]
    for name, resource in data["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            props["CodeUri"] = str(root / props["CodeUri"])
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            props["CompatibleArchitectures"] = [arch]
            props["ContentUri"] = str((layers / Path(props["ContentUri"]).name).resolve())
            if not (layers / Path(props["ContentUri"]).name).is_dir():
                raise WalkthroughError(f"{name}: no layer in {props['ContentUri']} (build it first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return out


def _load_template(template: Path) -> dict[str, Any]:
    from cfnlint.decode import decode_str  # a dev tool: the walkthrough runs from the project's venv

    data, problems = decode_str(template.read_text())
    if problems:
        raise WalkthroughError(f"{template}: {problems[0]}")
    return dict(data)


def template_environment(template: Path, **values: str) -> dict[str, str]:
    """The functions' Globals environment with the parameters' defaults (what ``sam local invoke``
    gives them); ``values`` set the others (a resource's name, such as OUTPUT_BUCKET)."""
    data = _load_template(template)
    defaults = {k: str(p.get("Default", "")) for k, p in data["Parameters"].items()}
    env: dict[str, str] = {}
    for name, value in data["Globals"]["Function"]["Environment"]["Variables"].items():
        if isinstance(value, str):
            env[name] = value
        elif isinstance(value, dict) and value.get("Ref") in defaults:
            env[name] = defaults[value["Ref"]]
    return env | values


def docker_bridge_address() -> str:
    """The host's address on Docker's default bridge, where a container reaches the host: the
    bridge's gateway (or, when the daemon does not list one, the first address of its subnet)."""
    done = subprocess.run(["docker", "network", "inspect", "bridge"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise WalkthroughError(f"no Docker bridge (is the Docker daemon running?): {done.stderr.strip()}")
    for config in json.loads(done.stdout)[0]["IPAM"]["Config"] or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
        if config.get("Subnet") and ipaddress.ip_network(config["Subnet"]).version == 4:
            return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    raise WalkthroughError("Docker's bridge network has no IPv4 address")


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def local_s3(host: str) -> Iterator[str]:
    """A moto server on ``host`` (loopback or the Docker bridge), with the two local buckets."""
    import boto3
    from moto.server import ThreadedMotoServer  # a dev dependency

    port = _free_port(host)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    endpoint = f"http://{host}:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for bucket in (LOCAL_INPUT_BUCKET, LOCAL_OUTPUT_BUCKET):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=LOCAL_INPUT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield endpoint
    finally:
        server.stop()


# --- the command ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--file", type=Path, default=SAMPLE, help="the NWB file to upload (default: the sample)")
    parser.add_argument("--key", default=DEFAULT_KEY, help=f"its key in the input bucket (default {DEFAULT_KEY})")
    parser.add_argument("--input-bucket", help="an input bucket you own (with --local-s3: a local one)")
    parser.add_argument("--output-bucket", help="an output bucket you own (with --local-s3: a local one)")
    parser.add_argument("--local-s3", action="store_true", help="start a moto server as S3 (no AWS account)")
    parser.add_argument("--endpoint-url", default="", help="an S3 endpoint of your own (AWS_ENDPOINT_URL)")
    parser.add_argument(
        "--integration-id",
        help="import into Pennsieve (this workflow run): UploadFiles and CompleteImport follow Finalize; "
        "the credentials are the secret PENNSIEVE_SECRET_ARN names",
    )
    parser.add_argument("--invoke", choices=("sam", "process"), default="sam", help="sam local invoke, or in process")
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--arch", choices=("arm64", "x86_64"), default="arm64", help="the functions' architecture")
    parser.add_argument("--layers", type=Path, default=Path("build/layers"), help="the built layers {deps,core}")
    parser.add_argument("--workdir", type=Path, default=Path("build/walkthrough"), help="events and responses")
    args = parser.parse_args(argv)
    if not args.local_s3 and not (args.input_bucket and args.output_bucket):
        parser.error("give --input-bucket and --output-bucket (buckets you own), or --local-s3")
    try:
        if args.local_s3:
            # The container reaches the host at the Docker bridge address; in process, loopback will do.
            host = "127.0.0.1" if args.invoke == "process" else docker_bridge_address()
            for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
                os.environ.setdefault(name, value)
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            with local_s3(host) as endpoint:
                buckets = (args.input_bucket or LOCAL_INPUT_BUCKET, args.output_bucket or LOCAL_OUTPUT_BUCKET)
                return _run(args, endpoint, *buckets)
        return _run(args, args.endpoint_url, args.input_bucket, args.output_bucket)
    except WalkthroughError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1


def _run(args: argparse.Namespace, endpoint: str, input_bucket: str, output_bucket: str) -> int:
    import boto3

    env = {"OUTPUT_BUCKET": output_bucket, "AWS_ENDPOINT_URL": endpoint}
    env |= {
        k: os.environ[k]
        for k in ("PENNSIEVE_SECRET_ARN", "PENNSIEVE_API_HOST", "PENNSIEVE_API_HOST2")
        if k in os.environ
    }
    s3 = boto3.client("s3", endpoint_url=endpoint or None)
    execution_input = upload_example(s3, args.file, input_bucket, args.key)
    if args.integration_id:
        execution_input |= {"importerEnabled": True, "integrationId": args.integration_id}
    print(f"uploaded {args.file} to s3://{input_bucket}/{args.key}", file=sys.stderr)  # noqa: T201
    if args.invoke == "process":
        # The template's environment, as a deployed function has it; no X-Ray daemon here.
        os.environ.update(template_environment(args.template, **env) | {"POWERTOOLS_TRACE_DISABLED": "true"})
        invoke = process_invoker()
    else:
        sam = str(Path(sys.executable).with_name("sam")) if Path(sys.executable).with_name("sam").exists() else "sam"
        if shutil.which(sam) is None:
            raise WalkthroughError("the SAM CLI is not installed (make install puts it in .venv)")
        template = template_variant(
            args.template, args.workdir / f"template-{args.arch}.json", arch=args.arch, layers=args.layers
        )
        env_vars = args.workdir / "env.json"
        env_vars.write_text(json.dumps({"Parameters": env}, indent=2) + "\n")
        invoke = sam_invoker(template, env_vars, args.workdir / "events", sam=sam)
    steps = walk(invoke, s3, execution_input)
    for step in steps:
        print(f"{step.function}: {json.dumps(step.response)[:300]}")  # noqa: T201 - the walkthrough's report
    ended = next((s.response for s in steps if s.response.get("outcome") == "superseded"), None)
    if ended is not None:
        replaced = Superseded.model_validate(ended)
        print(f"superseded {replaced.source.uri} by {replaced.latest} (at {replaced.step})")  # noqa: T201
        return 0
    finalized = FinalizeOutput.model_validate(next(s.response for s in steps if s.function == "FinalizeFunction"))
    print(f"converted {finalized.source} -> {finalized.output} ({finalized.chunk_files} chunk files)")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
