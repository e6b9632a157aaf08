"""A fake Pennsieve over real HTTP on 127.0.0.1 (pennsieve-api.md §3), with state and faults.

API and API2 share one server (their paths do not overlap); presigned upload URLs point at the
fake itself (``PUT /s3/{importId}/{uploadKey}?X-Amz-...``), which keeps the bytes.

Auth: every API/API2 call needs ``Authorization: Bearer <token>``. A token is accepted when moto's
Cognito issued it (checked once with ``GetUser``) or it is one of ``static_tokens``, and it has
not expired: the fake gives each token ``token_ttl`` seconds from first sight, and
:meth:`FakePennsieve.expire_tokens` expires every token seen so far (moto ignores ``exp``, so
expiry is the fake's). Presigned PUTs must not carry a bearer header (S3 refuses two auth
mechanisms), must carry an exact ``Content-Length`` and no chunked encoding.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

from .assets import AssetRoutes, _AssetError
from .cognito import MotoCognito
from .handler import ApiError, Fault, Reply, handler_class

if TYPE_CHECKING:
    from .s3gate import S3Gate

MAX_BODY = 1_048_576  # API Gateway's limit on request bodies
PRESIGN_TTL_S = 900


@dataclass
class FakeImport:
    id: str
    dataset_id: str
    package_id: str
    integration_id: str | None
    files: dict[str, str] = field(default_factory=dict)  # upload key → file path
    uploads: dict[str, bytes] = field(default_factory=dict)  # upload key → bytes
    appends: int = 0


class FakePennsieve(AssetRoutes):
    """Start with :meth:`start`; seed with ``add_dataset``/``add_package``/``add_run``; inspect the state.

    The asset flow's routes and state (``s3``: the S3 gate its credentials are registered with)
    are :class:`~.assets.AssetRoutes`'.
    """

    def __init__(
        self,
        cognito: MotoCognito | None = None,
        *,
        static_tokens: tuple[str, ...] = (),
        token_ttl: float = 3600.0,
        latency: float = 0.0,
        max_body: int = MAX_BODY,
        port: int = 0,
        s3: S3Gate | None = None,
        finished_status: str = "active",
        credential_ttl: float = 3600.0,
        credential_puts: int | None = None,
        refresh: Literal["ok", "unsupported"] = "ok",
    ) -> None:
        self.cognito = cognito
        self.static_tokens = set(static_tokens)
        self.token_ttl = token_ttl
        self.latency = latency
        self.max_body = max_body
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.datasets: dict[str, dict[str, Any]] = {}
        self.packages: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, list[dict[str, Any]]] = {}
        self.imports: dict[str, FakeImport] = {}
        self.run_status: dict[str, list[str]] = {}
        self.tokens_first_seen: dict[str, float] = {}
        self.expired: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.auth_headers_on_put = 0
        self._signing_key = uuid.uuid4().bytes
        self._init_assets(
            s3,
            finished_status=finished_status,
            credential_ttl=credential_ttl,
            credential_puts=credential_puts,
            refresh=refresh,
        )
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler_class(self))
        self._server.daemon_threads = True
        self._server.request_queue_size = 256
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePennsieve:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-pennsieve",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakePennsieve:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- seeding and inspection -----------------------------------------------------------------

    def add_dataset(self, name: str = "dataset") -> str:
        node = f"N:dataset:{uuid.uuid4()}"
        with self.lock:
            self.datasets[node] = {"name": name, "locked": False}
        return node

    def add_package(
        self,
        dataset_id: str,
        name: str = "package",
        *,
        package_type: str = "TimeSeries",
        parent: str | None = None,
    ) -> str:
        prefix = "N:collection" if package_type == "Collection" else "N:package"
        node = f"{prefix}:{uuid.uuid4()}"
        with self.lock:
            self.packages[node] = {
                "nodeId": node,
                "name": name,
                "packageType": package_type,
                "datasetNodeId": dataset_id,
                "parent": parent,
                "properties": [],
            }
            self.channels[node] = []
        return node

    def add_run(self, dataset_id: str, package_ids: list[str] | None, *, raw: dict[str, Any] | None = None) -> str:
        run_id = str(uuid.uuid4())
        body = raw if raw is not None else {
            "uuid": run_id,
            "datasetId": dataset_id,
            "status": "STARTED",
            "organizationId": "N:organization:fake",
            "nodes": [{"id": "n1", "sourceUrl": "https://example.invalid/processor", "dependsOn": None}],
            "dataSources": None if package_ids is None else {"src1": {"packageIds": package_ids}},
        }  # fmt: skip
        with self.lock:
            self.runs[run_id] = body
        return run_id

    def add_channel(self, package_id: str, **content: Any) -> str:
        """Seed an existing channel (any fields; ``id`` is generated unless given)."""
        node = content.pop("id", f"N:channel:{uuid.uuid4()}")
        with self.lock:
            self.channels[package_id].append({"id": node, "packageId": package_id, **content})
        return node

    def lock_dataset(self, dataset_id: str, locked: bool = True) -> None:
        with self.lock:
            self.datasets[dataset_id]["locked"] = locked

    def add_fault(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def expire_tokens(self) -> None:
        with self.lock:
            self.expired.update(self.tokens_first_seen)

    def uploaded_files(self, import_id: str) -> dict[str, bytes]:
        """file path → uploaded bytes, for the files of ``import_id`` that were uploaded."""
        with self.lock:
            imp = self.imports[import_id]
            return {imp.files[k]: v for k, v in imp.uploads.items() if k in imp.files}

    # -- auth ----------------------------------------------------------------------------------------

    def _check_token(self, header: str | None, api2: bool) -> None:
        if not header or not header.startswith("Bearer "):
            raise ApiError(401, "Unauthorized", api2)
        token = header.removeprefix("Bearer ").strip()
        with self.lock:
            first = self.tokens_first_seen.get(token)
        if first is None:
            valid = token in self.static_tokens or (self.cognito is not None and self.cognito.is_valid(token))
            if not valid:
                raise ApiError(401, "Unauthorized", api2)
            with self.lock:
                first = self.tokens_first_seen.setdefault(token, time.time())
        if token in self.expired or time.time() > first + self.token_ttl:
            raise ApiError(401, "The incoming token has expired", api2)

    def _sign(self, import_id: str, key: str, stamp: int) -> str:
        return hmac.new(self._signing_key, f"{import_id}/{key}/{stamp}".encode(), hashlib.sha256).hexdigest()

    # -- routes ---------------------------------------------------------------------------------------

    def _routes(self) -> list[tuple[str, re.Pattern[str], bool, bool, Callable[..., Reply]]]:
        # (method, path, api2, authenticated, handler)
        r = re.compile
        assets = [(m, r(path), api2, True, self._adapt(h, api2)) for m, path, api2, h in self._asset_routes()]
        return [
            *assets,
            ("GET", r(r"^/authentication/cognito-config$"), False, False, self._cognito_config),
            ("GET", r(r"^/compute/workflows/runs/([^/]+)$"), True, True, self._get_run),
            ("PUT", r(r"^/compute/workflows/runs/([^/]+)/status$"), True, True, self._put_run_status),
            ("GET", r(r"^/packages/([^/]+)$"), False, True, self._get_package),
            ("PUT", r(r"^/packages/([^/]+)$"), False, True, self._put_package),
            ("GET", r(r"^/timeseries/([^/]+)/channels$"), False, True, self._list_channels),
            ("POST", r(r"^/timeseries/([^/]+)/channels$"), False, True, self._create_channels),
            ("POST", r(r"^/import$"), True, True, self._create_import),
            ("POST", r(r"^/import/([^/]+)/files$"), True, True, self._append_files),
            ("GET", r(r"^/import/([^/]+)/upload/([^/]+)/presign$"), True, True, self._presign),
            ("PUT", r(r"^/s3/([^/]+)/([^/]+)$"), True, False, self._s3_put),
        ]

    @staticmethod
    def _adapt(handler: Callable[..., Any], api2: bool) -> Callable[..., Reply]:
        def call(q: dict[str, str], body: Any, *groups: str) -> Reply:
            try:
                status, out = handler(q, body, *groups)
            except _AssetError as exc:
                raise ApiError(exc.status, exc.message, api2, exc.extra) from None
            return Reply(status=status, body=out, raw=b"" if out is None else None)

        return call

    def _cognito_config(self, q: dict[str, str], body: Any) -> Reply:
        if self.cognito is not None:
            return Reply(body=self.cognito.config())
        pool = {"region": "us-east-1", "id": "us-east-1_static", "appClientId": "static"}
        return Reply(body={"region": "us-east-1", "userPool": pool, "tokenPool": pool, "identityPool": {}})

    def _get_run(self, q: dict[str, str], body: Any, run_id: str) -> Reply:
        run = self.runs.get(run_id)
        if run is None:
            return Reply(raw=b"")  # the real server's answer for an unknown run: 200, empty body
        return Reply(body=run)

    def _put_run_status(self, q: dict[str, str], body: Any, run_id: str) -> Reply:
        if run_id not in self.runs:
            raise ApiError(404, f"run {run_id} not found", True)
        if not isinstance(body, dict) or body.get("status") not in ("STARTED", "SUCCEEDED", "FAILED"):
            raise ApiError(400, "invalid status", True)
        self.run_status.setdefault(run_id, []).append(body["status"])
        return Reply(body={})

    def _package_json(self, node: str) -> dict[str, Any]:
        p = self.packages[node]
        content = {k: p[k] for k in ("nodeId", "name", "packageType", "datasetNodeId")}
        content["state"] = "READY"
        out: dict[str, Any] = {"content": content, "properties": [], "children": []}
        if p["parent"] is not None:
            out["parent"] = self._package_json(p["parent"])
        return out

    def _get_package(self, q: dict[str, str], body: Any, node: str) -> Reply:
        if node not in self.packages:
            raise ApiError(404, f"package {node} not found")
        return Reply(body=self._package_json(node))

    def _put_package(self, q: dict[str, str], body: Any, node: str) -> Reply:
        if node not in self.packages:
            raise ApiError(404, f"package {node} not found")
        p = self.packages[node]
        if self.datasets[p["datasetNodeId"]]["locked"]:
            raise ApiError(423, "dataset is locked")
        if not isinstance(body, dict) or not isinstance(body.get("properties"), list):
            raise ApiError(400, "properties required")
        merged = {(x["category"], x["key"]): x for x in p["properties"]}
        for prop in body["properties"]:
            merged[(prop["category"], prop["key"])] = prop
        p["properties"] = list(merged.values())
        return Reply(body=self._package_json(node))

    def _list_channels(self, q: dict[str, str], body: Any, node: str) -> Reply:
        if node not in self.packages:
            raise ApiError(404, f"package {node} not found")
        return Reply(body=[{"content": dict(c), "properties": []} for c in self.channels[node]])

    _CHANNEL_FIELDS = ("name", "start", "end", "unit", "rate", "channelType")

    def _create_channels(self, q: dict[str, str], body: Any, node: str) -> Reply:
        if node not in self.packages:
            raise ApiError(404, f"package {node} not found")
        if self.packages[node]["packageType"] not in ("TimeSeries", "Collection"):
            raise ApiError(400, "channels can only be created in a TimeSeries or Collection package")
        items = body if isinstance(body, list) else [body]
        for item in items:
            if not isinstance(item, dict) or any(f not in item for f in self._CHANNEL_FIELDS):
                raise ApiError(400, "missing channel fields")
            if not str(item["name"]).strip():
                raise ApiError(400, "channel name must not be blank")
            if item.get("viewerAssetId") is not None and item["viewerAssetId"] not in self.assets:
                raise ApiError(400, f"viewer asset {item['viewerAssetId']} not found")  # [guess]
        created = []
        for item in items:
            content = {
                "id": f"N:channel:{uuid.uuid4()}",
                "packageId": node,
                "name": item["name"],
                "start": item["start"],
                "end": item["end"],
                "unit": item["unit"],
                "rate": item["rate"],
                "channelType": item["channelType"],
                "group": item.get("group"),
                "lastAnnotation": item.get("lastAnnotation", 0),
                "spikeDuration": None,
                "createdAt": "2026-01-01T00:00:00Z",
                "viewerAssetId": item.get("viewerAssetId"),
            }
            self.channels[node].append(content)
            created.append({"content": dict(content), "properties": item.get("properties") or []})
        return Reply(status=201, body=created if isinstance(body, list) else created[0])

    def _dataset_param(self, q: dict[str, str]) -> str:
        dataset = q.get("dataset_id")
        if not dataset:
            raise ApiError(400, "dataset_id is required", True)
        if dataset not in self.datasets:
            raise ApiError(404, f"dataset {dataset} not found", True)
        return dataset

    @staticmethod
    def _files(body: Any) -> dict[str, str]:
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list):
            raise ApiError(400, "files required", True)
        out = {}
        for f in files:
            if not isinstance(f, dict) or not f.get("upload_key") or not f.get("file_path"):
                raise ApiError(400, "each file needs upload_key and file_path", True)
            uuid.UUID(str(f["upload_key"]))
            out[f["upload_key"]] = f["file_path"]
        return out

    def _create_import(self, q: dict[str, str], body: Any) -> Reply:
        dataset = self._dataset_param(q)
        if not isinstance(body, dict) or body.get("import_type") != "timeseries":
            raise ApiError(400, "import_type must be timeseries", True)
        package = body.get("package_id")
        if package not in self.packages or self.packages[package]["datasetNodeId"] != dataset:
            raise ApiError(404, f"package {package} not found in {dataset}", True)
        files = self._files(body)
        imp = FakeImport(str(uuid.uuid4()), dataset, package, body.get("integration_id"), files)
        self.imports[imp.id] = imp
        return Reply(status=201, body={"id": imp.id})

    def _append_files(self, q: dict[str, str], body: Any, import_id: str) -> Reply:
        dataset = self._dataset_param(q)
        imp = self.imports.get(import_id)
        if imp is None or imp.dataset_id != dataset:
            raise ApiError(404, f"import {import_id} not found", True)
        imp.files.update(self._files(body))  # keyed by upload key: appending twice is harmless [guess]
        imp.appends += 1
        return Reply(body={"id": imp.id})

    def _presign(self, q: dict[str, str], body: Any, import_id: str, key: str) -> Reply:
        dataset = self._dataset_param(q)
        imp = self.imports.get(import_id)
        if imp is None or imp.dataset_id != dataset:
            raise ApiError(404, f"import {import_id} not found", True)
        if key not in imp.files:
            raise ApiError(404, f"upload key {key} is not in the manifest", True)
        stamp = int(time.time())
        signature = self._sign(import_id, key, stamp)
        query = f"X-Amz-Date={stamp}&X-Amz-Expires={PRESIGN_TTL_S}&X-Amz-Signature={signature}"
        return Reply(body={"url": f"{self.url}/s3/{import_id}/{key}?{query}"})

    def _s3_put(self, q: dict[str, str], body: Any, import_id: str, key: str) -> Reply:
        try:
            stamp = int(q["X-Amz-Date"])
            good = hmac.compare_digest(q["X-Amz-Signature"], self._sign(import_id, key, stamp))
        except (KeyError, ValueError):
            good = False
        if not good:
            raise ApiError(403, "SignatureDoesNotMatch", True)
        if time.time() > stamp + int(q.get("X-Amz-Expires", "0")):
            raise ApiError(403, "Request has expired", True)
        imp = self.imports.get(import_id)
        if imp is None:
            raise ApiError(404, "NoSuchBucket", True)
        imp.uploads[key] = body
        return Reply(body=None, raw=b"")
