"""The Pennsieve app: app.yml's parameters are exactly the settings (names, types, defaults), its
runtime is what bench/bench_app.py measured, and the Dockerfile's entry point is ``nwb2pennsieve run``."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from nwb2pennsieve.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
APP = yaml.safe_load((ROOT / "app.yml").read_text())
# Not parameters: what Pennsieve's runner gives the container, and what comes at run time only.
RUNNER = {"INPUT_DIR", "OUTPUT_DIR", "ENVIRONMENT", "PENNSIEVE_API_HOST", "PENNSIEVE_API_HOST2"}
RUN_TIME = {"SESSION_TOKEN", "REFRESH_TOKEN", "PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET", "INTEGRATION_ID"}
# The defaults of a workflow run: the runner says ENVIRONMENT=production (the importer on).
PRODUCTION = {"ENVIRONMENT": "production"}


def _type(annotation: Any) -> str:
    """boolean, number or string, as app.yml calls the type of a settings field."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is bool:
        return "boolean"
    return "number" if annotation in (int, float) else "string"


def test_the_parameters_are_exactly_the_settings() -> None:
    parameters = {p["name"]: p for p in APP["parameters"]}
    fields = {name.upper(): field for name, field in Settings.model_fields.items()}
    assert set(parameters) == set(fields) - RUNNER - RUN_TIME
    default = Settings.from_env(PRODUCTION)
    for name, parameter in parameters.items():
        field = name.lower()
        assert parameter["type"] == _type(fields[name].annotation), name
        assert parameter["required"] is False and parameter["description"], name
        if "defaultValue" not in parameter:  # a default the machine decides (WORKERS: its CPUs)
            assert getattr(default, field) is None, name
            continue
        given = parameter["defaultValue"]
        assert isinstance(given, str), name  # as the reference writes them
        # The value the settings read from the variable is the model's own default.
        assert getattr(Settings.from_env({**PRODUCTION, name: given}), field) == getattr(default, field), name


def test_the_runtime_is_what_was_measured() -> None:
    measured = json.loads((ROOT / "bench" / "results-app.json").read_text())
    runtime = APP["runtime"]
    assert (runtime["cpu"], runtime["memory"]) == (measured["cpu"], measured["memory"])
    assert runtime["memory"] >= 2 * measured["peak_rss_mib"] and runtime["computeTypes"] == ["standard"]
    assert runtime["memory"] < 12288  # not the reference's 12 GB


def test_the_app_shape_is_the_references() -> None:
    assert APP["schemaVersion"] == "1.0" and APP["application"]["type"] == "processor"
    (given,) = APP["inputs"]
    assert (given["name"], given["dataType"], given["required"]) == ("NWB Timeseries", "application/octet-stream", True)
    assert [(o["name"], o["dataType"]) for o in APP["outputs"]] == [
        ("Timeseries Chunks", "application/gzip"),
        ("Channel Metadata", "application/json"),
    ]


def test_the_image_runs_nwb2pennsieve_run() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert 'ENTRYPOINT ["nwb2pennsieve", "run"]' in lines
    assert not [line for line in lines if line.startswith("CMD")]
    assert (ROOT / ".dockerignore").read_text().splitlines()[-2:] == ["*", "!build/image/wheels"]
