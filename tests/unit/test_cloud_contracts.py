"""Contracts between the states, the ASL, the template and the handlers (what linters do not check)."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from nwb2pennsieve.cloud import models
from nwb2pennsieve.cloud.admission import ObjectVersion, QueueEvent
from nwb2pennsieve.cloud.models import (
    Batch,
    CompleteImportInput,
    FinalizeInput,
    FinalizeOutput,
    ImportSummary,
    PlanInput,
    PlanOutput,
    S3Ref,
    Superseded,
    UploadBatch,
    UploadFilesInput,
    UploadFilesOutput,
    WriteChunksInput,
    WriteChunksOutput,
)
from nwb2pennsieve.cloud.settings import CloudSettings
from statemachine.render import DEFINITION, load_template, placeholders, render, substitutions, template_refs
from tests.cloud_fixtures import EVENTS, ROOT, load_event

TEMPLATE = load_template()
MAPS = {"WriteChunks": "WriteConcurrency", "UploadFiles": "UploadConcurrency"}  # map state → its concurrency
ASL_TEXT = DEFINITION.read_text()


def states() -> dict[str, Any]:
    rendered = json.loads(render(substitutions(TEMPLATE, template_refs(TEMPLATE))))
    out = dict(rendered["States"])
    for name in MAPS:
        out.update(rendered["States"][name]["ItemProcessor"]["States"])
    return out


def test_every_placeholder_is_a_substitution_and_every_substitution_is_used() -> None:
    keys = set(TEMPLATE["Resources"]["ConversionStateMachine"]["Properties"]["DefinitionSubstitutions"])
    assert placeholders(ASL_TEXT) == keys


def test_every_lambda_task_calls_a_function_of_the_template() -> None:
    # Every function but the Starter, which the admission queue invokes.
    arns = {v for k, v in template_refs(TEMPLATE).items() if k.endswith("Function.Arn") and "Starter" not in k}
    tasks = {name: s for name, s in states().items() if s.get("Resource") == "arn:aws:states:::lambda:invoke"}
    assert {t["Parameters"]["FunctionName"] for t in tasks.values()} == arns
    for name, task in tasks.items():
        retried = {e for r in task["Retry"] for e in r["ErrorEquals"]}
        assert {"Lambda.TooManyRequestsException", "Lambda.ServiceException", "StorageError"} <= retried, name
        assert all(r.get("BackoffRate", 1) > 1 for r in task["Retry"]), name


def longest_wait(retrier: dict[str, Any]) -> float:
    """Seconds a retrier waits in all before giving up (no jitter)."""
    interval, rate = retrier.get("IntervalSeconds", 1), retrier.get("BackoffRate", 2.0)
    cap = retrier.get("MaxDelaySeconds", float("inf"))
    return sum(min(interval * rate**n, cap) for n in range(retrier.get("MaxAttempts", 3)))


def test_throttling_waits_rather_than_fails_and_timeouts_are_retried_for_idempotent_workers() -> None:
    """A burst may hold the account's concurrency for an hour: a throttled task waits (hours in
    all, FULL jitter halves that on average), while service errors keep a short budget."""
    tasks = {name: s for name, s in states().items() if s.get("Resource") == "arn:aws:states:::lambda:invoke"}
    for name, task in tasks.items():
        (throttled,) = [r for r in task["Retry"] if "Lambda.TooManyRequestsException" in r["ErrorEquals"]]
        assert throttled["ErrorEquals"] == ["Lambda.TooManyRequestsException"], name
        assert longest_wait(throttled) >= 2 * 3600 and throttled["JitterStrategy"] == "FULL", name
        (storage,) = [r for r in task["Retry"] if "StorageError" in r["ErrorEquals"]]
        assert longest_wait(storage) >= 5 * 60, name
        ended = [r for r in task["Retry"] if "Lambda.Unknown" in r["ErrorEquals"]]
        if name in ("WriteBatch", "UploadBatch"):  # idempotent: a timeout or OOM is tried again, once or twice
            (retrier,) = ended
            assert {"States.Timeout", "Lambda.Unknown"} <= set(retrier["ErrorEquals"])
            assert 1 <= retrier["MaxAttempts"] <= 2
        else:
            assert not ended, name


def test_every_function_of_the_template_runs_its_own_handler_under_moto() -> None:
    from tests.cloud_fixtures import FUNCTIONS

    functions = {k: v for k, v in TEMPLATE["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    assert set(FUNCTIONS) == set(functions)
    for name, module in FUNCTIONS.items():
        assert module == f"functions.{Path(functions[name]['Properties']['CodeUri']).name}.app", name


def test_each_task_state_calls_its_own_function() -> None:
    refs = template_refs(TEMPLATE)
    called = {
        name: s["Parameters"]["FunctionName"]
        for name, s in states().items()
        if s.get("Resource") == "arn:aws:states:::lambda:invoke"
    }
    assert called == {
        "Plan": refs["PlanFunction.Arn"],
        "WriteBatch": refs["WriteChunksFunction.Arn"],
        "Finalize": refs["FinalizeFunction.Arn"],
        "UploadBatch": refs["UploadFilesFunction.Arn"],
        "CompleteImport": refs["CompleteImportFunction.Arn"],
    }


@pytest.mark.parametrize(("name", "concurrency"), MAPS.items())
def test_distributed_map_shape(name: str, concurrency: str) -> None:
    m = states()[name]
    assert m["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert m["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert m["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    assert m["MaxConcurrency"] == int(TEMPLATE["Parameters"][concurrency]["Default"])
    assert m.get("ToleratedFailureCount", 0) == 0 and m.get("ToleratedFailurePercentage", 0) == 0


def test_no_failure_is_caught_into_a_fail_state() -> None:
    """AWS redrives a failed execution from the states entered and never exited: a Catch that led
    to a Fail state made that Fail state the one redriven (failing again at once). Without a Catch
    the state that failed after its Retry fails the execution itself, and a redrive resumes there
    (for a Distributed Map, only its failed children)."""
    rendered = json.loads(render(substitutions(TEMPLATE, template_refs(TEMPLATE))))
    everything = states() | rendered["States"]
    assert not [name for name, s in everything.items() if "Catch" in s]
    assert not [name for name, s in everything.items() if s["Type"] == "Fail"]


def test_a_superseded_version_ends_in_a_succeed_state() -> None:
    """Being replaced is an outcome, not an error: Plan's and Finalize's Superseded answer goes to
    a Succeed state (outside the failed-conversions alarm); their other answers go on."""
    source = S3Ref(bucket="in-bucket", key="incoming/a.nwb", version_id="v1")
    for step in ("Plan", "Finalize"):
        replaced = Superseded(source=source, latest="version v2", step=step).dump()
        assert replaced["outcome"] == "superseded"
        assert _choice(f"{step}Outcome", replaced) == "Superseded"
        assert states()[step]["Next"] == f"{step}Outcome"
    assert states()["Superseded"]["Type"] == "Succeed"
    plan_output = load_event("finalize.json")
    assert _choice("PlanOutcome", plan_output) == "WriteChunks"
    finalize_output = {k: v for k, v in load_event("complete_import.json").items() if k != "uploadFiles"}
    assert _choice("FinalizeOutcome", finalize_output) == "NextImportStep"
    # A writer of a replaced version succeeds with nothing written (its map goes on to Finalize).
    assert WriteChunksOutput(superseded=True, batch=0, items=2).dump()["superseded"] is True


def _path(data: dict[str, Any], path: str) -> Any:
    for part in path.removeprefix("$.").split("."):
        data = data[part]
    return data


def item_selector(plan_output: dict[str, Any], item: dict[str, Any], map_name: str = "WriteChunks") -> dict[str, Any]:
    """What the Map's ItemSelector builds from its input and one item its ItemReader read (JSONPath subset)."""
    selector = states()[map_name]["ItemSelector"]
    out = {}
    for key, path in selector.items():
        assert key.endswith(".$")
        if path == "$$.Map.Item.Value":
            out[key[:-2]] = item
        else:
            out[key[:-2]] = _path(plan_output, path)
    return out


