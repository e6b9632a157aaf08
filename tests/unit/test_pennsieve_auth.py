"""The token provider against an in-memory Cognito (a fake, not a mock): pools, DEVICE_KEY, early refresh."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from nwb2pennsieve.pennsieve.auth import CognitoConfig, CognitoTokenProvider
from nwb2pennsieve.pennsieve.errors import PennsieveAuthError

CONFIG = CognitoConfig.model_validate(
    {
        "region": "us-east-1",
        "userPool": {"region": "us-east-1", "id": "up", "appClientId": "user-client"},
        "tokenPool": {"region": "us-east-1", "id": "tp", "appClientId": "token-client"},
    }
)


def jwt(**claims: Any) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"h.{payload}.s"


class FakeIdp:
    """Issues tokens for one key/secret and one refresh token; records what it was asked."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.lifetime = lifetime
        self.down = False
        self.n = 0
        self.lock = threading.Lock()

    def initiate_auth(self, AuthFlow: str, ClientId: str, AuthParameters: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            self.calls.append((AuthFlow, ClientId, dict(AuthParameters)))
            time.sleep(0.01)  # let concurrent callers pile up
            if self.down:
                raise ClientError({"Error": {"Code": "InternalErrorException"}}, "InitiateAuth")
            if AuthFlow == "USER_PASSWORD_AUTH" and AuthParameters != {
                "USERNAME": "key",
                "PASSWORD": "secret",
            }:
                raise ClientError({"Error": {"Code": "NotAuthorizedException"}}, "InitiateAuth")
            if AuthFlow == "REFRESH_TOKEN_AUTH" and AuthParameters["REFRESH_TOKEN"] != "refresh":
                raise ClientError({"Error": {"Code": "NotAuthorizedException"}}, "InitiateAuth")
            self.n += 1
            token = jwt(exp=time.time() + self.lifetime, n=self.n, device_key="dev-1")
            result = {"AccessToken": token}
            if AuthFlow == "USER_PASSWORD_AUTH":
                result["RefreshToken"] = "refresh"
            return {"AuthenticationResult": result}


def provider(idp: FakeIdp, **kwargs: Any) -> CognitoTokenProvider:
    secrets = {k: SecretStr(v) for k, v in kwargs.items()}
    return CognitoTokenProvider(load_config=lambda: CONFIG, idp_client=lambda region: idp, **secrets)


def test_api_key_logs_in_on_the_token_pool_and_refreshes_there():
    idp = FakeIdp()
    p = provider(idp, api_key="key", api_secret="secret")

    first = p.token()
    second = p.refresh(first)

    assert first != second
    assert [(flow, client) for flow, client, _ in idp.calls] == [
        ("USER_PASSWORD_AUTH", "token-client"),
        ("REFRESH_TOKEN_AUTH", "token-client"),
    ]


def test_session_token_refreshes_on_the_user_pool_with_the_device_key():
    idp = FakeIdp()
    p = provider(idp, session_token=jwt(exp=time.time() + 3600, device_key="dk-9"), refresh_token="refresh")

    p.refresh(p.token())

    assert idp.calls == [("REFRESH_TOKEN_AUTH", "user-client", {"REFRESH_TOKEN": "refresh", "DEVICE_KEY": "dk-9"})]


def test_a_token_about_to_expire_is_refreshed_before_use():
    idp = FakeIdp()
    near = jwt(exp=time.time() + 10)
    p = provider(idp, session_token=near, refresh_token="refresh")

    assert p.token() != near
    assert p.refreshes == 1


def test_early_refresh_failure_keeps_a_still_valid_token_but_not_an_expired_one():
    idp = FakeIdp()
    idp.down = True
    near = jwt(exp=time.time() + 10)
    assert provider(idp, session_token=near, refresh_token="refresh").token() == near
    gone = jwt(exp=time.time() - 1)
    with pytest.raises(PennsieveAuthError, match="InternalErrorException"):
        provider(idp, session_token=gone, refresh_token="refresh").token()


def test_rejected_refresh_token_falls_back_to_the_api_key():
    idp = FakeIdp()
    p = provider(
        idp,
        session_token=jwt(exp=time.time() + 3600),
        refresh_token="revoked",
        api_key="key",
        api_secret="secret",
    )

    p.refresh(p.token())

    assert [flow for flow, _, _ in idp.calls] == ["REFRESH_TOKEN_AUTH", "USER_PASSWORD_AUTH"]
    assert p.logins == 1


def test_many_threads_with_the_same_stale_token_cause_one_refresh():
    idp = FakeIdp()
    p = provider(idp, api_key="key", api_secret="secret")
    stale = p.token()
    barrier = threading.Barrier(32)
    results: list[str] = []

    def refresh() -> None:
        barrier.wait()
        results.append(p.refresh(stale))

    threads = [threading.Thread(target=refresh) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert p.refreshes == 1
    assert len(set(results)) == 1
    assert results[0] != stale


def test_no_credentials_at_all():
    with pytest.raises(PennsieveAuthError, match="no credentials"):
        provider(FakeIdp())
