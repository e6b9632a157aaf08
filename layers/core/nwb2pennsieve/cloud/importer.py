"""The cloud's link to the Pennsieve importer and to the credentials secret.

Finalize prepares the import (:func:`prepare_output`: target, channels, import manifest); each
UploadFiles invocation uploads one batch of chunk files (:func:`upload_names`).

The credentials live in a Secrets Manager secret whose ARN the stack passes as
``PENNSIEVE_SECRET_ARN``; the secret is a JSON object with ``PENNSIEVE_API_KEY`` and
``PENNSIEVE_API_SECRET``, or ``SESSION_TOKEN`` (and ``REFRESH_TOKEN``). The target (an integration
id, or a dataset and a package id) is not a secret: it comes with each execution. They are
read at import time only (Powertools' parameters utility, cached for :data:`SECRET_MAX_AGE_SECONDS`
across warm invocations), go to the importer as an environment mapping and are never logged or
returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import closing
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities import parameters

from ..errors import ConfigurationError, Nwb2PennsieveError
from ..output.storage import Store
from ..pennsieve.target import TargetSpec
from ..plan.models import Plan
from .models import Overrides, S3Ref

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

UPLOAD_WORKERS = 64  # threads of one UploadFiles invocation (what bench/bench_import.py measures)
SECRET_KEYS = ("PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET", "SESSION_TOKEN", "REFRESH_TOKEN")
# A warm function reads the secret again after this long: a rotated key is picked up within minutes.
SECRET_MAX_AGE_SECONDS = 300


def credentials_env(secret_arn: str, *, api_host: str, api_host2: str) -> dict[str, str]:
    """The importer's environment: API hosts plus the credentials read from the secret."""
    if not secret_arn:
        raise ConfigurationError("IMPORTER_ENABLED is true but PENNSIEVE_SECRET_ARN is not set")
    try:
        values: Any = parameters.get_secret(secret_arn, transform="json", max_age=SECRET_MAX_AGE_SECONDS)
    except Exception as exc:
        # The exception text never holds the secret's value; its type and the ARN are enough.
        raise ConfigurationError(
            f"cannot read the Pennsieve credentials secret {secret_arn} ({type(exc).__name__})"
        ) from None
    if not isinstance(values, dict):
        raise ConfigurationError(f"the secret {secret_arn} is not a JSON object")
    env = {k: str(values[k]) for k in SECRET_KEYS if values.get(k)}
    if not env:
        raise ConfigurationError(f"the secret {secret_arn} holds none of {', '.join(SECRET_KEYS)}")
    env["PENNSIEVE_API_HOST"] = api_host
    env["PENNSIEVE_API_HOST2"] = api_host2
    return env


def choose_import_target(s3: S3Client, source: S3Ref, overrides: Overrides) -> TargetSpec:
    """The import target: the execution input's ids, else the NWB object's S3 user metadata
    (``x-amz-meta-integration-id``, or ``dataset-id`` + ``package-id``).

    Called by Plan before any conversion work; raises a one-line error when there is none.
    """
    from ..pennsieve.target import choose_target_spec, target_spec_from_s3_object

    given = TargetSpec(
        integration_id=overrides.integration_id, dataset_id=overrides.dataset_id, package_id=overrides.package_id
    )
    try:
        return choose_target_spec(given, target_spec_from_s3_object(s3, source.bucket, source.key))
    except Nwb2PennsieveError as exc:
        raise exc.with_file(source.uri) from None


def prepare_output(
    plan: Plan, store: Store, env: Mapping[str, str], target: TargetSpec | None, *, retry: Any = None
) -> dict[str, Any]:
    """Resolve ``target``, then create or match the channels and register every chunk file in the
    import manifest (:func:`~nwb2pennsieve.pennsieve.prepare_import`); nothing is uploaded yet.

    Returns the small, secret-free :class:`~nwb2pennsieve.pennsieve.PreparedImport` summary.
    Rerun-safe: the importer records what it did in the store.
    """
    from ..pennsieve import PennsieveClient, prepare_import, resolve_target
    from ..settings import Settings

    if target is None:
        raise ConfigurationError("the importer is enabled but the plan has no import target", file=plan.source)
    settings = Settings.from_env({**env, "IMPORTER_ENABLED": "true"})
    try:
        with closing(PennsieveClient.from_settings(settings, retry=retry, pool_size=16)) as client:
            resolved = resolve_target(client, target)
            prepared = prepare_import(store, resolved, client)
    except Nwb2PennsieveError as exc:
        raise exc.with_file(plan.source) from None
    return prepared.model_dump(mode="json")


def upload_names(
    store: Store, env: Mapping[str, str], names: list[str], *, workers: int = UPLOAD_WORKERS, retry: Any = None
) -> Any:
    """Presign and PUT the chunk files ``names`` of a prepared store (one upload-Map item).

    Returns the :class:`~nwb2pennsieve.pennsieve.UploadReport`; raises
    :class:`~nwb2pennsieve.pennsieve.UploadError` listing the files that failed.
    """
    from ..pennsieve import PennsieveClient, upload_files
    from ..settings import Settings

    settings = Settings.from_env({**env, "IMPORTER_ENABLED": "true"})
    with closing(PennsieveClient.from_settings(settings, retry=retry, pool_size=max(workers, 16))) as client:
        return upload_files(store, client, names=names, workers=workers)
