"""The fake Pennsieve's S3: a moto server behind a gate that checks every request's credentials.

Pennsieve hands an importer short-lived STS credentials for one viewer asset's prefix (§5.4).
The gate accepts an S3 request only when it is signed (SigV4, recomputed with botocore's own
signer) by credentials the fake Pennsieve issued, with that key's session token, before they
expire (by time, or after ``puts_left`` PUTs: a fault), inside that key's bucket and prefix;
else it answers S3's error (``InvalidAccessKeyId``, ``InvalidToken``, ``SignatureDoesNotMatch``,
``ExpiredToken``, ``AccessDenied``, ``BadDigest``) as XML, which botocore parses. A PUT that
passes is stored straight into moto's S3 backend (moto's HTTP layer costs ~2 ms of CPU a PUT:
a benchmark would measure moto); every other request is forwarded to the moto server, so
listings and reads see every object.

It runs in its own process (:meth:`S3Gate.start`): moto's backends are
module globals and must not meet the tests' in-process ``mock_aws``. It prints one JSON line
``{"url", "moto_url", "control_token"}``; the control API (``/__gate__/...``, bearer
``control_token``) registers and revokes credentials, sets faults (latency, 503 SlowDown,
refused listings, a pause after K PUTs), reports stats and stored objects. :class:`S3Gate` is
the tests' handle on such a process.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

ACCOUNT = "123456789012"  # moto's default account: its server's backend


@dataclass
class Issued:
    """Credentials the fake Pennsieve issued, for one bucket and prefix."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    bucket: str
    prefix: str
    expires_at: float
    puts_left: int | None = None
    puts: int = 0


@dataclass
class Faults:
    latency: float = 0.0
    slowdown: int = 0  # answer this many S3 requests 503 SlowDown first
    deny_list: bool = False  # refuse listings (an STS policy without s3:ListBucket)
    pause_after_puts: int | None = None  # hold every PUT after this many stored, until released


@dataclass
class GateState:
    backend: Any
    upstream: str
    issued: dict[str, Issued] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    lock: threading.Lock = field(default_factory=threading.Lock)
    refused: Counter[str] = field(default_factory=Counter)
    puts_by_key: Counter[str] = field(default_factory=Counter)  # object key → PUTs stored
    puts_by_credential: Counter[str] = field(default_factory=Counter)
    stored: int = 0
    held: int = 0
    release: threading.Event = field(default_factory=threading.Event)


def _between(text: str, first: str, second: str) -> str:
    return text.partition(first)[2].partition(second)[0]