def _choice(name: str, state_input: dict[str, Any]) -> str:
    """The Choice state ``name``'s next state (the subset of Choice rules the definition uses)."""
    choice = states()[name]
    for rule in choice["Choices"]:
        try:
            value = _path(state_input, rule["Variable"])
        except KeyError:
            value = None
        if "IsPresent" in rule and (value is not None) == rule["IsPresent"]:
            return str(rule["Next"])
        if "NumericEquals" in rule and value == rule["NumericEquals"]:
            return str(rule["Next"])
        if "StringEquals" in rule and value == rule["StringEquals"]:
            return str(rule["Next"])
    return str(choice["Default"])


def test_finalize_output_feeds_the_upload_map_and_complete_import() -> None:
    complete = load_event("complete_import.json")
    finalize_output = {k: v for k, v in complete.items() if k != "uploadFiles"}
    parsed = FinalizeOutput.model_validate(finalize_output)
    assert parsed.dump() == finalize_output  # the fixture is exactly what Finalize returns
    assert states()["FinalizeOutcome"]["Default"] == "NextImportStep"
    assert _choice("NextImportStep", finalize_output) == "UploadFiles"
    no_batch = {**finalize_output, "upload": {**finalize_output["upload"], "batches": 0}}
    assert _choice("NextImportStep", no_batch) == "CompleteImport"
    no_import = FinalizeOutput.model_validate({**finalize_output, "upload": None}).dump()
    assert "upload" not in no_import and _choice("NextImportStep", no_import) == "Converted"
    reader = states()["UploadFiles"]["ItemReader"]["Parameters"]
    assert {reader["Bucket.$"], reader["Key.$"]} == {"$.upload.uploadBatches.bucket", "$.upload.uploadBatches.key"}
    item = load_event("upload_files.json")["batch"]
    UploadBatch.model_validate(item)
    built = item_selector(finalize_output, item, "UploadFiles")
    assert UploadFilesInput.model_validate(built) == UploadFilesInput.model_validate(load_event("upload_files.json"))
    # CompleteImport gets Finalize's output plus the map's result (or its error) at the map's paths.
    result_path = states()["UploadFiles"]["ResultPath"].removeprefix("$.")
    assert result_path in complete
    parsed_complete = CompleteImportInput.model_validate(complete)
    assert parsed_complete.upload_files is not None and parsed_complete.upload_files.map_run_arn
    # CompleteImport's output is a FinalizeOutput, the execution's output.
    assert states()["CompleteImport"]["End"] is True


