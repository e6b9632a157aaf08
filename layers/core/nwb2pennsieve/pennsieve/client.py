"""The Pennsieve calls of the import (pennsieve-api.md §3), each returning a typed model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import requests
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..settings import Settings
from .auth import CognitoConfig, CognitoTokenProvider, default_idp_client
from .errors import CredentialsUnavailableError, PennsieveError, PennsieveHTTPError, RangesRejectedError
from .http import HttpClient, RetryPolicy, SizedReader, error_message
from .models import (
    TIMESERIES_PROPERTIES,
    AssetList,
    Channel,
    CreatedAsset,
    ImportCreate,
    ImportCreated,
    ImportFile,
    ImportFiles,
    NewAsset,
    NewChannel,
    Package,
    PresignedUrl,
    RangeChunk,
    RangesRequest,
    RangesResult,
    UploadCredentials,
    ViewerAsset,
    WorkflowRun,
)

log = logging.getLogger("nwb2pennsieve.pennsieve.client")

M = TypeVar("M", bound=BaseModel)
_CHANNELS = TypeAdapter(list[Channel])
# A refresh answered so will not succeed on a retry: the route (or the asset) is not there. API
# Gateway answers an unknown route 403 "Missing Authentication Token", a server 404/405/501.
_NO_REFRESH = (403, 404, 405, 501)


def _seg(value: str) -> str:
    return quote(value, safe=":")


# Their DEBUG records carry credentials: botocore logs Cognito request/response bodies (the API
# secret, tokens) and urllib3 logs presigned URLs with their signatures. Unless the application
# set a level for them on purpose, keep them at INFO even under a DEBUG root logger.
_CHATTY_LOGGERS = ("botocore", "urllib3")


def quiet_credential_loggers() -> None:
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


class PennsieveClient:
    """``api_host`` is ``PENNSIEVE_API_HOST``, ``api_host2`` is ``PENNSIEVE_API_HOST2``."""

    def __init__(self, http: HttpClient, api_host: str, api_host2: str) -> None:
        self.http = http
        self.api = api_host.rstrip("/")
        self.api2 = api_host2.rstrip("/")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        retry: RetryPolicy | None = None,
        pool_size: int = 64,
        idp_client: Callable[[str], Any] = default_idp_client,
    ) -> PennsieveClient:
        """An authenticated client from the environment's settings (fails if there are no credentials)."""
        settings.require_credentials()
        quiet_credential_loggers()
        http = HttpClient(retry=retry, pool_size=pool_size)
        client = cls(http, settings.pennsieve_api_host, settings.pennsieve_api_host2)
        http.auth = CognitoTokenProvider(
            load_config=client.cognito_config,
            session_token=settings.session_token,
            refresh_token=settings.refresh_token,
            api_key=settings.pennsieve_api_key,
            api_secret=settings.pennsieve_api_secret,
            idp_client=idp_client,
        )
        return client

    def close(self) -> None:
        self.http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        url: str,
        *,
        ok: Sequence[int] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        response = self.http.request(method, url, **kwargs)
        if response.status_code not in ok:
            raise PennsieveHTTPError(method, url, response.status_code, error_message(response))
        return response

    @staticmethod
    def _json(response: requests.Response, what: str) -> Any:
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise PennsieveError(f"{what}: the answer is not JSON") from None

    @staticmethod
    def _parse(model: type[M], data: Any, what: str) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise PennsieveError(f"{what}: unexpected answer ({where}: {first['msg']})") from None

    # -- endpoints ------------------------------------------------------------------------------

    def cognito_config(self) -> CognitoConfig:
        url = f"{self.api}/authentication/cognito-config"
        response = self._call("GET", url, authenticated=False)
        return self._parse(CognitoConfig, self._json(response, "cognito-config"), "cognito-config")

    def get_workflow_run(self, run_id: str) -> WorkflowRun:
        """§3.1. An unknown run (200 with an empty body) is a :class:`PennsieveError`."""
        what = f"workflow run {run_id}"
        response = self._call("GET", f"{self.api2}/compute/workflows/runs/{_seg(run_id)}")
        data = self._json(response, what)
        if not data:
            raise PennsieveError(f"{what} not found (Pennsieve returned an empty answer)")
        return self._parse(WorkflowRun, data, what)

    def get_package(self, package_id: str) -> Package:
        what = f"package {package_id}"
        response = self._call(
            "GET",
            f"{self.api}/packages/{_seg(package_id)}",
            params={"includeAncestors": "true", "startAtEpoch": "false", "limit": 100, "offset": 0},
        )
        return self._parse(Package, self._json(response, what), what)

    def set_timeseries_properties(self, package_id: str) -> None:
        """§3.3: mark the package as a time series (merged by category and key, so rerun-safe)."""
        url = f"{self.api}/packages/{_seg(package_id)}"
        response = self.http.request(
            "PUT",
            url,
            params={"updateStorage": "true"},
            json={"properties": [p.body() for p in TIMESERIES_PROPERTIES]},
        )
        if response.status_code == 423:
            raise PennsieveError(f"package {package_id}: the dataset is locked (HTTP 423); unlock it and rerun")
        if response.status_code not in (200, 201, 204):
            raise PennsieveHTTPError("PUT", url, response.status_code, error_message(response))

    def list_channels(self, package_id: str) -> list[Channel]:
        what = f"channels of {package_id}"
        response = self._call("GET", f"{self.api}/timeseries/{_seg(package_id)}/channels")
        data = self._json(response, what)
        try:
            return _CHANNELS.validate_python(data or [])
        except ValidationError as exc:
            raise PennsieveError(f"{what}: unexpected answer ({exc.errors()[0]['msg']})") from None

    def create_channels(self, package_id: str, channels: Sequence[NewChannel]) -> list[Channel]:
        """One POST with an array body. Not retried on 5xx or a lost connection (the server
        may have created them): the importer re-lists and matches before trying again."""
        what = f"new channels of {package_id}"
        response = self._call(
            "POST",
            f"{self.api}/timeseries/{_seg(package_id)}/channels",
            ok=(200, 201),
            json=[c.body() for c in channels],
            retry_on=(429,),
            retry_connection_errors=False,
        )
        data = self._json(response, what)
        if isinstance(data, dict):
            data = [data]
        try:
            created = _CHANNELS.validate_python(data or [])
        except ValidationError as exc:
            raise PennsieveError(f"{what}: unexpected answer ({exc.errors()[0]['msg']})") from None
        if len(created) != len(channels):
            raise PennsieveError(f"{what}: asked for {len(channels)} channels, got {len(created)}")
        return created

    def create_import(
        self, dataset_id: str, integration_id: str | None, package_id: str, files: Sequence[ImportFile]
    ) -> str:
        body = ImportCreate(integration_id=integration_id, package_id=package_id, files=list(files))
        response = self._call(
            "POST", f"{self.api2}/import", ok=(200, 201), params={"dataset_id": dataset_id}, json=body.body()
        )
        return self._parse(ImportCreated, self._json(response, "import"), "import").id

    def append_import_files(self, dataset_id: str, import_id: str, files: Sequence[ImportFile]) -> None:
        self._call(
            "POST",
            f"{self.api2}/import/{_seg(import_id)}/files",
            ok=(200, 201, 204),
            params={"dataset_id": dataset_id},
            json=ImportFiles(files=list(files)).body(),
        )

    def presign(self, dataset_id: str, import_id: str, upload_key: str) -> str:
        url = f"{self.api2}/import/{_seg(import_id)}/upload/{_seg(upload_key)}/presign"
        response = self._call("GET", url, params={"dataset_id": dataset_id})
        return self._parse(PresignedUrl, self._json(response, "presign"), "presign").url

    def put_file(self, url: str, open_body: Callable[[], SizedReader]) -> None:
        """PUT to a presigned URL; the bearer token is never sent there."""
        response = self.http.put_stream(url, open_body)
        if response.status_code not in (200, 201, 204):
            raise PennsieveHTTPError("PUT", url, response.status_code, error_message(response))

    def set_run_status(self, run_id: str, status: Literal["STARTED", "SUCCEEDED", "FAILED"]) -> None:
        """§3.6 (optional: the platform's runner normally reports the status itself)."""
        self._call(
            "PUT",
            f"{self.api2}/compute/workflows/runs/{_seg(run_id)}/status",
            ok=(200, 201, 204),
            json={"status": status, "timestamp": int(time.time())},
        )

    # -- the viewer-asset flow (§5) ---------------------------------------------------------------

    def list_assets(self, dataset_id: str, package_id: str) -> list[ViewerAsset]:
        """§5.3: the viewer assets linked to ``package_id``."""
        what = f"viewer assets of {package_id}"
        response = self._call(
            "GET", f"{self.api2}/packages/assets", params={"dataset_id": dataset_id, "package_id": package_id}
        )
        return self._parse(AssetList, self._json(response, what) or {}, what).assets or []

    def create_asset(self, dataset_id: str, asset: NewAsset) -> CreatedAsset:
        """§5.4. Not retried on 5xx or a lost connection (the asset may exist by then): the
        importer lists the assets again and adopts one that carries its nonce before retrying."""
        what = f"new viewer asset of {dataset_id}"
        response = self._call(
            "POST",
            f"{self.api2}/packages/assets",
            ok=(200, 201),
            params={"dataset_id": dataset_id},
            json=asset.body(),
            retry_on=(429,),
            retry_connection_errors=False,
        )
        return self._parse(CreatedAsset, self._json(response, what), what)

    def refresh_asset_credentials(self, asset_id: str, dataset_id: str) -> UploadCredentials:
        """Fresh upload credentials of an existing asset: ``POST {API2}/packages/assets/{id}/upload-credentials``
        (named by the contract, §5.8; its answer is taken wrapped as at creation, or bare).

        Raises :class:`CredentialsUnavailableError`; ``unsupported`` when a retry cannot help.
        """
        url = f"{self.api2}/packages/assets/{_seg(asset_id)}/upload-credentials"
        what = f"upload credentials of viewer asset {asset_id}"
        try:
            response = self._call("POST", url, ok=(200, 201), params={"dataset_id": dataset_id})
        except PennsieveHTTPError as exc:
            raise CredentialsUnavailableError(
                f"Pennsieve could not renew the upload credentials of viewer asset {asset_id} ({exc.reason})",
                unsupported=exc.status in _NO_REFRESH,
            ) from None
        data = self._json(response, what)
        if isinstance(data, dict) and isinstance(data.get("upload_credentials"), dict):
            data = data["upload_credentials"]
        return self._parse(UploadCredentials, data, what)

    def update_asset(self, asset_id: str, dataset_id: str, *, status: str) -> ViewerAsset:
        """§5.5/§5.10: PATCH the status; the answer is the bare asset."""
        what = f"viewer asset {asset_id}"
        response = self._call(
            "PATCH",
            f"{self.api2}/packages/assets/{_seg(asset_id)}",
            params={"dataset_id": dataset_id},
            json={"status": status},
        )
        return self._parse(ViewerAsset, self._json(response, what), what)

    def delete_asset(self, asset_id: str, dataset_id: str) -> None:
        """§5.5 (Pennsieve then purges the asset's prefix); an asset already gone is not an error."""
        self._call(
            "DELETE",
            f"{self.api2}/packages/assets/{_seg(asset_id)}",
            ok=(200, 202, 204, 404),
            params={"dataset_id": dataset_id},
        )

    def delete_channel(self, package_id: str, node_id: str) -> None:
        """§5.6 (cleanup only); a channel already gone is not an error."""
        self._call("DELETE", f"{self.api}/timeseries/{_seg(package_id)}/channels/{_seg(node_id)}", ok=(200, 204, 404))

    def register_ranges(
        self, package_id: str, dataset_id: str, asset_id: str, chunks: Sequence[RangeChunk]
    ) -> RangesResult:
        """§5.9: one batch (at most 10,000 chunks). Resending one is harmless (repeats are skipped),
        so 5xx and lost connections are retried. A 400 is :class:`RangesRejectedError`."""
        url = f"{self.api2}/timeseries/package/{_seg(package_id)}/ranges"
        body = RangesRequest(viewer_asset_id=asset_id, chunks=list(chunks)).body()
        response = self.http.request("POST", url, params={"dataset_id": dataset_id}, json=body)
        if response.status_code == 400:
            raise RangesRejectedError(f"Pennsieve refused the chunk ranges: {_invalid_chunks(response, chunks)}")
        if response.status_code not in (200, 201):
            raise PennsieveHTTPError("POST", url, response.status_code, error_message(response))
        return self._parse(RangesResult, self._json(response, "ranges"), "ranges")


def _invalid_chunks(response: requests.Response, chunks: Sequence[RangeChunk]) -> str:
    """The answer's message and its first ``invalid_chunks`` entry, naming the chunk file."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = str(body.get("message") or "HTTP 400") if isinstance(body, dict) else "HTTP 400"
    invalid = body.get("invalid_chunks") if isinstance(body, dict) else None
    if isinstance(invalid, list) and invalid and isinstance(invalid[0], dict):
        first = invalid[0]
        index = first.get("index")
        name = chunks[index].s3_key if isinstance(index, int) and 0 <= index < len(chunks) else f"#{index}"
        more = f" (and {len(invalid) - 1} more)" if len(invalid) > 1 else ""
        return f"{message[:200]}; {name}: {str(first.get('reason', ''))[:200]}{more}"
    return message[:300]
