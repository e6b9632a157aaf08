"""The `sam local invoke` walkthrough (``make local-invoke``) with the handlers in process, under moto.

The walkthrough derives every event after Plan's from Plan's real output and records: here each
derived event must parse as its handler's input model, be what the definition's ItemSelector
builds, and the handlers must convert (and import) the bundled sample with them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from functions.complete_import import app as complete_app
from functions.finalize import app as finalize_app
from functions.plan import app as plan_app
from functions.upload_files import app as upload_app
from functions.write_chunks import app as write_app
from nwb2pennsieve.cloud.models import (
    CompleteImportInput,
    FinalizeInput,
    FinalizeOutput,
    PlanInput,
    PlanOutput,
    UploadFilesInput,
    WriteChunksInput,
)
from nwb2pennsieve.plan.models import Plan
from statemachine import walkthrough
from statemachine.render import load_template, render, substitutions, template_refs
from tests.cloud_fixtures import INPUT_BUCKET, OUTPUT_BUCKET, REGION, ROOT, use_import_secret
from tests.fake_pennsieve.fixtures import s3_gate as s3_gate  # the session's S3 gate process (a fixture)

MODULES = {
    "PlanFunction": plan_app,
    "WriteChunksFunction": write_app,
    "FinalizeFunction": finalize_app,
    "UploadFilesFunction": upload_app,
    "CompleteImportFunction": complete_app,
}
INPUT_MODELS: dict[str, Any] = {
    "PlanFunction": PlanInput,
    "WriteChunksFunction": WriteChunksInput,
    "FinalizeFunction": FinalizeInput,
    "UploadFilesFunction": UploadFilesInput,
    "CompleteImportFunction": CompleteImportInput,
}
TEMPLATE = load_template()
DEFINITION = json.loads(render(substitutions(TEMPLATE, template_refs(TEMPLATE))))


@pytest.fixture
def invoke(s3: Any, cloud_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> walkthrough.Invoke:
    for module in MODULES.values():
        monkeypatch.setattr(module, "s3", s3)
    return walkthrough.process_invoker(MODULES)


def path_value(data: dict[str, Any], path: str) -> Any:
    """A ``$.a.b`` path of the definition, read from ``data``."""
    for part in path.removeprefix("$.").split("."):
        data = data[part]
    return data


def selected(map_state: str, state_input: dict[str, Any], item: Any) -> dict[str, Any]:
    """What the definition's ItemSelector of ``map_state`` builds from its input and one item."""
    selector = DEFINITION["States"][map_state]["ItemSelector"]
    return {
        key.removesuffix(".$"): item if path == "$$.Map.Item.Value" else path_value(state_input, path)
        for key, path in selector.items()
    }


def map_items(s3: Any, ref: dict[str, Any]) -> list[Any]:
    """The items a map's ItemReader reads (write-batches.json, upload-batches.json)."""
    items: list[Any] = json.loads(s3.get_object(Bucket=ref["bucket"], Key=ref["key"])["Body"].read())
    return items


def test_the_walkthrough_converts_the_sample_with_events_derived_from_plan(s3: Any, invoke: walkthrough.Invoke) -> None:
    execution_input = walkthrough.upload_example(s3, walkthrough.SAMPLE, INPUT_BUCKET, "incoming/sample.nwb")
    assert execution_input["versionId"]  # the event pins the version just uploaded

    steps = walkthrough.walk(invoke, s3, execution_input)

    functions = [s.function for s in steps]
    planned = steps[0].response
    assert functions == ["PlanFunction", *["WriteChunksFunction"] * planned["batches"], "FinalizeFunction"]
    for step in steps:
        INPUT_MODELS[step.function].model_validate(step.event)
    # Each WriteChunks event is the definition's ItemSelector applied to Plan's output and one batch.
    batches = map_items(s3, planned["writeBatches"])
    assert [s.event for s in steps[1:-1]] == [selected("WriteChunks", planned, b) for b in batches]
    # Finalize gets Plan's output (the map run's ResultWriter details only on AWS).
    assert steps[-1].event == {k: v for k, v in planned.items() if k != "writeChunks"}
    plan = Plan.model_validate_json(
        s3.get_object(Bucket=OUTPUT_BUCKET, Key=PlanOutput.model_validate(planned).plan.key)["Body"].read()
    )
    finalized = FinalizeOutput.model_validate(steps[-1].response)
    written = {
        o["Key"].rsplit("/", 1)[1]
        for o in s3.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix=planned["output"]["prefix"])["Contents"]
    }
    assert set(plan.file_names()) <= written and finalized.chunk_files == len(plan.file_names()) > 0
    assert finalized.upload is None and walkthrough.next_import_step(finalized) == "Converted"