def test_plan_output_feeds_the_map_and_finalize() -> None:
    plan_output = load_event("finalize.json")
    plan_output.pop("writeChunks")
    PlanOutput.model_validate(plan_output)
    # ItemReader parameters point at fields of Plan's output.
    reader = states()["WriteChunks"]["ItemReader"]["Parameters"]
    assert {reader["Bucket.$"], reader["Key.$"]} == {"$.writeBatches.bucket", "$.writeBatches.key"}
    batch = load_event("write_chunks.json")["batch"]
    built = item_selector(plan_output, batch)
    assert WriteChunksInput.model_validate(built) == WriteChunksInput.model_validate(load_event("write_chunks.json"))
    # Finalize gets Plan's output plus the map's result at the map's ResultPath.
    result_path = states()["WriteChunks"]["ResultPath"].removeprefix("$.")
    finalize_input = dict(plan_output, **{result_path: {"MapRunArn": "arn", "ResultWriterDetails": {"Bucket": "b"}}})
    parsed = FinalizeInput.model_validate(finalize_input)
    assert parsed.write_chunks is not None and parsed.write_chunks.map_run_arn == "arn"


@pytest.mark.parametrize(
    "model",
    [
        PlanOutput.model_validate({**load_event("finalize.json")}),
        WriteChunksInput.model_validate(load_event("write_chunks.json")),
        FinalizeInput.model_validate(load_event("finalize.json")),
        WriteChunksOutput(batch=1, items=2, files=3, payload_bytes=4, bytes_read=5, requests=6, seconds=0.5),
        WriteChunksOutput(superseded=True, batch=1, items=2),
        Superseded(source=S3Ref(bucket="in-bucket", key="a.nwb", etag="e1"), latest="ETag e2", step="Finalize"),
        FinalizeOutput(
            source="s3://b/k",
            output="s3://o/p/",
            channels=1,
            chunk_files=2,
            metadata_files=1,
            output_bytes=8,
            stale_removed=0,
            imported=False,
        ),
        Batch(batch=0, items=["a"], output_bytes=1),
        UploadFilesInput.model_validate(load_event("upload_files.json")),
        UploadFilesOutput(batch=0, files=3, uploaded=2, already_uploaded=1, seconds=0.5),
        CompleteImportInput.model_validate(load_event("complete_import.json")),
        ImportSummary.model_validate(load_event("complete_import.json")["importSummary"]),
    ],
)
def test_payloads_round_trip(model: Any) -> None:
    assert type(model).model_validate(json.loads(json.dumps(model.dump()))) == model


def _untyped(annotation: Any) -> bool:
    return annotation is Any or any(_untyped(a) for a in typing.get_args(annotation))


def test_every_payload_field_is_typed() -> None:
    """No ``Any`` (nor ``dict[str, Any]``) in what the states pass each other."""
    payloads = [
        m
        for m in vars(models).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == models.__name__
    ]
    assert FinalizeOutput in payloads and ImportSummary in payloads
    for model in payloads:
        for name, field in model.model_fields.items():
            assert not _untyped(field.annotation), f"{model.__name__}.{name}: {field.annotation}"