def check(state: GateState, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str] | None:
    """``None`` when the request may pass, else (status, S3 error code)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    low = {k.lower(): v for k, v in headers.items()}
    auth = low.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return 403, "AccessDenied"
    scope = _between(auth, "Credential=", ",").split("/")
    cred = state.issued.get(scope[0])
    if cred is None or len(scope) < 4:
        return 403, "InvalidAccessKeyId"
    if low.get("x-amz-security-token") != cred.session_token:
        return 400, "InvalidToken"
    signed = _between(auth, "SignedHeaders=", ",").split(";")
    sent = {k: v for k, v in headers.items() if k.lower() in signed}
    request = AWSRequest(method=method, url=path, data=body, headers=sent)
    request.context["timestamp"] = low.get("x-amz-date")
    credentials = Credentials(cred.access_key_id, cred.secret_access_key, cred.session_token)
    signer = S3SigV4Auth(credentials, scope[3], scope[2])
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, auth.rpartition("Signature=")[2].strip()):
        return 403, "SignatureDoesNotMatch"
    declared = low.get("x-amz-content-sha256", "")
    if not declared.startswith(("UNSIGNED", "STREAMING")) and declared != hashlib.sha256(body).hexdigest():
        return 400, "XAmzContentSHA256Mismatch"
    md5 = low.get("content-md5")
    if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
        return 400, "BadDigest"
    with state.lock:
        spent = method == "PUT" and cred.puts_left is not None and cred.puts >= cred.puts_left
    if time.time() >= cred.expires_at or spent:
        return 400, "ExpiredToken"
    parts = urlsplit(path)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    if bucket != cred.bucket:
        return 403, "AccessDenied"
    if key:
        return None if key.startswith(cred.prefix) else (403, "AccessDenied")
    prefix = parse_qs(parts.query).get("prefix", [""])[0]
    if method != "GET" or not prefix.startswith(cred.prefix) or state.faults.deny_list:
        return 403, "AccessDenied"
    return None


def _xml_error(status: int, code: str) -> bytes:
    return f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    state: GateState
    control_token: str

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, payload: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status: int, code: str) -> None:
        with self.state.lock:
            self.state.refused[code] += 1
        self._reply(status, _xml_error(status, code), {"Content-Type": "application/xml"})

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/__gate__/"):
            return self._control(body)
        state = self.state
        if state.faults.latency:
            time.sleep(state.faults.latency)
        with state.lock:
            slow = state.faults.slowdown > 0
            if slow:
                state.faults.slowdown -= 1
        if slow:
            return self._error(503, "SlowDown")
        headers = dict(self.headers.items())
        refused = check(state, self.command, self.path, headers, body)
        if refused is not None:
            return self._error(*refused)
        if self.command == "PUT":
            return self._put(headers, body)
        self._forward(headers, body)

    def _put(self, headers: dict[str, str], body: bytes) -> None:
        state = self.state
        with state.lock:
            pause = state.faults.pause_after_puts is not None and state.stored >= state.faults.pause_after_puts
            if pause:
                state.held += 1
        if pause:
            state.release.wait()
            return self._error(503, "SlowDown")  # released after the client is gone: never stored
        bucket, _, key = unquote(urlsplit(self.path).path).lstrip("/").partition("/")
        obj = state.backend.put_object(bucket, key, body)
        access_key = _between(headers.get("Authorization", ""), "Credential=", "/")
        with state.lock:
            state.stored += 1
            state.puts_by_key[key] += 1
            state.puts_by_credential[access_key] += 1
            cred = state.issued.get(access_key)
            if cred is not None:
                cred.puts += 1
        self._reply(200, headers={"ETag": obj.etag})

    def _forward(self, headers: dict[str, str], body: bytes) -> None:
        conn = http.client.HTTPConnection(self.state.upstream, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        skip = {"content-length", "transfer-encoding", "connection", "server", "date"}
        self._reply(answer.status, data, {k: v for k, v in answer.getheaders() if k.lower() not in skip})

    # -- the control API ----------------------------------------------------------------------

    def _control(self, body: bytes) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.control_token}":
            return self._reply(401)
        data = json.loads(body) if body else {}
        parts = urlsplit(self.path)
        action = parts.path.removeprefix("/__gate__/")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.state.lock:
            answer = _control(self.state, action, data, query)
        self._reply(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any


def _control(state: GateState, action: str, data: dict[str, Any], query: dict[str, str]) -> Any:
    """One control call, under the state's lock."""
    backend = state.backend
    if action == "bucket":
        if data["name"] not in backend.buckets:
            backend.create_bucket(data["name"], "us-east-1")
    elif action == "credentials":
        state.issued[data["access_key_id"]] = Issued(**data)
    elif action == "revoke":
        for key in [k for k, c in state.issued.items() if c.prefix.startswith(data["prefix"])]:
            del state.issued[key]
    elif action == "purge":
        bucket = backend.buckets.get(data["bucket"])
        for key in [k for k in (bucket.keys.keys() if bucket else []) if k.startswith(data["prefix"])]:
            backend.delete_object(data["bucket"], key)
    elif action == "put":
        backend.put_object(data["bucket"], data["key"], base64.b64decode(data["body"]))
    elif action == "faults":
        for name, value in data.items():
            setattr(state.faults, name, value)
        if state.faults.pause_after_puts is None:
            state.release.set()
            state.release = threading.Event()
    elif action == "objects":
        bucket = backend.buckets.get(query["bucket"])
        keys = bucket.keys.keys() if bucket else []
        found = [backend.get_object(query["bucket"], k) for k in keys if k.startswith(query.get("prefix", ""))]
        return {o.name: {"size": o.size, "md5": hashlib.md5(o.value).hexdigest()} for o in found}
    elif action == "stats":
        return {
            "stored": state.stored,
            "held": state.held,
            "refused": dict(state.refused),
            "puts_by_key": dict(state.puts_by_key),
            "puts_by_credential": dict(state.puts_by_credential),
            "issued": sorted(state.issued),
        }
    elif action == "reset":
        for name, bucket in list(backend.buckets.items()):
            for key in list(bucket.keys.keys()):
                backend.delete_object(name, key)
        state.issued.clear()
        state.refused.clear()
        state.puts_by_key.clear()
        state.puts_by_credential.clear()
        state.stored = state.held = 0
        state.faults = Faults()
        state.release.set()
        state.release = threading.Event()
    else:
        return {"error": f"unknown action {action}"}
    return {}


