"""The stack's settings, from the functions' environment (set by ``template.yaml``)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator

from ..errors import InvalidInputError
from ..settings import (
    COMPRESSED_GZIP_LEVEL,
    DEFAULT_MAX_ITEM_MB,
    DEFAULT_MAX_OUTPUT_GB,
    CommonSettings,
    Count,
    MiB,
    Positive,
    Text,
    _invalid,
)
from .models import ConversionSettings, Overrides

# Seconds of uploads at the rate one process reaches (bench/results-import.md); the batch's
# names live in an S3 object (5,000 names are ~300 KB, over Step Functions' 256 KB payload limit).
DEFAULT_UPLOAD_BATCH_FILES = 5_000


def _required(value: Any) -> str:
    return str(value).strip()


class CloudSettings(CommonSettings):
    """Environment of the Plan, WriteChunks, Finalize and UploadFiles functions.

    ``OUTPUT_BUCKET`` (required), ``OUTPUT_PREFIX`` (chunk files of ``a/b.nwb`` go under
    ``{OUTPUT_PREFIX}a/b/``), ``RECORDS_PREFIX`` (the records of ``a/b.nwb``, its plan and write
    batches, go under ``{RECORDS_PREFIX}a/b/{version}/``: :mod:`.records`, map-run results under
    ``{RECORDS_PREFIX}map-results/``), ``CHUNK_SIZE_MB``, ``MAX_ITEM_MB``, ``GZIP_LEVEL`` (default
    1: compressed), ``BATCH_MB`` (default ``MAX_ITEM_MB``), ``IMPORTER_ENABLED``,
    ``SKIP_INVALID_SERIES``, ``OUTPUT_FORMATS`` (``chunks``, ``bundle`` or both),
    ``UPLOAD_BATCH_FILES`` (chunk files one UploadFiles invocation presigns
    and PUTs), ``MAX_OUTPUT_GB`` (the Plan refuses a file whose output would take more),
    ``PENNSIEVE_API_HOST``, ``PENNSIEVE_API_HOST2``, ``PENNSIEVE_SECRET_ARN`` (the ARN of
    the credentials secret, never the credentials). Parsed by :meth:`CommonSettings.from_env`.
    """

    # A blank output prefix is the bucket's root; a blank records prefix is refused (RecordsPrefix's
    # expiry rule would delete the output).
    _blank_is_a_value: ClassVar[frozenset[str]] = CommonSettings._blank_is_a_value | {"output_prefix", "records_prefix"}

    output_bucket: Annotated[str, BeforeValidator(_required), Field(min_length=1)]
    output_prefix: str = "converted/"
    records_prefix: str = "records/"
    batch_mb: MiB = Field(None)  # type: ignore[assignment]
    upload_batch_files: Count = DEFAULT_UPLOAD_BATCH_FILES
    max_output_gb: Positive = DEFAULT_MAX_OUTPUT_GB
    pennsieve_secret_arn: Text = ""
    state_machine_arn: Text = ""
    max_running_executions: Count = 5
    writers_reserved_concurrency: Annotated[int, Field(ge=0)] = 0
    write_concurrency: Count = 100
    admission_retry_seconds: Count = 300
    admission_max_wait_hours: Positive = 168
    admission_queue_url: Text = ""
    admission_slots_table: Text = ""
    dead_letter_queue_url: Text = ""

    @field_validator("records_prefix")
    @classmethod
    def _records_prefix_not_blank(cls, value: str) -> str:
        if not value.strip("/"):
            raise _invalid("a folder such as records/ (the records expire; a blank prefix would expire the output)")
        return value

    @field_validator("batch_mb", mode="before")
    @classmethod
    def _batch_default(cls, value: Any, info: ValidationInfo) -> Any:
        # (MAX_ITEM_MB's own error is reported when it is invalid.)
        return info.data.get("max_item_mb", DEFAULT_MAX_ITEM_MB) if value is None else value

    @classmethod
    def default_gzip_level(cls, importing: bool) -> int:
        # The cloud's output is stored in S3 and usually uploaded: compressed either way.
        return COMPRESSED_GZIP_LEVEL

    def conversion_settings(self, overrides: Overrides) -> ConversionSettings:
        """The stack's settings with the execution input's overrides, checked by the same rules."""
        given = {
            "chunk_size_mb": overrides.chunk_size_mb,
            "max_item_mb": overrides.max_item_mb,
            "batch_mb": overrides.batch_mb,
            "gzip_level": overrides.gzip_level,
            "importer_enabled": overrides.importer_enabled,
            "skip_invalid_series": overrides.skip_invalid_series,
            "output_formats": overrides.output_formats,
        }
        given = {name: value for name, value in given.items() if value is not None}
        formats = overrides.output_formats
        if formats is not None and "importer_enabled" not in given and "chunks" not in formats.lower():
            given["importer_enabled"] = False  # no chunk files: nothing to import
        try:
            effective = type(self).model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            raise InvalidInputError(f"the execution input's settings are invalid: {self._describe(exc)}") from None
        return ConversionSettings(
            options=effective.conversion_options(),
            batch_mb=effective.batch_mb,
            importer_enabled=effective.importer_enabled,
        )