def test_the_import_summary_goes_typed_from_finalize_through_complete_import() -> None:
    """Finalize's summary holds every field of Pennsieve's PreparedImport; Finalize's output parses
    as CompleteImport's input, and CompleteImport's output (with the upload map's counts) as
    Finalize's output again, the execution's output."""
    from nwb2pennsieve.pennsieve.importer import PreparedImport
    from nwb2pennsieve.pennsieve.target import ImportTarget

    assert set(PreparedImport.model_fields) <= set(ImportSummary.model_fields)
    prepared = PreparedImport(
        target=ImportTarget(dataset_id="d", package_id="p"),
        import_id="i",
        channels=2,
        channels_created=1,
        channels_reused=1,
        files=4,
        files_registered=4,
    )
    summary = ImportSummary.of_prepared(prepared)
    assert summary.dump() == {
        "target": {"datasetId": "d", "packageId": "p"},
        "importId": "i",
        "channels": 2,
        "channelsCreated": 1,
        "channelsReused": 1,
        "files": 4,
        "filesRegistered": 4,
    }
    finalized = FinalizeOutput.model_validate(load_event("complete_import.json")).model_copy(
        update={"import_summary": summary}
    )
    complete = CompleteImportInput.model_validate(json.loads(json.dumps(finalized.dump())))
    assert complete.import_summary == summary
    counted = summary.model_copy(update={"files_uploaded": 3, "files_already_uploaded": 1, "upload_batches": 1})
    done = finalized.model_copy(update={"imported": True, "import_summary": counted})
    assert FinalizeOutput.model_validate(json.loads(json.dumps(done.dump()))) == done
    assert done.dump()["importSummary"]["filesUploaded"] == 3


def test_both_execution_inputs_parse_to_the_same_source() -> None:
    from_event = PlanInput.parse(load_event("s3_object_created.json"))
    given = from_event.source
    by_hand = PlanInput.parse(
        {"bucket": given.bucket, "key": given.key, "versionId": given.version_id, "etag": given.etag}
    )
    assert from_event.source == by_hand.source
    assert by_hand.overrides == PlanInput.parse({"bucket": given.bucket, "key": given.key}).overrides
    # A version-suspended bucket's "null" is no version: the ETag pins the object.
    suspended = load_event("s3_object_created.json")
    suspended["detail"]["object"]["version-id"] = "null"
    pinned = PlanInput.parse(suspended).source
    assert pinned.version_id is None and pinned.etag == "b1946ac92492d2347c6235b4d2611184"
    assert PlanInput.parse(load_event("plan.json")).overrides.chunk_size_mb == 1


def test_every_event_fixture_parses() -> None:
    names = sorted(p.name for p in EVENTS.glob("*.json"))
    assert names == [
        "complete_import.json",
        "finalize.json",
        "plan.json",
        "s3_object_created.json",
        "starter.json",
        "upload_files.json",
        "write_chunks.json",
    ]
    PlanInput.parse(load_event("s3_object_created.json"))
    PlanInput.parse(load_event("plan.json"))
    WriteChunksInput.model_validate(load_event("write_chunks.json"))
    FinalizeInput.model_validate(load_event("finalize.json"))
    UploadFilesInput.model_validate(load_event("upload_files.json"))
    CompleteImportInput.model_validate(load_event("complete_import.json"))
    QueueEvent.model_validate(load_event("starter.json"))


def test_the_starter_event_carries_object_created_events_that_start_the_state_machine() -> None:
    """Each record's body is what the rule puts on the admission queue: an S3 "Object Created" event,
    which the Starter passes as it is as the execution's input, which Plan parses."""
    queued = QueueEvent.model_validate(load_event("starter.json"))
    assert len(queued.Records) == 2
    example = load_event("s3_object_created.json")
    assert json.loads(queued.Records[0].body) == example
    for record in queued.Records:
        obj = ObjectVersion.from_event(record.body)
        source = PlanInput.parse(json.loads(record.body)).source
        assert (source.bucket, source.key, source.version_id) == (obj.bucket, obj.key, obj.version)


