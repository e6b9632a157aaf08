"""The stack's settings, from the functions' environment (set by ``template.yaml``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import env_flag, env_number
from ..errors import ConfigurationError
from ..planner import DEFAULT_CHUNK_SIZE_MB, DEFAULT_MAX_ITEM_MB
from .models import Overrides, RunSettings

# Seconds of uploads at the rate one process reaches (bench/results-import.md); the batch's
# names live in an S3 object (5,000 names are ~300 KB, over Step Functions' 256 KB payload limit).
DEFAULT_UPLOAD_BATCH_FILES = 5_000


@dataclass(frozen=True)
class CloudSettings:
    """Environment of the Plan, WriteChunks, Finalize and UploadFiles functions.

    ``OUTPUT_BUCKET`` (required), ``OUTPUT_PREFIX`` (chunk files of ``a/b.nwb`` go under
    ``{OUTPUT_PREFIX}a/b/``), ``RUNS_PREFIX`` (plan and work-item manifest of ``a/b.nwb`` go
    under ``{RUNS_PREFIX}a/b/{version}/``, map-run results under ``{RUNS_PREFIX}map-runs/``),
    ``CHUNK_SIZE_MB``, ``MAX_ITEM_MB``, ``BATCH_MB``, ``IMPORTER_ENABLED``, ``SKIP_INVALID_SERIES``,
    ``UPLOAD_BATCH_FILES`` (chunk files one UploadFiles invocation presigns and PUTs),
    ``PENNSIEVE_API_HOST``, ``PENNSIEVE_API_HOST2``, ``PENNSIEVE_SECRET_ARN`` (the ARN of the
    credentials secret, never the credentials).
    """

    output_bucket: str
    output_prefix: str
    runs_prefix: str
    chunk_size_mb: float
    max_item_mb: float
    batch_mb: float
    importer_enabled: bool
    skip_invalid_series: bool
    pennsieve_api_host: str
    pennsieve_api_host2: str
    pennsieve_secret_arn: str
    upload_batch_files: int = DEFAULT_UPLOAD_BATCH_FILES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CloudSettings:
        e = dict(env if env is not None else os.environ)
        bucket = e.get("OUTPUT_BUCKET", "").strip()
        if not bucket:
            raise ConfigurationError("OUTPUT_BUCKET is not set")
        max_item = env_number("MAX_ITEM_MB", DEFAULT_MAX_ITEM_MB, e)
        upload_batch = env_number("UPLOAD_BATCH_FILES", DEFAULT_UPLOAD_BATCH_FILES, e)
        if upload_batch != int(upload_batch):
            raise ConfigurationError(f"UPLOAD_BATCH_FILES={upload_batch} is not a whole number of files")
        return cls(
            output_bucket=bucket,
            output_prefix=e.get("OUTPUT_PREFIX", "converted/"),
            runs_prefix=e.get("RUNS_PREFIX", "runs/"),
            chunk_size_mb=env_number("CHUNK_SIZE_MB", DEFAULT_CHUNK_SIZE_MB, e),
            max_item_mb=max_item,
            batch_mb=env_number("BATCH_MB", max_item, e),
            importer_enabled=env_flag("IMPORTER_ENABLED", False, e),
            skip_invalid_series=env_flag("SKIP_INVALID_SERIES", False, e),
            pennsieve_api_host=e.get("PENNSIEVE_API_HOST", "https://api.pennsieve.net"),
            pennsieve_api_host2=e.get("PENNSIEVE_API_HOST2", "https://api2.pennsieve.net"),
            pennsieve_secret_arn=e.get("PENNSIEVE_SECRET_ARN", ""),
            upload_batch_files=int(upload_batch),
        )

    def run_settings(self, overrides: Overrides) -> RunSettings:
        def pick[T](value: T | None, default: T) -> T:
            return default if value is None else value

        return RunSettings(
            chunk_size_mb=pick(overrides.chunk_size_mb, self.chunk_size_mb),
            max_item_mb=pick(overrides.max_item_mb, self.max_item_mb),
            batch_mb=pick(overrides.batch_mb, self.batch_mb),
            importer_enabled=pick(overrides.importer_enabled, self.importer_enabled),
            skip_invalid_series=pick(overrides.skip_invalid_series, self.skip_invalid_series),
        )


def join_prefix(prefix: str, key: str) -> str:
    """``{prefix}{key without its .nwb suffix}/``: one folder per input object."""
    stem = key[: -len(".nwb")] if key.lower().endswith(".nwb") else key
    stem = stem.strip("/")
    base = prefix.strip("/")
    return f"{base}/{stem}/" if base else f"{stem}/"