def serve(latency: float = 0.0) -> tuple[ThreadingHTTPServer, str, str]:
    """Start moto and the gate in this process: (the gate's server, its URL, moto's URL)."""
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    state = GateState(backend=s3_backends[ACCOUNT]["aws"], upstream=f"{host}:{port}", faults=Faults(latency=latency))
    handler = type("Handler", (_Handler,), {"state": state, "control_token": uuid.uuid4().hex})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.request_queue_size = 512
    threading.Thread(target=server.serve_forever, name="s3-gate", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_pennsieve.s3gate", description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every S3 request")
    args = parser.parse_args(argv)
    server, url, moto_url = serve(args.latency_ms / 1000)
    token = server.RequestHandlerClass.control_token  # type: ignore[attr-defined]
    print(json.dumps({"url": url, "moto_url": moto_url, "control_token": token}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or is gone)
    return 0


class S3Gate:
    """The tests' handle on a gate process (started by :meth:`start`, ended by :meth:`stop`)."""

    def __init__(self, process: subprocess.Popen[str], info: dict[str, str]) -> None:
        self.process = process
        self.url = info["url"]
        self.moto_url = info["moto_url"]
        self._token = info["control_token"]

    @classmethod
    def start(cls, *, latency_ms: float = 0.0) -> S3Gate:
        process = subprocess.Popen(
            # -c, not -m: the package's __init__ imports this module before runpy would run it again
            [
                sys.executable,
                "-c",
                "import sys; from tests.fake_pennsieve.s3gate import main; sys.exit(main())",
                "--latency-ms",
                str(latency_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait(10)
            raise RuntimeError("the S3 gate did not start")
        return cls(process, json.loads(line))

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def call(self, action: str, data: dict[str, Any] | None = None, **query: str) -> Any:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            path = f"/__gate__/{action}" + (f"?{urlencode(query)}" if query else "")
            conn.request("POST", path, body=json.dumps(data or {}), headers={"Authorization": f"Bearer {self._token}"})
            answer = conn.getresponse()
            payload = answer.read()
        finally:
            conn.close()
        if answer.status != 200:
            raise RuntimeError(f"gate {action}: HTTP {answer.status}")
        return json.loads(payload)

    def register(self, issued: Issued) -> None:
        self.call("credentials", asdict(issued))

    def faults(self, **faults: Any) -> None:
        self.call("faults", faults)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("stats")
        return result

    def objects(self, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        """key → {"size", "md5"} of the objects stored under ``prefix`` (read from moto's backend)."""
        result: dict[str, dict[str, Any]] = self.call("objects", bucket=bucket, prefix=prefix)
        return result

    def put(self, bucket: str, key: str, body: bytes) -> None:
        """Store an object behind the gate's back (seeding a scenario)."""
        self.call("put", {"bucket": bucket, "key": key, "body": base64.b64encode(body).decode()})


if __name__ == "__main__":
    sys.exit(main())