def test_the_rule_matches_the_example_event() -> None:
    """The EventBridge pattern of the template accepts the fixture event (prefix/suffix wildcard)."""
    from statemachine.render import resolve

    refs = template_refs(TEMPLATE, InputBucket="nwb2pennsieve-input-example")
    pattern = TEMPLATE["Resources"]["NwbObjectCreatedRule"]["Properties"]["EventPattern"]
    event = load_event("s3_object_created.json")
    assert event["source"] in pattern["source"] and event["detail-type"] in pattern["detail-type"]
    assert event["detail"]["bucket"]["name"] in [resolve(b, refs) for b in pattern["detail"]["bucket"]["name"]]
    (key_filter,) = pattern["detail"]["object"]["key"]
    wildcard = resolve(key_filter["wildcard"], refs)
    regex = "^" + ".*".join(re.escape(part) for part in wildcard.split("*")) + "$"
    assert re.match(regex, event["detail"]["object"]["key"])
    assert not re.match(regex, "incoming/notes.txt")


NUMBERS = ("_FILES", "_EXECUTIONS", "CONCURRENCY", "_SECONDS", "_GB", "_HOURS")


def test_settings_read_only_variables_the_template_sets() -> None:
    variables = set(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])
    # A field's variable is its name in upper case. ENVIRONMENT only picks IMPORTER_ENABLED's
    # default, and the template always sets IMPORTER_ENABLED.
    read = {name.upper() for name in CloudSettings.model_fields} - {"ENVIRONMENT"}
    assert read and read <= variables, read - variables
    CloudSettings.from_env(
        {k: "1" if "MB" in k or k.endswith(NUMBERS) else "x" for k in variables}
        | {
            "IMPORTER_ENABLED": "false",
            "LEGACY_IMPORT_FLOW": "false",
            "SKIP_INVALID_SERIES": "false",
            "GZIP_LEVEL": "1",
            "BUNDLE_ZSTD_LEVEL": "3",
            "OUTPUT_FORMATS": "chunks,bundle",
            "BUNDLE_LAYOUT": "ts-zarr",
            "DEIDENTIFY": "true",
        }
    )


def test_events_readme_documents_sam_local_invoke() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in (
        "s3_object_created.json",
        "write_chunks.json",
        "finalize.json",
        "plan.json",
        "upload_files.json",
        "complete_import.json",
        "starter.json",
    ):
        assert f"events/{name}" in readme


def test_handlers_import_only_the_core_powertools_and_boto() -> None:
    allowed = {"__future__", "typing", "boto3", "botocore", "aws_lambda_powertools", "nwb2pennsieve"}
    for app in Path(ROOT / "functions").glob("*/app.py"):
        imported = set(re.findall(r"^(?:from|import) ([a-z_0-9]+)", app.read_text(), re.M))
        assert imported <= allowed, (app, imported - allowed)


def make_items(sizes: list[int]) -> list[Any]:
    from nwb2pennsieve.plan.models import WorkItem

    return [
        WorkItem(id=f"000-{i:07d}-00000", series=0, column_start=0, column_stop=1, chunk_start=i, chunk_stop=i + 1,
                 samples=s // 8, output_bytes=s)
        for i, s in enumerate(sizes)
    ]  # fmt: skip


def test_batches_keep_order_respect_the_budget_and_never_split_an_item() -> None:
    from nwb2pennsieve.cloud.plan_step import batch_items

    mib = 1024 * 1024
    items = make_items([3 * mib, 3 * mib, 5 * mib, 20 * mib, 1 * mib, 1 * mib])
    batches = batch_items(items, 8)
    assert [b.items for b in batches] == [
        [items[0].id, items[1].id], [items[2].id], [items[3].id], [items[4].id, items[5].id]
    ]  # fmt: skip
    assert [b.batch for b in batches] == [0, 1, 2, 3]
    assert [b.output_bytes for b in batches] == [6 * mib, 5 * mib, 20 * mib, 2 * mib]


def test_a_batch_payload_stays_small_however_tiny_the_items() -> None:
    from nwb2pennsieve.cloud.plan_step import batch_items

    batches = batch_items(make_items([8] * 5000), 512)
    assert len(batches) == 10
    event = load_event("write_chunks.json") | {"batch": batches[0].dump()}
    assert len(json.dumps(event)) < 32_000


def test_upload_batch_files_is_a_whole_positive_number() -> None:
    from nwb2pennsieve.errors import ConfigurationError

    assert CloudSettings.from_env({"OUTPUT_BUCKET": "bucket"}).upload_batch_files == 5_000
    assert CloudSettings.from_env({"OUTPUT_BUCKET": "bucket", "UPLOAD_BATCH_FILES": "3"}).upload_batch_files == 3
    for bad in ("2.5", "0", "many"):
        with pytest.raises(ConfigurationError, match="UPLOAD_BATCH_FILES"):
            CloudSettings.from_env({"OUTPUT_BUCKET": "bucket", "UPLOAD_BATCH_FILES": bad})
