"""Settings of the importer, read from the environment like the reference processor."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

from ..config import env_flag
from ..errors import ConfigurationError

DEFAULT_API_HOST = "https://api.pennsieve.net"
DEFAULT_API_HOST2 = "https://api2.pennsieve.net"


def _opt(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


class PennsieveSettings(BaseModel):
    """Environment: ``ENVIRONMENT`` (local/production), ``IMPORTER_ENABLED`` (default true outside
    local), ``PENNSIEVE_API_KEY``/``PENNSIEVE_API_SECRET`` or ``SESSION_TOKEN`` (+``REFRESH_TOKEN``),
    ``PENNSIEVE_API_HOST``/``PENNSIEVE_API_HOST2``, ``INTEGRATION_ID``.

    Secrets are :class:`~pydantic.SecretStr`: they print as ``**********``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: str = "local"
    importer_enabled: bool = False
    api_host: str = DEFAULT_API_HOST
    api_host2: str = DEFAULT_API_HOST2
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    session_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    integration_id: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PennsieveSettings:
        env = os.environ if env is None else env
        environment = (_opt(env, "ENVIRONMENT") or "local").lower()
        secret = {
            field: SecretStr(v) if (v := _opt(env, name)) else None
            for field, name in (
                ("api_key", "PENNSIEVE_API_KEY"),
                ("api_secret", "PENNSIEVE_API_SECRET"),
                ("session_token", "SESSION_TOKEN"),
                ("refresh_token", "REFRESH_TOKEN"),
            )
        }
        return cls(
            environment=environment,
            importer_enabled=env_flag("IMPORTER_ENABLED", environment != "local", env),
            api_host=(_opt(env, "PENNSIEVE_API_HOST") or DEFAULT_API_HOST).rstrip("/"),
            api_host2=(_opt(env, "PENNSIEVE_API_HOST2") or DEFAULT_API_HOST2).rstrip("/"),
            integration_id=_opt(env, "INTEGRATION_ID"),
            **secret,
        )

    @property
    def has_credentials(self) -> bool:
        return self.session_token is not None or (self.api_key is not None and self.api_secret is not None)

    def require_credentials(self) -> None:
        if self.api_key is not None and self.api_secret is None:
            raise ConfigurationError("PENNSIEVE_API_KEY is set but PENNSIEVE_API_SECRET is not")
        if not self.has_credentials:
            raise ConfigurationError(
                "no Pennsieve credentials: set SESSION_TOKEN (and REFRESH_TOKEN) or"
                " PENNSIEVE_API_KEY and PENNSIEVE_API_SECRET"
            )
