"""One settings parser: the same checks and the same message whether a value comes from a flag
or from the environment, exit status 2 on the command line, secrets never shown."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from nwb2pennsieve.cloud.models import Overrides
from nwb2pennsieve.cloud.settings import CloudSettings
from nwb2pennsieve.errors import ConfigurationError
from nwb2pennsieve.local.cli import main
from nwb2pennsieve.options import OutputFormat
from nwb2pennsieve.settings import COMPRESSED_GZIP_LEVEL, DEFAULT_BUNDLE_ZSTD_LEVEL, LOCAL_GZIP_LEVEL, Settings

ALL_VARIABLES = (
    "ENVIRONMENT", "INPUT_DIR", "OUTPUT_DIR", "CHUNK_SIZE_MB", "MAX_ITEM_MB", "WORKERS", "SKIP_INVALID_SERIES",
    "IMPORTER_ENABLED", "PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET", "SESSION_TOKEN", "REFRESH_TOKEN",
    "PENNSIEVE_API_HOST", "PENNSIEVE_API_HOST2", "INTEGRATION_ID", "SERIES", "PLAN_TIMEOUT_S", "GZIP_LEVEL",
    "OUTPUT_FORMATS",
    "BUNDLE_ZSTD_LEVEL", "BUNDLE_LAYOUT", "DEIDENTIFY", "READ_STALL_S", "SETTLE_S", "NETWORK_TIMEOUT_S",
    "NETWORK_BUDGET_S",
)  # fmt: skip

# (variable, option, bad value, the reason the message gives)
BAD = [
    ("WORKERS", "--workers", "0", "must be at least 1, not 0"),
    ("WORKERS", "--workers", "2.5", "must be a whole number, not 2.5"),
    ("WORKERS", "--workers", "many", "must be a number, not 'many'"),
    ("CHUNK_SIZE_MB", "--chunk-size-mb", "0", "must be greater than 0, not 0"),
    ("CHUNK_SIZE_MB", "--chunk-size-mb", "-1", "must be greater than 0, not -1"),
    ("CHUNK_SIZE_MB", "--chunk-size-mb", "inf", "must be a finite number, not inf"),
    ("CHUNK_SIZE_MB", "--chunk-size-mb", "nan", "must be a finite number, not nan"),
    ("CHUNK_SIZE_MB", "--chunk-size-mb", "lots", "must be a number, not 'lots'"),
    ("MAX_ITEM_MB", "--max-item-mb", "0", "must be greater than 0, not 0"),
    ("MAX_ITEM_MB", "--max-item-mb", "big", "must be a number, not 'big'"),
    ("GZIP_LEVEL", "--gzip-level", "4", "must be a whole number from 0 to 3, not 4"),
    ("GZIP_LEVEL", "--gzip-level", "-1", "must be a whole number from 0 to 3, not -1"),
    ("GZIP_LEVEL", "--gzip-level", "1.5", "must be a whole number from 0 to 3, not 1.5"),
    ("GZIP_LEVEL", "--gzip-level", "fast", "must be a number, not 'fast'"),
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("variable", "option", "value", "reason"), BAD)
def test_a_bad_variable_exits_2_with_one_line(clean_env, capsys, variable, option, value, reason) -> None:
    clean_env.setenv(variable, value)
    assert main(["plan", "does-not-matter.nwb"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {variable} ({option}) {reason}"]


@pytest.mark.parametrize(("variable", "option", "value", "reason"), BAD)
def test_a_bad_option_exits_2_with_the_same_line(clean_env, capsys, tmp_path, variable, option, value, reason) -> None:
    command = ["convert", "x.nwb", "-o", str(tmp_path)] if option == "--workers" else ["plan", "x.nwb"]
    assert main([*command, option, value]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {variable} ({option}) {reason}"]


def test_an_option_wins_over_its_variable(clean_env) -> None:
    clean_env.setenv("WORKERS", "0")  # refused: the option replaces it before validation
    assert Settings.from_env(workers="3").workers == 3
    clean_env.setenv("WORKERS", "2")
    clean_env.setenv("CHUNK_SIZE_MB", "5")
    assert Settings.from_env(chunk_size_mb="0.5").chunk_size_mb == 0.5
    given_none = Settings.from_env(chunk_size_mb=None, workers=None)  # None: option not given
    assert (given_none.chunk_size_mb, given_none.workers) == (5.0, 2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IMPORTER_ENABLED": "maybe"}, "IMPORTER_ENABLED must be true or false, not 'maybe'"),
        ({"SKIP_INVALID_SERIES": "2"}, "SKIP_INVALID_SERIES (--skip-invalid-series) must be true or false, not 2"),
    ],
)
def test_booleans_have_the_same_message_form(clean_env, capsys, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        Settings.from_env(env)
    assert str(e.value) == message
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert main(["run"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]


@pytest.mark.parametrize(
    ("value", "enabled"), [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("Off", False)]
)
def test_boolean_spellings(value: str, enabled: bool) -> None:
    assert Settings.from_env({"IMPORTER_ENABLED": value}).importer_enabled is enabled
    assert Settings.from_env({"SKIP_INVALID_SERIES": value}).skip_invalid_series is enabled


def test_one_importer_default_rule_for_every_model() -> None:
    cloud = {"OUTPUT_BUCKET": "b"}
    assert Settings.from_env({}).importer_enabled is False
    assert Settings.from_env({"ENVIRONMENT": "production"}).importer_enabled is True
    assert CloudSettings.from_env(cloud).importer_enabled is False
    assert CloudSettings.from_env(cloud | {"ENVIRONMENT": "production"}).importer_enabled is True
    assert (
        CloudSettings.from_env(cloud | {"ENVIRONMENT": "production", "IMPORTER_ENABLED": "false"}).importer_enabled
        is False
    )


def test_gzip_level_defaults_compress_where_the_output_is_uploaded() -> None:
    assert Settings.from_env({}).gzip_level == LOCAL_GZIP_LEVEL
    assert Settings.from_env({"IMPORTER_ENABLED": "true"}).gzip_level == COMPRESSED_GZIP_LEVEL
    assert Settings.from_env({"ENVIRONMENT": "production"}).gzip_level == COMPRESSED_GZIP_LEVEL
    assert Settings.from_env({"ENVIRONMENT": "production", "GZIP_LEVEL": "0"}).gzip_level == 0
    assert Settings.from_env({"GZIP_LEVEL": "3"}, gzip_level="2").gzip_level == 2
    assert CloudSettings.from_env({"OUTPUT_BUCKET": "b"}).gzip_level == COMPRESSED_GZIP_LEVEL
    assert CloudSettings.from_env({"OUTPUT_BUCKET": "b", "GZIP_LEVEL": "0"}).gzip_level == 0


def test_an_execution_input_overrides_the_gzip_level() -> None:
    cloud = CloudSettings.from_env({"OUTPUT_BUCKET": "b", "GZIP_LEVEL": "2"})
    assert cloud.conversion_settings(Overrides()).options.gzip_level == 2
    assert cloud.conversion_settings(Overrides(gzip_level=0)).options.gzip_level == 0
    with pytest.raises(ValidationError):
        Overrides(gzip_level=4)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "OUTPUT_BUCKET is not set"),
        ({"OUTPUT_BUCKET": "  "}, "OUTPUT_BUCKET is not set"),
        ({"OUTPUT_BUCKET": "b", "BATCH_MB": "0"}, "BATCH_MB must be greater than 0, not 0"),
        ({"OUTPUT_BUCKET": "b", "UPLOAD_BATCH_FILES": "0"}, "UPLOAD_BATCH_FILES must be at least 1, not 0"),
        ({"OUTPUT_BUCKET": "b", "UPLOAD_BATCH_FILES": "2.5"}, "UPLOAD_BATCH_FILES must be a whole number, not 2.5"),
        ({"OUTPUT_BUCKET": "b", "MAX_ITEM_MB": "nan"}, "MAX_ITEM_MB must be a finite number, not nan"),
        ({"OUTPUT_BUCKET": "b", "MAX_OUTPUT_GB": "0"}, "MAX_OUTPUT_GB must be greater than 0, not 0"),
        ({"OUTPUT_BUCKET": "b", "MAX_OUTPUT_GB": "lots"}, "MAX_OUTPUT_GB must be a number, not 'lots'"),
    ],
)
def test_cloud_settings_use_the_same_checks(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        CloudSettings.from_env(env)
    assert str(e.value) == message


def test_a_blank_records_prefix_is_refused() -> None:
    # RecordsPrefix's expiry rule would then delete the chunk output too.
    with pytest.raises(ConfigurationError) as e:
        CloudSettings.from_env({"OUTPUT_BUCKET": "b", "RECORDS_PREFIX": ""})
    assert str(e.value).startswith("RECORDS_PREFIX must ")


def test_cloud_defaults_and_blanks() -> None:
    s = CloudSettings.from_env({"OUTPUT_BUCKET": "b", "MAX_ITEM_MB": "100", "OUTPUT_PREFIX": "", "CHUNK_SIZE_MB": ""})
    assert (s.batch_mb, s.output_prefix, s.records_prefix, s.chunk_size_mb) == (100.0, "", "records/", 1.0)
    assert CloudSettings.from_env({"OUTPUT_BUCKET": "b", "BATCH_MB": "8"}).batch_mb == 8.0
    assert (
        CloudSettings.from_env({"OUTPUT_BUCKET": "b", "PENNSIEVE_API_HOST": "http://h/"}).pennsieve_api_host
        == "http://h"
    )


def test_secrets_are_masked_everywhere(clean_env, capsys) -> None:
    secrets = {"PENNSIEVE_API_KEY": "key-123", "PENNSIEVE_API_SECRET": "sec-456", "SESSION_TOKEN": "tok-789",
               "REFRESH_TOKEN": "ref-000"}  # fmt: skip
    s = Settings.from_env(secrets | {"WORKERS": "2"})
    shown = repr(s) + str(s) + s.model_dump_json() + str(s.model_dump())
    assert not any(value in shown for value in secrets.values())
    assert s.refresh_token is not None and s.refresh_token.get_secret_value() == "ref-000"
    # ...and in an error about another setting.
    for name, value in (secrets | {"WORKERS": "0"}).items():
        clean_env.setenv(name, value)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "WORKERS (--workers)" in err and not any(value in err for value in secrets.values())


def test_importing_the_settings_does_not_load_h5py() -> None:
    code = (
        "import sys, nwb2pennsieve.settings, nwb2pennsieve.cloud.settings;"
        " print(sorted(m for m in ('h5py', 'numpy', 'nwb2pennsieve.plan.planner') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("env", "flags", "expected"),
    [
        ({}, {}, ()),
        ({"SERIES": ""}, {}, ()),
        ({"SERIES": "/acquisition/A, acquisition/B/ ,,"}, {}, ("/acquisition/A", "/acquisition/B")),
        ({"SERIES": "/acquisition/A"}, {"series": ["x/Y", "/x/Y"]}, ("/x/Y",)),  # the flag wins, de-duplicated
    ],
)
def test_series_from_the_environment_or_the_flags(env: dict[str, str], flags: dict, expected: tuple) -> None:
    assert Settings.from_env(env, **flags).series == expected


def test_plan_timeout_and_max_output_settings() -> None:
    assert Settings.from_env({}).plan_timeout_s == 600.0
    assert Settings.from_env({"PLAN_TIMEOUT_S": "2.5"}).plan_timeout_s == 2.5
    assert Settings.from_env({"PLAN_TIMEOUT_S": "0"}).plan_timeout_s == 0.0  # plan in this process
    for bad, reason in (("-1", "0 or more, not -1"), ("soon", "a number, not 'soon'")):
        with pytest.raises(ConfigurationError) as e:
            Settings.from_env({"PLAN_TIMEOUT_S": bad})
        assert str(e.value) == f"PLAN_TIMEOUT_S must be {reason}"
    assert CloudSettings.from_env({"OUTPUT_BUCKET": "b"}).max_output_gb == 2000.0
    assert CloudSettings.from_env({"OUTPUT_BUCKET": "b", "MAX_OUTPUT_GB": "0.5"}).max_output_gb == 0.5


def test_output_formats_in_any_order_and_case(clean_env: pytest.MonkeyPatch) -> None:
    both = Settings.from_env({"OUTPUT_FORMATS": " Bundle,chunks "})
    assert both.output_formats == "chunks,bundle"
    assert both.conversion_options().formats == {OutputFormat.CHUNKS, OutputFormat.BUNDLE}
    assert Settings.from_env({}, output_formats="bundle").conversion_options().formats == {OutputFormat.BUNDLE}
    with pytest.raises(ConfigurationError, match=r"OUTPUT_FORMATS \(--formats\) must be chunks, bundle or"):
        Settings.from_env({"OUTPUT_FORMATS": "zarr"})


def test_importer_needs_chunk_files(clean_env: pytest.MonkeyPatch) -> None:
    assert not Settings.from_env({"OUTPUT_FORMATS": "bundle", "ENVIRONMENT": "production"}).importer_enabled
    with pytest.raises(ConfigurationError, match="IMPORTER_ENABLED must be false when OUTPUT_FORMATS has no chunks"):
        Settings.from_env({"OUTPUT_FORMATS": "bundle", "IMPORTER_ENABLED": "true"})


def test_bundle_zstd_level(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({}).bundle_zstd_level == DEFAULT_BUNDLE_ZSTD_LEVEL
    assert Settings.from_env({"BUNDLE_ZSTD_LEVEL": " 5 "}).bundle_zstd_level == 5
    for bad in ("0", "23", "2.5", "fast"):
        with pytest.raises(ConfigurationError, match=r"BUNDLE_ZSTD_LEVEL must be a"):
            Settings.from_env({"BUNDLE_ZSTD_LEVEL": bad})


def test_bundle_layout_and_deidentify() -> None:
    assert Settings.from_env({}).conversion_options().bundle_layout == "ts-zarr"
    options = Settings.from_env({"BUNDLE_LAYOUT": " Legacy "}).conversion_options()
    assert options.bundle_layout == "legacy" and not options.deidentify
    assert Settings.from_env({"DEIDENTIFY": "yes"}, bundle_layout="ts-zarr").conversion_options().deidentify
    with pytest.raises(
        ConfigurationError, match=r"BUNDLE_LAYOUT \(--bundle-layout\) must be ts-zarr or legacy, not 'zarr'"
    ):
        Settings.from_env({"BUNDLE_LAYOUT": "zarr"})
    with pytest.raises(
        ConfigurationError, match=r"DEIDENTIFY \(--deidentify\) must be false with BUNDLE_LAYOUT=legacy"
    ):
        Settings.from_env({"DEIDENTIFY": "true"}, bundle_layout="legacy")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["convert", "x.nwb", "--ouput", "out"], "unknown option --ouput (did you mean --output?)"),
        (
            ["convert", "x.nwb", "-o", "out", "--chunk-sise-mb=2"],
            "unknown option --chunk-sise-mb (did you mean --chunk-size-mb?)",
        ),
        (["--debug", "inspect", "--jsn", "x.nwb"], "unknown option --jsn (did you mean --json?)"),
        (["plan", "x.nwb", "--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_an_option_typo_is_named_with_the_option_meant(capsys, argv: list[str], said: str) -> None:
    from nwb2pennsieve.local.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {said}")


def test_a_unique_prefix_of_an_option_still_works(capsys) -> None:
    from nwb2pennsieve.local.cli import main, sample_path

    assert main(["plan", str(sample_path()), "--chunk-size", "2"]) == 0
    assert '"chunk_samples": 262144' in capsys.readouterr().out
