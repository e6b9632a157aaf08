"""One set of defaults (item 8): template.yaml's Defaults are the only source; samconfig.toml,
CloudSettings, docs/cloud.md's parameter table and docs/scale-model.md agree with them; the deploy
runbook (item 9) names only make targets and parameters that exist."""

from __future__ import annotations

import ast
import re
import tomllib
from typing import Any

import pytest

from nwb2pennsieve.cloud.settings import CloudSettings
from statemachine.render import load_template
from tests.cloud_fixtures import ROOT

TEMPLATE = load_template()
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]
DOCS = ROOT / "docs"


def test_samconfig_overrides_no_concurrency_or_admission_parameter() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    overrides = config["default"]["deploy"]["parameters"]["parameter_overrides"]
    assert dict(token.split("=", 1) for token in overrides.split()) == {"ImporterEnabled": "false"}


def test_cloud_settings_default_to_the_templates_values() -> None:
    """A setting read from the variable a template parameter sets defaults to that parameter's Default."""
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    settings = CloudSettings.from_env({"OUTPUT_BUCKET": "bucket"})
    checked = 0
    for variable, value in variables.items():
        field = variable.lower()
        if not (isinstance(value, dict) and "Ref" in value and value["Ref"] in PARAMETERS):
            continue
        if field not in CloudSettings.model_fields or field in ("output_bucket", "importer_enabled"):
            continue
        default = PARAMETERS[value["Ref"]].get("Default")
        have = getattr(settings, field)
        if field == "output_formats" or field == "gzip_level":
            continue  # options models: compared through the conversion options below
        same = str(have).lower() == str(default).lower()
        assert same or (str(default).replace(".", "").isdigit() and float(have) == float(default)), (variable, have)
        checked += 1
    assert checked >= 8
    options = settings.conversion_options()
    assert options.gzip_level == PARAMETERS["GzipLevel"]["Default"]


def parameter_table() -> dict[str, str]:
    """docs/cloud.md's parameter table: parameter name -> its row."""
    text = (DOCS / "cloud.md").read_text()
    table = text[text.index("## Template parameters") : text.index("## Permissions")]
    rows = {}
    for row in table.splitlines():
        if row.startswith("| `"):
            for name in re.findall(r"`([A-Z][a-z][A-Za-z0-9]*)`", row.split("|")[1]):
                rows[name] = row
    return rows


def test_docs_cloud_md_lists_every_parameter_with_the_templates_default() -> None:
    rows = parameter_table()
    assert set(rows) == set(PARAMETERS)
    for name, row in rows.items():
        found = re.search(r"\(default ([^)]*)\)", row)
        if found is None:
            continue
        said = [v.strip().strip('"') for v in found.group(1).split(",")]
        names = re.findall(r"`([A-Z][a-z][A-Za-z0-9]*)`", row.split("|")[1])
        position = names.index(name) if len(said) == len(names) else 0
        assert said[position].replace(",", "") == str(PARAMETERS[name].get("Default", "")), (name, said)


def custom_metrics() -> set[str]:
    """Every custom metric the handlers and the core emit (names given to add_metric, and the
    Starter's table of counts)."""
    names: set[str] = set()
    sources = [*(ROOT / "functions").glob("*/app.py"), ROOT / "layers/core/nwb2pennsieve/cloud/lambda_support.py"]
    for path in sources:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "name" and isinstance(node.value, ast.Constant):
                names.add(str(node.value.value))
            if isinstance(node, ast.Dict) and path.parent.name == "starter":
                names.update(str(k.value) for k in node.keys if isinstance(k, ast.Constant))
    return {n for n in names if n[:1].isupper()}  # metric names; the logs' extra keys are lower case


def alarm_metrics() -> tuple[int, int]:
    alarms = {n: r for n, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    metrics = 0
    for alarm in alarms.values():
        props = alarm["Properties"]
        metrics += sum(1 for m in props.get("Metrics", []) if "MetricStat" in m) or (1 if "MetricName" in props else 0)
    return len(alarms), metrics


def test_the_scale_model_uses_the_defaults_and_counts_alarms_and_metrics() -> None:
    model = (DOCS / "scale-model.md").read_text()
    for name in ("WriteConcurrency", "MaxRunningExecutions", "ChunkSizeMb", "MaxItemMb", "BatchMb"):
        assert f"`{name}={PARAMETERS[name]['Default']}`" in model, name
    assert "WritersReservedConcurrency" not in model or PARAMETERS["WritersReservedConcurrency"]["Default"] == 0
    alarms, metrics = alarm_metrics()
    assert f"{alarms} alarms over {metrics} metrics" in model
    emitted = custom_metrics()
    assert f"| {len(emitted)} |" in model  # the custom metrics' row
    listed = (DOCS / "cloud.md").read_text()
    listed = listed[listed.index("- **Custom metrics**") : listed.index("- **Dashboard**")]
    assert set(re.findall(r"`([A-Z][A-Za-z]+)`", listed)) == emitted
    assert "inter-Region" in model


@pytest.mark.parametrize("doc", ["deploy.md", "cloud.md", "scale-model.md"])
def test_the_docs_name_only_make_targets_and_parameters_that_exist(doc: str) -> None:
    text = (DOCS / doc).read_text()
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    for target in re.findall(r"`make ([a-z-]+)", text) + re.findall(r"^make ([a-z-]+)", text, re.M):
        assert target in targets, target
    for name in re.findall(r"\b([A-Z][a-z]+[A-Z][A-Za-z0-9]*)=", text):
        assert name in PARAMETERS or name in ("OutputKey",), name  # OutputKey: the CLI's query of the outputs


def test_the_deploy_runbook_covers_what_a_lab_needs() -> None:
    runbook = (DOCS / "deploy.md").read_text()
    for topic in (
        "Prerequisites",
        "secret",
        "Region",
        "make preflight",
        "PARAMS=",
        "Watching a burst",
        "redrive",
        "dead-letter queue",
        "Teardown",
        "DeletionPolicy: Retain",
        "Idle",
    ):
        assert topic.lower() in runbook.lower(), topic
