"""Tokens for the Pennsieve API: a session token (+ refresh token) or an API key/secret via Cognito.

pennsieve-api.md §2: ``GET {API}/authentication/cognito-config`` gives the pools; key/secret
log in with ``USER_PASSWORD_AUTH`` on ``tokenPool.appClientId``; platform session tokens are
refreshed with ``REFRESH_TOKEN_AUTH`` on ``userPool.appClientId`` (+ ``DEVICE_KEY``, the
``device_key`` claim of the current token). One lock: when N threads see the same stale token,
one refreshes and the others reuse its result.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .errors import PennsieveAuthError

log = logging.getLogger("nwb2pennsieve.pennsieve.auth")

REFRESH_MARGIN_S = 60.0  # refresh a token this long before its ``exp``


class CognitoPool(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    region: str | None = None
    id: str | None = None
    app_client_id: str = Field(alias="appClientId")


class CognitoConfig(BaseModel):
    """The body of ``GET {API}/authentication/cognito-config``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    region: str = "us-east-1"
    user_pool: CognitoPool = Field(alias="userPool")
    token_pool: CognitoPool | None = Field(default=None, alias="tokenPool")


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, decoded without verification ({} when it is not a JWT)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def default_idp_client(region: str) -> Any:
    """A ``cognito-idp`` client that sends unsigned calls (InitiateAuth needs no AWS credentials).

    The endpoint follows botocore's ``AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER`` (tests, moto).
    """
    return boto3.client(
        "cognito-idp",
        region_name=region,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 5, "mode": "adaptive"}),
    )


class CognitoTokenProvider:
    """Access tokens from a session token and/or an API key/secret; refreshed at most once per stale token."""

    def __init__(
        self,
        *,
        load_config: Callable[[], CognitoConfig],
        session_token: SecretStr | None = None,
        refresh_token: SecretStr | None = None,
        api_key: SecretStr | None = None,
        api_secret: SecretStr | None = None,
        idp_client: Callable[[str], Any] = default_idp_client,
    ) -> None:
        if session_token is None and (api_key is None or api_secret is None):
            raise PennsieveAuthError("no credentials: a session token or an API key and secret are needed")
        self._load_config = load_config
        self._config: CognitoConfig | None = None
        self._idp_factory = idp_client
        self._idp: Any = None
        self._access: str | None = session_token.get_secret_value() if session_token else None
        self._refresh: str | None = refresh_token.get_secret_value() if refresh_token else None
        # Whose refresh token we hold decides the app client (§2).
        self._refresh_pool = "user"
        self._key = api_key
        self._secret = api_secret
        self._lock = threading.Lock()
        self.refreshes = 0
        self.logins = 0

    def _cognito(self) -> tuple[CognitoConfig, Any]:
        if self._config is None:
            self._config = self._load_config()
        if self._idp is None:
            self._idp = self._idp_factory(self._config.region)
        return self._config, self._idp

    def token(self) -> str:
        current = self._access
        if current is not None and not self._expiring(current):
            return current
        with self._lock:
            if self._access is None:
                self._login()
            elif self._expiring(self._access):
                try:
                    self._renew()
                except PennsieveAuthError as exc:
                    if self._expired(self._access):
                        raise
                    # Still valid for a few seconds: use it; the next call tries again.
                    log.warning("early token refresh failed (%s); using the current token", exc.reason)
            assert self._access is not None
            return self._access

    def refresh(self, stale: str) -> str:
        """A new token unless another thread already replaced ``stale``."""
        with self._lock:
            if self._access is not None and self._access != stale:
                return self._access
            self._renew()
            assert self._access is not None
            return self._access

    @staticmethod
    def _expiring(token: str) -> bool:
        exp = jwt_claims(token).get("exp")
        return isinstance(exp, int | float) and exp - time.time() < REFRESH_MARGIN_S

    @staticmethod
    def _expired(token: str) -> bool:
        exp = jwt_claims(token).get("exp")
        return isinstance(exp, int | float) and exp <= time.time()

    def _renew(self) -> None:
        if self._refresh is not None:
            try:
                self._refresh_with_token()
                return
            except PennsieveAuthError:
                if self._key is None:
                    raise
                log.info("refresh token rejected; logging in again with the API key")
        if self._key is not None and self._secret is not None:
            self._login()
            return
        raise PennsieveAuthError("the session token expired and there is no REFRESH_TOKEN or API key to renew it")

    def _initiate(self, client_id: str, flow: str, params: dict[str, str]) -> dict[str, Any]:
        _, idp = self._cognito()
        try:
            answer: dict[str, Any] = idp.initiate_auth(AuthFlow=flow, ClientId=client_id, AuthParameters=params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            raise PennsieveAuthError(f"Cognito {flow} was refused ({code})") from None
        except BotoCoreError as exc:
            raise PennsieveAuthError(f"Cognito {flow} failed ({type(exc).__name__})") from None
        result = answer.get("AuthenticationResult")
        if not result or "AccessToken" not in result:
            challenge = answer.get("ChallengeName", "no token")
            raise PennsieveAuthError(f"Cognito {flow} did not return a token ({challenge})")
        return dict(result)

    def _login(self) -> None:
        if self._key is None or self._secret is None:
            raise PennsieveAuthError("no API key and secret to log in with")
        config, _ = self._cognito()
        pool = config.token_pool or config.user_pool
        result = self._initiate(
            pool.app_client_id,
            "USER_PASSWORD_AUTH",
            {"USERNAME": self._key.get_secret_value(), "PASSWORD": self._secret.get_secret_value()},
        )
        self._access = result["AccessToken"]
        self._refresh = result.get("RefreshToken", self._refresh)
        self._refresh_pool = "token" if config.token_pool else "user"
        self.logins += 1
        log.info("logged in to Pennsieve with the API key")

    def _refresh_with_token(self) -> None:
        assert self._refresh is not None
        config, _ = self._cognito()
        pool = config.token_pool if self._refresh_pool == "token" and config.token_pool else config.user_pool
        params = {"REFRESH_TOKEN": self._refresh}
        device_key = jwt_claims(self._access or "").get("device_key")
        if isinstance(device_key, str) and device_key:
            params["DEVICE_KEY"] = device_key
        result = self._initiate(pool.app_client_id, "REFRESH_TOKEN_AUTH", params)
        self._access = result["AccessToken"]
        self._refresh = result.get("RefreshToken", self._refresh)
        self.refreshes += 1
        log.info("refreshed the Pennsieve token (refresh #%d)", self.refreshes)