@pytest.fixture
def pennsieve(s3_gate: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake Pennsieve; the viewer asset's clients (only they) reach its S3."""
    from nwb2pennsieve.pennsieve import asset_s3
    from tests.fake_pennsieve import FakePennsieve

    s3_gate.call("reset")
    monkeypatch.setattr(asset_s3, "ENDPOINT_URL", s3_gate.url)
    server = FakePennsieve(static_tokens=("session-token-789",), s3=s3_gate).start()
    yield server
    server.stop()


def test_the_walkthrough_imports_with_upload_and_complete_import_events_derived_from_finalize(
    s3: Any, invoke: walkthrough.Invoke, pennsieve: Any, s3_gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_import_secret(monkeypatch, pennsieve.url)
    monkeypatch.setenv("UPLOAD_BATCH_FILES", "10")
    dataset = pennsieve.add_dataset()
    run = pennsieve.add_run(dataset, [pennsieve.add_package(dataset)])
    execution_input = walkthrough.upload_example(s3, walkthrough.SAMPLE, INPUT_BUCKET, "incoming/sample.nwb")

    steps = walkthrough.walk(invoke, s3, execution_input | {"importerEnabled": True, "integrationId": run})

    for step in steps:
        INPUT_MODELS[step.function].model_validate(step.event)
    finalize = next(s for s in steps if s.function == "FinalizeFunction")
    finalized = finalize.response
    uploads = [s for s in steps if s.function == "UploadFilesFunction"]
    assert finalized["upload"]["batches"] == len(uploads) > 1  # 24 chunk files, 10 a batch
    expected = [selected("UploadFiles", finalized, b) for b in map_items(s3, finalized["upload"]["uploadBatches"])]
    assert [s.event for s in uploads] == expected
    assert [s.function for s in steps][-1] == "CompleteImportFunction" and steps[-1].event == finalized
    done = FinalizeOutput.model_validate(steps[-1].response)
    assert done.imported is True and done.import_summary is not None
    (asset,) = pennsieve.assets.values()
    assert asset["status"] == "active" and asset["id"] == done.import_summary.asset_id
    assert len(s3_gate.objects("pennsieve-viewer-assets", asset["_prefix"])) == done.chunk_files == 24


def test_a_failing_function_stops_the_walkthrough_with_one_line(s3: Any, invoke: walkthrough.Invoke) -> None:
    s3.put_object(Bucket=INPUT_BUCKET, Key="incoming/broken.nwb", Body=b"not an HDF5 file")
    with pytest.raises(walkthrough.WalkthroughError, match=r"^PlanFunction failed: \w+Error: .*broken\.nwb") as err:
        walkthrough.walk(invoke, s3, {"bucket": INPUT_BUCKET, "key": "incoming/broken.nwb"})
    assert "\n" not in str(err.value)


def test_make_local_invoke_without_docker_converts_the_sample_on_a_local_s3(tmp_path: Any) -> None:
    """The command ``make local-invoke LOCAL_S3=1 INVOKE=process`` runs: a moto server on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PENNSIEVE_"))}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    command = [sys.executable, "-m", "statemachine.walkthrough", "--local-s3", "--invoke", "process"]
    done = subprocess.run(
        [*command, "--workdir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if not line.startswith("{")]  # the handlers' JSON logs
    assert [line.split(":")[0] for line in lines[:-1]] == ["PlanFunction", "WriteChunksFunction", "FinalizeFunction"]
    assert re.fullmatch(
        r"converted s3://nwb2pennsieve-input-local/incoming/sample\.nwb -> "
        r"s3://nwb2pennsieve-output-local/converted/incoming/sample/@v/v[0-9a-f-]+/ \(24 chunk files\)",
        lines[-1],
    ), lines[-1]


def test_the_walkthrough_without_buckets_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        walkthrough.main(["--invoke", "process"])
    assert exit_.value.code == 2
    assert "give --input-bucket and --output-bucket" in capsys.readouterr().err
