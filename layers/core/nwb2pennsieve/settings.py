"""Settings: one model per process kind, one parser, one message form.

Environment variables are named like Pennsieve's reference processor (``ENVIRONMENT``,
``INPUT_DIR``, ``OUTPUT_DIR``, ``CHUNK_SIZE_MB``, ``IMPORTER_ENABLED``, ``PENNSIEVE_API_KEY``, ...)
plus ours (``MAX_ITEM_MB``, ``WORKERS``, ``SKIP_INVALID_SERIES``, ...): a field's variable is its
name in upper case. :meth:`CommonSettings.from_env` is the only parser: it reads the environment
(pydantic-settings' environment source), lays the command line's flags over it and validates
both the same way, so ``--workers 0`` and ``WORKERS=0`` fail alike with
``WORKERS (--workers) must be at least 1, not 0`` (a :class:`ConfigurationError`: exit status 2).

:class:`Settings` is what the command line, the local pool and the importer read;
:class:`~nwb2pennsieve.cloud.settings.CloudSettings` is the Lambda functions' environment.
This module imports neither the planner (plan/) nor h5py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from .errors import ConfigurationError
from .options import (
    DEFAULT_BUNDLE_ZSTD_LEVEL,
    DEFAULT_CHUNK_SIZE_MB,
    DEFAULT_MAX_ITEM_MB,
    BundleLayout,
    ConversionOptions,
    formats_text,
    parse_formats,
)

# Planning a file reads metadata and timestamps: seconds even for a big file. A damaged file can
# send HDF5 into an endless loop, so the local pool plans in a child process given this long.
DEFAULT_PLAN_TIMEOUT_S = 600.0
# The local pool stops when no worker has read a block of rows for this long (a decompression
# filter looping on damaged data): a block is at most 32 MiB, read in well under a second from disk.
DEFAULT_READ_STALL_S = 120.0
# A URL input: seconds without any byte of an answer, and without any range read at all, before
# the network is declared failed (each range is tried up to 5 times within that budget).
DEFAULT_NETWORK_TIMEOUT_S = 15.0
# `run`: a file modified less than this long ago is watched this long; if it still grows it is
# skipped (a copy into INPUT_DIR that is not finished).
DEFAULT_SETTLE_S = 2.0
DEFAULT_NETWORK_BUDGET_S = 60.0
# The cloud refuses a file whose planned output (chunk files) is bigger than this many GB (1e9 bytes):
# a tiny damaged file can declare an absurd length, which would read as fill values.
DEFAULT_MAX_OUTPUT_GB = 2000.0
# GZIP_LEVEL: 0 = stored gzip blocks (the reference's framing), 1-3 = ISA-L deflate. Uploads are
# the cost wherever the output leaves the machine (an import, the cloud), so those compress; plain
# local conversion uses what bench/results-compression.md measured fastest here.
COMPRESSED_GZIP_LEVEL = 1
LOCAL_GZIP_LEVEL = 0
DEFAULT_OUTPUT_FORMATS = "chunks"
DEFAULT_API_HOST = "https://api.pennsieve.net"
DEFAULT_API_HOST2 = "https://api2.pennsieve.net"
# The viewer-asset import (docs/importer.md): the asset's name (one per converter deployment; name
# and type are what a rerun looks for), its type, and the status that marks it finished (the
# reference processor writes "active"; another Pennsieve component calls it "ready").
DEFAULT_ASSET_NAME = "nwb-asset"
DEFAULT_ASSET_TYPE = "timeseries"
DEFAULT_ASSET_FINISHED_STATUS = "active"
ASSET_CREATED_STATUS = "created"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _invalid(requirement: str) -> PydanticCustomError:
    return PydanticCustomError("setting", requirement)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise _invalid("a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _invalid("a number") from None
    if not math.isfinite(number):
        raise _invalid("a finite number")
    return number


def _positive_number(value: Any) -> float:
    number = _number(value)
    if not number > 0:
        raise _invalid("greater than 0")
    return number


def _non_negative_number(value: Any) -> float:
    number = _number(value)
    if not number >= 0:
        raise _invalid("0 or more")
    return number


def _count(value: Any) -> int:
    number = _number(value)
    if number != int(number):
        raise _invalid("a whole number")
    if number < 1:
        raise _invalid("at least 1")
    return int(number)


def _gzip_level(value: Any) -> int:
    number = _number(value)
    if number != int(number) or not 0 <= number <= 3:
        raise _invalid("a whole number from 0 to 3")
    return int(number)


def _zstd_level(value: Any) -> int:
    number = _number(value)
    if number != int(number) or not 1 <= number <= 22:
        raise _invalid("a whole number from 1 to 22")
    return int(number)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _invalid("true or false")


def _text(value: Any) -> str:
    return str(value).strip()


def _non_blank(value: Any) -> str:
    text = _text(value)
    if not text:
        raise _invalid("not blank")
    return text


def _finished_status(value: Any) -> str:
    text = _non_blank(value)
    if text.lower() == ASSET_CREATED_STATUS:
        raise _invalid(f"the status of a finished asset (not {ASSET_CREATED_STATUS!r}, a new one's)")
    return text


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value) or None


def _optional_file(value: Any) -> Path | None:
    if value is None or not _text(value):
        return None
    path = Path(_text(value))
    if not path.is_file():
        raise _invalid("a file" + (" (it does not exist)" if not path.exists() else ""))
    return path


def _series_paths(value: Any) -> tuple[str, ...]:
    """``SERIES=/a,/b`` or ``--series /a --series /b``: HDF5 paths of series groups, in the form
    the plan has them (leading ``/``, no trailing ``/``); blank items are dropped."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    paths = []
    for item in items:
        if not isinstance(item, str):
            raise _invalid("HDF5 paths of series")
        text = item.strip().strip("/")
        if text and "/" + text not in paths:
            paths.append("/" + text)
    return tuple(paths)


