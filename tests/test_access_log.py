"""The server's log, from a real gateway process: with ``GATEWAY_LOG_FORMAT=json`` every line
is a JSON object; every request (S3, JSON API, and the gateway's own routes: probes,
``/metrics``, the console, ``/ws`` connections) has exactly one access line naming its
request id, operation, bucket, key, status, bytes, duration and principal; and nothing
that authenticates a request (secret keys, signatures, presigned query strings, API
tokens, session tokens, passwords) appears anywhere in the log."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import boto3
import botocore.config
import httpx
import pytest
import websockets.sync.client
from botocore.exceptions import ClientError

from gateway.logs import redact_query
from tests._server import GatewayProcess, run_cli
from tests._server import cli_json as cli

BUCKET = "logged"
OWN = {"Healthz", "Readyz", "Metrics", "Console", "WebSocket"}
PASSWORD = "correct horse battery staple 42"
WRONG_SECRET = "not-the-secret-key-at-all-0123456789ab"


@dataclass
class Seen:
    """A request as its client saw it."""

    request_id: str
    operation: str
    status: int
    bucket: str | None = None
    key: str | None = None
    principal: str = "anonymous"
    bytes_in: int | None = None
    bytes_out: int | None = None


@dataclass
class Run:
    server: GatewayProcess
    seen: list[Seen] = field(default_factory=list)
    #: Everything that must never be logged.
    secrets: set[str] = field(default_factory=set)
    log: str = ""


def s3_client(server: GatewayProcess, run: Run, secret: str | None = None,
              signature_version: str = "s3v4") -> Any:
    client = boto3.client(
        "s3", endpoint_url=server.url, aws_access_key_id=server.access_key,
        aws_secret_access_key=secret or server.secret_key, region_name="us-east-1",
        config=botocore.config.Config(signature_version=signature_version,
                                      retries={"mode": "standard", "total_max_attempts": 1},
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))

    def before_send(request: Any, **_: Any) -> None:
        authorization = request.headers.get("Authorization")
        if authorization:
            value = authorization.decode() if isinstance(authorization, bytes) else authorization
            run.secrets.add(value)
            run.secrets.update(re.findall(r"Signature=([0-9a-f]{64})", value))

    def remember(params: Any, context: Any, **_: Any) -> None:
        context["test_params"] = dict(params)

    def after_call(http_response: Any, model: Any, context: Any, **_: Any) -> None:
        params = context["test_params"]
        run.seen.append(Seen(http_response.headers["x-amz-request-id"], model.name,
                             http_response.status_code, params.get("Bucket"),
                             params.get("Key"), "admin" if secret is None else "anonymous"))

    client.meta.events.register("before-parameter-build.s3", remember)
    client.meta.events.register("before-send.s3", before_send)
    client.meta.events.register("after-call.s3", after_call)
    return client


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    server = GatewayProcess(tmp_path_factory.mktemp("logs") / "data", env_extra={
        "GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "info"}).start()
    data = server.data_dir
    run = Run(server, secrets={server.secret_key, PASSWORD, WRONG_SECRET})
    try:
        made = run_cli(data, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
        api_token = cli(data, "token", "create", "--user", "admin", "--name",
                        uuid.uuid4().hex[:8], "--permission=storage:read",
                        "--permission=storage:write")["token"]
        run.secrets |= {api_token, base64.b64encode(api_token.encode()).decode()}
        _workload(run, api_token)
    finally:
        server.stop()
    run.log = server.log()
    yield run


def _workload(run: Run, api_token: str) -> None:
    server = run.server
    s3 = s3_client(server, run)
    s3.create_bucket(Bucket=BUCKET)
    body = os.urandom(1234)
    s3.put_object(Bucket=BUCKET, Key="dir/a file.txt", Body=body)
    assert s3.get_object(Bucket=BUCKET, Key="dir/a file.txt")["Body"].read() == body
    s3.head_object(Bucket=BUCKET, Key="dir/a file.txt")
    with pytest.raises(ClientError, match="404"):
        s3.head_object(Bucket=BUCKET, Key="missing")
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        s3_client(server, run, secret=WRONG_SECRET).get_object(Bucket=BUCKET, Key="x")
    s3.put_object(Bucket=BUCKET, Key="gone", Body=b"bye")
    s3.delete_object(Bucket=BUCKET, Key="gone")

    # Presigned URLs, SigV4 and SigV2: their query strings are credentials.
    for version in ("s3v4", "s3"):
        url = s3_client(server, run, signature_version=version).generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": "dir/a file.txt"}, ExpiresIn=300)
        query = dict(parse_qsl(urlsplit(url).query))
        for name in ("X-Amz-Signature", "X-Amz-Credential", "Signature"):
            if name in query:
                run.secrets |= {query[name], urlsplit(url).query}
        response = httpx.get(url)
        assert response.status_code == 200
        run.seen.append(Seen(response.headers["x-amz-request-id"], "GetObject", 200, BUCKET,
                             "dir/a file.txt", "admin", 0, len(body)))

    def api(method: str, path: str, operation: str, principal: str,
            headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, server.url + "/api/v1" + path, headers=headers,
                                 **kwargs)
        run.seen.append(Seen(response.headers["x-request-id"], operation,
                             response.status_code, principal=principal,
                             bytes_in=len(response.request.content),
                             bytes_out=len(response.content)))
        return response

    login = api("POST", "/auth/login", "POST /api/v1/auth/login", "anonymous",
                json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200, login.text
    session = login.json()["data"]["token"]
    run.secrets.add(session)
    assert api("GET", "/auth/me", "GET /api/v1/auth/me", "alice",
               {"Authorization": f"Bearer {session}"}).status_code == 200
    bearer = {"Authorization": f"Bearer {api_token}"}
    x_api_key = {"X-Api-Key": base64.b64encode(api_token.encode()).decode()}
    listing = api("GET", f"/storage/buckets/{BUCKET}/objects",
                  "GET /api/v1/storage/buckets/{bucket}/objects", "admin", bearer)
    assert listing.status_code == 200
    run.seen[-1].bucket = BUCKET
    put = api("PUT", f"/storage/buckets/{BUCKET}/objects/api.txt",
              "PUT /api/v1/storage/buckets/{bucket}/objects/{path:keypath}", "admin",
              x_api_key, content=b"x" * 77)
    assert put.status_code in (200, 201)
    run.seen[-1].bucket, run.seen[-1].key = BUCKET, "api.txt"
    assert api("GET", "/storage/buckets", "GET /api/v1/storage/buckets", "anonymous",
               {"Authorization": "Bearer gwt_not_a_real_token"}).status_code == 401
    presign = api("POST", f"/storage/buckets/{BUCKET}/objects/api.txt/presign",
                  "POST /api/v1/storage/buckets/{bucket}/objects/{path:keypath}", "admin",
                  bearer, json={"expires_in": 300})
    assert presign.status_code == 200, presign.text
    run.seen[-1].bucket, run.seen[-1].key = BUCKET, "api.txt"
    presigned = json.dumps(presign.json())
    run.secrets.update(re.findall(r"X-Amz-Signature=([0-9a-f]{64})", presigned))
    assert api("GET", "/no/such/route", "unmatched", "anonymous").status_code == 404

    # The gateway's own routes are logged too (not counted in the request metrics).
    for path, operation in [("/healthz", "Healthz"), ("/readyz", "Readyz"),
                            ("/metrics", "Metrics"), ("/console", "Console"),
                            ("/console/assets/nothing.js", "Console")]:
        own = httpx.get(server.url + path)
        run.seen.append(Seen(own.headers["x-request-id"], operation, own.status_code,
                             bytes_out=len(own.content)))
    # A /ws connection is logged when it closes, under the principal it authenticated as.
    with websockets.sync.client.connect(server.url.replace("http", "ws") + "/ws") as ws:
        ws.send(json.dumps({"type": "auth", "token": session}))
        assert json.loads(ws.recv())["type"] == "authenticated"
        run.seen.append(Seen(ws.response.headers["x-request-id"], "WebSocket", 101,
                             principal="alice"))


def access_lines(log: str) -> list[dict[str, Any]]:
    return [entry for entry in map(json.loads, log.splitlines())
            if entry.get("logger") == "gateway.access"]


def test_every_line_is_json(run: Run) -> None:
    lines = [line for line in run.log.splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= set(entry), line


def test_one_access_line_per_request(run: Run) -> None:
    lines = access_lines(run.log)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for entry in lines:
        by_id.setdefault(entry["request_id"], []).append(entry)
    seen_ids = {seen.request_id for seen in run.seen}
    # Before the workload: the readiness probes of GatewayProcess.start.
    probes = [entry for entry in lines if entry["request_id"] not in seen_ids]
    assert probes and all(entry["operation"] == "Readyz" for entry in probes), probes
    assert len(lines) == len(run.seen) + len(probes), "an access line for each request"
    for seen in run.seen:
        assert len(by_id.get(seen.request_id, [])) == 1, seen
        entry = by_id[seen.request_id][0]
        assert entry["operation"] == seen.operation, (entry, seen)
        assert entry["status"] == seen.status, (entry, seen)
        assert entry["principal"] == seen.principal, (entry, seen)
        assert entry["bucket"] == seen.bucket, (entry, seen)
        assert entry["key"] == seen.key, (entry, seen)
        assert entry["api"] == ("json" if entry["path"].startswith("/api/") else
                                "own" if seen.operation in OWN else "s3"), entry
        assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
        if seen.bytes_in is not None:
            assert entry["bytes_in"] == seen.bytes_in, (entry, seen)
        if seen.bytes_out is not None:
            assert entry["bytes_out"] == seen.bytes_out, (entry, seen)
    put = next(e for e in lines if e["operation"] == "PutObject" and e["key"] == "dir/a file.txt")
    assert put["bytes_in"] == 1234 and put["path"] == f"/{BUCKET}/dir/a%20file.txt"


def test_no_secret_is_logged(run: Run) -> None:
    assert len(run.secrets) > 8
    for secret in run.secrets:
        assert secret not in run.log, f"logged: {secret[:12]}…"
        assert unquote(secret) not in run.log
        assert quote(secret, safe="") not in run.log  # SigV2 signatures are Base64
    for entry in access_lines(run.log):
        if "X-Amz-Signature" in entry["query"] or "Signature" in entry["query"]:
            assert "=REDACTED" in entry["query"]
        assert "authorization" not in json.dumps(entry).lower()


def test_redact_query() -> None:
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20240101&"
             "X-Amz-Signature=abc&AWSAccessKeyId=AKIA&Signature=def&token=t&prefix=a")
    assert redact_query(query) == (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&"
        "X-Amz-Signature=REDACTED&AWSAccessKeyId=REDACTED&Signature=REDACTED&"
        "token=REDACTED&prefix=a")


def test_text_format_has_request_ids(tmp_path: Path) -> None:
    server = GatewayProcess(tmp_path / "data", env_extra={"GATEWAY_LOG_LEVEL": "info"}).start()
    try:
        response = httpx.get(server.url + "/api/v1/storage/buckets")
        assert response.status_code == 401
    finally:
        server.stop()
    line = next(line for line in server.log().splitlines()
                if "gateway.access" in line and "/api/" in line)
    assert response.headers["x-request-id"] in line
    assert "op=GET /api/v1/storage/buckets" in line and " 401 " in line


def test_debug_traces_of_websockets_hold_no_credentials(tmp_path: Path) -> None:
    """At DEBUG the websockets library (under uvicorn) traces every connection, handshake
    headers and frames as sent, and uvicorn logs the request target: credentials in the
    Authorization and X-Api-Key headers, in the first message and in the query are
    redacted."""
    server = GatewayProcess(tmp_path / "data", env_extra={"GATEWAY_LOG_LEVEL": "debug"}).start()
    try:
        token = cli(server.data_dir, "token", "create", "--user", "admin", "--name", "ws",
                    "--permission=storage:read")["token"]
        encoded = base64.b64encode(token.encode()).decode()
        url = server.url.replace("http", "ws") + f"/ws?token={token}"
        for headers, first in (({"Authorization": f"Bearer {token}"}, None),
                               ({"X-Api-Key": encoded}, None), ({}, token)):
            with websockets.sync.client.connect(url, additional_headers=headers) as ws:
                if first is not None:
                    ws.send(json.dumps({"type": "auth", "token": first}))
                assert json.loads(ws.recv())["type"] == "authenticated"
    finally:
        server.stop()
    log = server.log()
    # The traces did run, redacted.
    for redacted in ("< authorization: REDACTED", "< x-api-key: REDACTED",
                     "< TEXT REDACTED [", "/ws?token=REDACTED"):
        assert redacted in log, redacted
    for secret in (token, encoded):  # not even in part
        pieces = {secret[i:i + 12] for i in range(len(secret) - 11)}
        assert not [p for p in pieces if p in log]
