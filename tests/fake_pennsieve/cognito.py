"""Cognito for the fake Pennsieve: moto's Cognito served over real HTTP on 127.0.0.1.

Two pools like Pennsieve's: the *user pool* (platform users, whose session tokens are refreshed
with ``userPool.appClientId``) and the *token pool* (API key/secret logins on
``tokenPool.appClientId``). API keys are users of the token pool whose password is the secret.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@dataclass
class ApiKey:
    key: str
    secret: str


class MotoCognito:
    """Owns (or reuses) a moto server and the two pools."""

    def __init__(self, endpoint: str | None = None) -> None:
        self._server: ThreadedMotoServer | None = None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        if endpoint is None:
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
        self.endpoint = endpoint
        self.idp: Any = boto3.client(
            "cognito-idp",
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.user_pool_id = self.idp.create_user_pool(PoolName=f"users-{uuid.uuid4().hex[:6]}")["UserPool"]["Id"]
        self.user_client_id = self._client(self.user_pool_id, "users")
        self.token_pool_id = self.idp.create_user_pool(PoolName=f"tokens-{uuid.uuid4().hex[:6]}")["UserPool"]["Id"]
        self.token_client_id = self._client(self.token_pool_id, "tokens")

    def _client(self, pool: str, name: str) -> str:
        answer = self.idp.create_user_pool_client(
            UserPoolId=pool,
            ClientName=name,
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )
        client_id: str = answer["UserPoolClient"]["ClientId"]
        return client_id

    def _user(self, pool: str, username: str, password: str) -> None:
        self.idp.admin_create_user(UserPoolId=pool, Username=username, TemporaryPassword=password + "-tmp")
        self.idp.admin_set_user_password(UserPoolId=pool, Username=username, Password=password, Permanent=True)

    def new_api_key(self) -> ApiKey:
        key = ApiKey(key=str(uuid.uuid4()), secret="S3cr3t-" + uuid.uuid4().hex + "!A9")
        self._user(self.token_pool_id, key.key, key.secret)
        return key

    def new_session(self) -> tuple[str, str]:
        """(access token, refresh token) of a new platform user, like a workflow runner gets."""
        username, password = f"user-{uuid.uuid4().hex[:8]}", "Pw-" + uuid.uuid4().hex + "!A9"
        self._user(self.user_pool_id, username, password)
        result = self.idp.initiate_auth(
            ClientId=self.user_client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )["AuthenticationResult"]
        return result["AccessToken"], result["RefreshToken"]

    def is_valid(self, token: str) -> bool:
        """Ask moto whether it issued ``token`` (moto does not check ``exp``; the fake does expiry)."""
        try:
            self.idp.get_user(AccessToken=token)
        except self.idp.exceptions.NotAuthorizedException:
            return False
        except Exception:
            return False
        return True

    def config(self) -> dict[str, Any]:
        """The body of ``GET /authentication/cognito-config``."""
        return {
            "region": REGION,
            "userPool": {"region": REGION, "id": self.user_pool_id, "appClientId": self.user_client_id},
            "tokenPool": {"region": REGION, "id": self.token_pool_id, "appClientId": self.token_client_id},
            "identityPool": {"region": REGION, "id": f"{REGION}:00000000-0000-0000-0000-000000000000"},
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