def _formats(value: Any) -> str:
    """``chunks``, ``bundle`` or both, comma-separated (any order, any case): kept in canonical order."""
    try:
        return formats_text(parse_formats(str(value)))
    except ValueError as exc:
        raise _invalid(str(exc)) from None


def _layout(value: Any) -> str:
    """``ts-zarr`` (default) or ``legacy``, any case."""
    text = _text(value).lower()
    if text not in {layout.value for layout in BundleLayout}:
        raise _invalid("ts-zarr or legacy")
    return text


def _host(value: Any) -> str:
    return _text(value).rstrip("/")


def _secret(value: Any) -> SecretStr | None:
    if value is None:
        return None
    text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return SecretStr(text.strip()) if text.strip() else None


MiB = Annotated[float, BeforeValidator(_positive_number)]
"""A finite number of MiB greater than 0."""
Positive = Annotated[float, BeforeValidator(_positive_number)]
"""A finite number greater than 0 (seconds, GB)."""
NonNegative = Annotated[float, BeforeValidator(_non_negative_number)]
"""A finite number, 0 or more (seconds: 0 turns a limit off)."""
Count = Annotated[int, BeforeValidator(_count)]
"""A whole number, at least 1."""
GzipLevel = Annotated[int, BeforeValidator(_gzip_level)]
"""0 (stored gzip blocks) to 3 (ISA-L deflate levels)."""
ZstdLevel = Annotated[int, BeforeValidator(_zstd_level)]
"""A Zstd compression level, 1 to 22."""
Switch = Annotated[bool, BeforeValidator(_boolean)]
"""``1/true/yes/on`` or ``0/false/no/off`` (any case; blank is false)."""
Text = Annotated[str, BeforeValidator(_text)]
Host = Annotated[str, BeforeValidator(_host)]
NonBlank = Annotated[str, BeforeValidator(_non_blank)]
"""Text that is not blank (an asset's name or type)."""
SeriesPaths = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_series_paths)]
"""Comma-separated HDF5 paths of series groups (``/acquisition/ElectricalSeries,...``); empty: all."""
Formats = Annotated[str, BeforeValidator(_formats)]
"""``chunks``, ``bundle`` or ``chunks,bundle`` (the canonical form of what was given)."""
Layout = Annotated[str, BeforeValidator(_layout)]
"""``ts-zarr`` or ``legacy``: the viewer bundle's layout."""
Secret = Annotated[SecretStr | None, BeforeValidator(_secret)]
"""Prints as ``**********``; the value only through ``get_secret_value()``."""


