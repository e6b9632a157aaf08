"""Finalize's link to the Pennsieve importer (its own issue) and to the credentials secret.

The credentials live in a Secrets Manager secret whose ARN the stack passes as
``PENNSIEVE_SECRET_ARN``; the secret is a JSON object with any of ``PENNSIEVE_API_KEY``,
``PENNSIEVE_API_SECRET``, ``INTEGRATION_ID``, ``SESSION_TOKEN``, ``REFRESH_TOKEN``. They are
read at import time only, go to the importer as an environment mapping and are never logged
or returned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from ..models import Plan
from ..storage import Store

SECRET_KEYS = ("PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET", "INTEGRATION_ID", "SESSION_TOKEN", "REFRESH_TOKEN")


def credentials_env(
    secrets_client: Any, secret_arn: str, *, api_host: str, api_host2: str, integration_id: str | None = None
) -> dict[str, str]:
    """The importer's environment: API hosts plus the credentials read from the secret."""
    if not secret_arn:
        raise ConfigurationError("IMPORTER_ENABLED is true but PENNSIEVE_SECRET_ARN is not set")
    try:
        raw = secrets_client.get_secret_value(SecretId=secret_arn)["SecretString"]
        values = json.loads(raw)
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
    if integration_id:
        env["INTEGRATION_ID"] = integration_id
    return env


def import_output(plan: Plan, store: Store, env: Mapping[str, str]) -> dict[str, Any]:
    """Run the Pennsieve import of ``store`` (the chunk files and channel metadata of ``plan``).

    Calls the importer issue's entry point, ``nwb2pennsieve.pennsieve.cli.import_output(store,
    PennsieveSettings)``, and returns its small, secret-free summary.
    """
    try:
        from ..pennsieve.cli import import_output as run_import
        from ..pennsieve.config import PennsieveSettings
    except ImportError:
        raise ConfigurationError(
            "IMPORTER_ENABLED is true but this build has no Pennsieve importer (nwb2pennsieve.pennsieve)",
            file=plan.source,
        ) from None
    settings = PennsieveSettings.from_env({**env, "IMPORTER_ENABLED": "true"})
    result = run_import(store, settings, integration_id=env.get("INTEGRATION_ID"))
    dumped = result.model_dump(mode="json") if hasattr(result, "model_dump") else {"result": str(result)}
    return dict(dumped)