class _EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _shown(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return repr(value)
        return value.strip()
    return str(value)


class CommonSettings(BaseSettings):
    """What the local and the cloud settings share; :meth:`from_env` parses both."""

    # validate_default (pydantic-settings' default): the defaults go through the same validators.
    model_config = SettingsConfigDict(frozen=True, extra="forbid", case_sensitive=False, validate_default=True)

    # Blank variables are unset (the default applies), except these, where blank is a value.
    _blank_is_a_value: ClassVar[frozenset[str]] = frozenset({"importer_enabled", "skip_invalid_series"})
    # The command-line options that set a field, named in error messages beside the variable.
    options: ClassVar[dict[str, str]] = {}

    environment: str = "local"
    chunk_size_mb: MiB = DEFAULT_CHUNK_SIZE_MB
    max_item_mb: MiB = DEFAULT_MAX_ITEM_MB
    skip_invalid_series: Switch = False
    output_formats: Formats = DEFAULT_OUTPUT_FORMATS
    bundle_zstd_level: ZstdLevel = DEFAULT_BUNDLE_ZSTD_LEVEL
    bundle_layout: Layout = BundleLayout.TSZARR.value
    deidentify: Switch = False
    # Like the reference processor: the importer runs by default everywhere but ENVIRONMENT=local.
    importer_enabled: Switch = Field(None)  # type: ignore[assignment]
    # Default: compressed when importing (the upload is the cost), else LOCAL_GZIP_LEVEL.
    gzip_level: GzipLevel = Field(None)  # type: ignore[assignment]
    pennsieve_api_host: Host = DEFAULT_API_HOST
    pennsieve_api_host2: Host = DEFAULT_API_HOST2
    # The import: the viewer-asset flow, unless LEGACY_IMPORT_FLOW (Pennsieve's import manifest).
    legacy_import_flow: Switch = False
    asset_name: NonBlank = DEFAULT_ASSET_NAME
    asset_type: NonBlank = DEFAULT_ASSET_TYPE
    asset_finished_status: Annotated[str, BeforeValidator(_finished_status)] = DEFAULT_ASSET_FINISHED_STATUS

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> str:
        return _text(value).lower() or "local"

    @field_validator("importer_enabled", mode="before")
    @classmethod
    def _importer_default(cls, value: Any, info: ValidationInfo) -> Any:
        chunks = "chunks" in info.data.get("output_formats", DEFAULT_OUTPUT_FORMATS).split(",")
        if value is None:
            return info.data.get("environment", "local") != "local" and chunks
        if not chunks and _boolean(value):  # the importer uploads chunk files: none are written
            raise _invalid("false when OUTPUT_FORMATS has no chunks (the importer uploads chunk files)")
        return value

    @field_validator("deidentify", mode="before")
    @classmethod
    def _deidentify_needs_tszarr(cls, value: Any, info: ValidationInfo) -> Any:
        # The legacy layout's times are wall-clock (start_us, events): nothing there can be de-identified.
        if _boolean(value) and info.data.get("bundle_layout") == BundleLayout.LEGACY.value:
            raise _invalid("false with BUNDLE_LAYOUT=legacy (its times are wall-clock: only TS-Zarr de-identifies)")
        return value

    def conversion_options(self) -> ConversionOptions:
        """The conversion options these settings give (the one place they are built)."""
        return ConversionOptions(
            formats=parse_formats(self.output_formats),
            gzip_level=self.gzip_level,
            chunk_size_mb=self.chunk_size_mb,
            max_item_mb=self.max_item_mb,
            series=self.selected_series(),
            skip_invalid_series=self.skip_invalid_series,
            bundle_zstd_level=self.bundle_zstd_level,
            bundle_layout=BundleLayout(self.bundle_layout),
            deidentify=self.deidentify,
        )

    def selected_series(self) -> tuple[str, ...]:
        """The series a conversion is limited to (the cloud converts every series)."""
        return ()

    @field_validator("gzip_level", mode="before")
    @classmethod
    def _gzip_default(cls, value: Any, info: ValidationInfo) -> Any:
        return cls.default_gzip_level(bool(info.data.get("importer_enabled"))) if value is None else value

    @classmethod
    def default_gzip_level(cls, importing: bool) -> int:
        return COMPRESSED_GZIP_LEVEL if importing else LOCAL_GZIP_LEVEL

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Constructing the model directly takes only the values given: the environment is read by
        # from_env, the one parser.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **flags: Any) -> Self:
        """The settings from ``env`` (default ``os.environ``) with the command line's ``flags``
        (field names; ``None`` = not given) laid over it.

        Raises :class:`ConfigurationError` with one line per the module's message form.
        """
        environ = _EnvironmentSource(cls, os.environ if env is None else env)()
        values = {
            name: value
            for name, value in environ.items()
            if name in cls._blank_is_a_value or not (isinstance(value, str) and not value.strip())
        }
        values.update((name, value) for name, value in flags.items() if value is not None)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigurationError(cls._describe(exc)) from None

    @classmethod
    def _describe(cls, exc: ValidationError) -> str:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            option = cls.options.get(name)
            label = name.upper() + (f" ({option})" if option else "")
            if error["type"] == "setting":
                problems.append(f"{label} must be {error['msg']}, not {_shown(error['input'])}")
            elif error["type"] == "missing":
                problems.append(f"{label} is not set")
            elif error["type"] == "extra_forbidden":
                problems.append(f"{name} is not a setting")
            else:
                problems.append(f"{label}: {error['msg']}")
        return "; ".join(problems)


class Settings(CommonSettings):
    """The command line's, the local pool's and the Pennsieve importer's settings.

    ``ENVIRONMENT`` (local/production), ``INPUT_DIR``, ``OUTPUT_DIR``, ``CHUNK_SIZE_MB``,
    ``MAX_ITEM_MB``, ``GZIP_LEVEL`` (default: compressed when importing), ``WORKERS`` (default:
    CPUs), ``SKIP_INVALID_SERIES``, ``OUTPUT_FORMATS`` (chunks, bundle or both), ``BUNDLE_LAYOUT``
    (ts-zarr or legacy), ``DEIDENTIFY`` (the bundle without meta/ and free text), ``SERIES`` (the
    series to convert, comma-separated HDF5 paths; default all), ``PLAN_TIMEOUT_S`` (seconds
    planning one file may take; it runs in a child process, so a damaged file cannot hang the
    command; 0 plans in this process, without a limit), ``READ_STALL_S`` (seconds the local pool
    waits for a worker to read anything before it stops them; 0: no limit), ``NETWORK_TIMEOUT_S``
    and ``NETWORK_BUDGET_S`` (a URL input: seconds without a byte of an answer, and without any
    range read, before the network is declared failed), ``SETTLE_S`` (``run``: a file modified
    that recently is watched that long and skipped while it grows),
    ``IMPORTER_ENABLED`` (default true outside local), ``PENNSIEVE_API_KEY``/``PENNSIEVE_API_SECRET``
    or ``SESSION_TOKEN`` (+``REFRESH_TOKEN``), ``PENNSIEVE_API_HOST``/``PENNSIEVE_API_HOST2``,
    ``INTEGRATION_ID``, ``PACKAGE_MAP`` (a JSON file: input file stem → its own import target),
    ``LEGACY_IMPORT_FLOW``, ``ASSET_NAME``, ``ASSET_TYPE``, ``ASSET_FINISHED_STATUS``.
    Secrets are :class:`~pydantic.SecretStr`: they print as ``**********``.
    """

    options: ClassVar[dict[str, str]] = {
        "chunk_size_mb": "--chunk-size-mb",
        "max_item_mb": "--max-item-mb",
        "gzip_level": "--gzip-level",
        "skip_invalid_series": "--skip-invalid-series",
        "workers": "--workers",
        "series": "--series",
        "output_formats": "--formats",
        "bundle_layout": "--bundle-layout",
        "deidentify": "--deidentify",
    }

    input_dir: Path = Path("data/input")
    output_dir: Path = Path("data/output")
    workers: Count | None = None
    series: SeriesPaths = ()
    plan_timeout_s: NonNegative = DEFAULT_PLAN_TIMEOUT_S
    read_stall_s: NonNegative = DEFAULT_READ_STALL_S
    network_timeout_s: Positive = DEFAULT_NETWORK_TIMEOUT_S
    network_budget_s: Positive = DEFAULT_NETWORK_BUDGET_S
    settle_s: NonNegative = DEFAULT_SETTLE_S
    pennsieve_api_key: Secret = None
    pennsieve_api_secret: Secret = None
    session_token: Secret = None
    refresh_token: Secret = None
    integration_id: Annotated[str | None, BeforeValidator(_optional_text)] = None
    # Each input file's own import target (read and checked by the importer's preflight).
    package_map: Annotated[Path | None, BeforeValidator(_optional_file)] = None

    def selected_series(self) -> tuple[str, ...]:
        return self.series

    @property
    def has_credentials(self) -> bool:
        return self.session_token is not None or (
            self.pennsieve_api_key is not None and self.pennsieve_api_secret is not None
        )

    def require_credentials(self) -> None:
        if self.pennsieve_api_key is not None and self.pennsieve_api_secret is None:
            raise ConfigurationError("PENNSIEVE_API_KEY is set but PENNSIEVE_API_SECRET is not")
        if not self.has_credentials:
            raise ConfigurationError(
                "no Pennsieve credentials: set SESSION_TOKEN (and REFRESH_TOKEN) or"
                " PENNSIEVE_API_KEY and PENNSIEVE_API_SECRET"
            )
