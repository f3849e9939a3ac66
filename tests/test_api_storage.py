"""The JSON Storage API (/api/v1/storage) against a real gateway process: every endpoint,
its success and error shapes, the reference's cURL examples, interplay with S3 clients,
presigned URLs and multipart uploads."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import botocore.auth
import botocore.session
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors
from gateway.api import ApiApp
from gateway.api.errors import error_response
from gateway.api.presign import presign_url
from tests._server import GatewayProcess, run_cli
from tests._server import cli_json as cli
from tests.conftest import make_client

API = "/api/v1/storage"
MiB = 1024 * 1024


def token(data: Path, user: str, *permissions: str) -> tuple[str, str]:
    """A new API token for ``user``: (token, id)."""
    args = [f"--permission={p}" for p in permissions]
    made = cli(data, "token", "create", "--user", user, "--name", uuid.uuid4().hex[:8], *args)
    return made["token"], made["id"]


@dataclass
class Env:
    server: GatewayProcess
    admin: str  # token of the root admin (storage:read + storage:write)
    member: str  # token of a member who has an S3 key
    member_read: str  # the same member, storage:read only
    keyless: str  # token of a member without any S3 key
    member_keys: tuple[str, str]

    def client(self, tok: str | None = None, *, api_key: bool = False) -> httpx.Client:
        headers = {}
        if tok is not None and api_key:
            headers["X-Api-Key"] = base64.b64encode(tok.encode()).decode()
        elif tok is not None:
            headers["Authorization"] = f"Bearer {tok}"
        return httpx.Client(base_url=self.server.url + API, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    server = GatewayProcess(tmp_path_factory.mktemp("api") / "data").start()
    data = server.data_dir
    try:
        cli(data, "user", "add", "bob")
        cli(data, "user", "add", "carol")
        keys = cli(data, "key", "create", "--user", "bob")
        yield Env(
            server,
            admin=token(data, "admin", "storage:read", "storage:write")[0],
            member=token(data, "bob", "storage:read", "storage:write")[0],
            member_read=token(data, "bob", "storage:read")[0],
            keyless=token(data, "carol", "storage:read", "storage:write")[0],
            member_keys=(keys["access_key"], keys["secret_key"]),
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(env: Env) -> Iterator[httpx.Client]:
    with env.client(env.admin) as client:
        yield client


@pytest.fixture(scope="module")
def boto(env: Env) -> Any:
    return make_client(env.server)


@pytest.fixture
def bkt(api: httpx.Client, boto: Any) -> Iterator[str]:
    name = f"api-{uuid.uuid4().hex[:16]}"
    assert api.post("/buckets", json={"name": name}).status_code == 201
    yield name
    for page in boto.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            boto.delete_object(Bucket=name, Key=obj["Key"])
    boto.delete_bucket(Bucket=name)


def storage_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == error and body["message"] and body["request_id"]
    assert response.headers["x-request-id"] == body["request_id"]
    return body


# -- buckets -------------------------------------------------------------------------------

def test_buckets(api: httpx.Client, boto: Any) -> None:
    name = f"api-{uuid.uuid4().hex[:16]}"
    created = api.post("/buckets", json={"name": name, "region": "us-east-1",
                                         "versioning": False})
    assert created.status_code == 201
    assert created.json() == {"bucket": name, "created": True, "location": f"/{name}"}
    assert created.headers["location"] == f"/{name}"
    boto.head_bucket(Bucket=name)  # the same bucket for S3 clients

    listed = api.get("/buckets").json()["buckets"]
    mine = next(b for b in listed if b["name"] == name)
    assert mine["size"] == 0 and mine["created"].endswith("Z")
    datetime.strptime(mine["created"], "%Y-%m-%dT%H:%M:%SZ")

    again = storage_error(api.post("/buckets", json={"name": name}), 409, "conflict")
    assert again["bucket"] == name and again["message"] == "Bucket already exists"

    api.put(f"/buckets/{name}/objects/k", content=b"x" * 1000)
    size = next(b["size"] for b in api.get("/buckets").json()["buckets"] if b["name"] == name)
    assert size == 1000  # bytes used
    assert storage_error(api.delete(f"/buckets/{name}"), 409, "conflict")["bucket"] == name
    boto.delete_object(Bucket=name, Key="k")
    assert api.delete(f"/buckets/{name}").json() == {"deleted": True, "bucket": name}
    gone = storage_error(api.delete(f"/buckets/{name}"), 404, "not_found")
    assert gone["resource"] == name

    storage_error(api.post("/buckets", json={"name": "Bad_Name"}), 400, "validation_error")
    storage_error(api.post("/buckets", json={"name": "api"}), 400, "validation_error")
    storage_error(api.post("/buckets", json={}), 400, "validation_error")
    storage_error(api.post("/buckets", json={"name": 5}), 400, "validation_error")
    storage_error(api.post("/buckets", json=["x"]), 400, "validation_error")
    storage_error(api.post("/buckets", content=b"{nope",
                           headers={"content-type": "application/json"}),
                  400, "validation_error")
    storage_error(api.post("/buckets", content=b"name=x",
                           headers={"content-type": "application/x-www-form-urlencoded"}),
                  415, "unsupported_media_type")
    storage_error(api.post("/buckets", json={"name": f"api-{uuid.uuid4().hex[:16]}",
                                             "versioning": "yes"}), 400, "validation_error")


# -- authentication and permissions ----------------------------------------------------------

def test_authentication(env: Env, bkt: str) -> None:
    with env.client() as anonymous:
        missing = anonymous.get("/buckets")
        storage_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        storage_error(anonymous.get("/buckets", headers={"Authorization": "Bearer gwt_nope"}),
                      401, "unauthorized")
        storage_error(anonymous.get("/buckets", headers={"Authorization": "Basic eDp5"}),
                      401, "unauthorized")
        storage_error(anonymous.get("/buckets", headers={"X-Api-Key": "bm9wZQ=="}),
                      401, "unauthorized")
        # An unauthenticated upload is refused before its body is taken.
        storage_error(anonymous.put(f"/buckets/{bkt}/objects/k", content=b"x" * 100_000),
                      401, "unauthorized")
    with env.client(env.admin, api_key=True) as by_api_key:
        assert by_api_key.get(f"/buckets/{bkt}/objects").status_code == 200
    with env.client(env.admin) as raw_bearer:
        assert raw_bearer.get(f"/buckets/{bkt}/objects").status_code == 200

    revoked, revoked_id = token(env.server.data_dir, "bob", "storage:read")
    with env.client(revoked) as client:
        assert client.get("/buckets").status_code == 200
        assert run_cli(env.server.data_dir, "token", "revoke", revoked_id).returncode == 0
        storage_error(client.get("/buckets"), 401, "unauthorized")


def test_permissions_and_tenants(env: Env, api: httpx.Client, bkt: str) -> None:
    api.put(f"/buckets/{bkt}/objects/secret.txt", content=b"admin's")
    with env.client(env.member) as bob:
        # Bob sees only his own buckets, and gets the same denials as through S3.
        assert bkt not in [b["name"] for b in bob.get("/buckets").json()["buckets"]]
        denied = storage_error(bob.get(f"/buckets/{bkt}/objects/secret.txt"), 403,
                               "forbidden")
        assert denied["code"] == "AccessDenied"
        storage_error(bob.get(f"/buckets/{bkt}/objects"), 403, "forbidden")
        storage_error(bob.put(f"/buckets/{bkt}/objects/x", content=b"x"), 403, "forbidden")
        storage_error(bob.delete(f"/buckets/{bkt}/objects/secret.txt"), 403, "forbidden")
        storage_error(bob.delete(f"/buckets/{bkt}"), 403, "forbidden")
        own = f"bob-{uuid.uuid4().hex[:12]}"
        assert bob.post("/buckets", json={"name": own}).status_code == 201
        assert bob.put(f"/buckets/{own}/objects/x", content=b"x").status_code == 200
    with env.client(env.member_read) as reader:
        assert reader.get(f"/buckets/{own}/objects/x").content == b"x"
        no_write = storage_error(reader.put(f"/buckets/{own}/objects/y", content=b"y"),
                                 403, "forbidden")
        assert "storage:write" in no_write["message"]
        storage_error(reader.post("/buckets", json={"name": f"r-{uuid.uuid4().hex[:8]}"}),
                      403, "forbidden")
    # Admins see everything.
    assert own in [b["name"] for b in api.get("/buckets").json()["buckets"]]
    with env.client(env.member) as bob:
        bob.delete(f"/buckets/{own}/objects/x")
        assert bob.delete(f"/buckets/{own}").status_code == 200


def test_other_api_paths_use_the_envelope(env: Env) -> None:
    response = httpx.get(env.server.url + "/api/v1/no-such-thing")
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "NOT_FOUND"
    assert response.headers["x-request-id"]
    # Unknown storage paths and methods answer in the storage shape.
    with env.client(env.admin) as api:
        storage_error(api.patch("/buckets"), 405, "method_not_allowed")


# -- objects -------------------------------------------------------------------------------

def test_object_round_trip(api: httpx.Client, bkt: str) -> None:
    key = "docs/sub dir/ré sumé+1.pdf"
    data = bytes(range(256)) * 40
    put = api.put(f"/buckets/{bkt}/objects/{key}", content=data,
                  headers={"Content-Type": "application/pdf", "x-amz-meta-author": "Ana",
                           "Content-Disposition": 'attachment; filename="r.pdf"'})
    assert put.status_code == 200
    etag = hashlib.md5(data).hexdigest()
    assert put.json() == {"bucket": bkt, "key": key, "etag": etag, "version_id": None}

    got = api.get(f"/buckets/{bkt}/objects/{key}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["etag"] == f'"{etag}"'
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["x-amz-meta-author"] == "Ana"
    assert got.headers["content-disposition"] == 'attachment; filename="r.pdf"'
    assert got.headers["last-modified"].endswith("GMT")

    head = api.head(f"/buckets/{bkt}/objects/{key}")
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-type", "content-length", "last-modified", "x-amz-meta-author"):
        assert head.headers[name] == got.headers[name]

    part = api.get(f"/buckets/{bkt}/objects/{key}", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    suffix = api.get(f"/buckets/{bkt}/objects/{key}", headers={"Range": "bytes=-5"})
    assert suffix.status_code == 206 and suffix.content == data[-5:]
    bad = storage_error(api.get(f"/buckets/{bkt}/objects/{key}",
                                headers={"Range": f"bytes={len(data)}-"}),
                        416, "range_not_satisfiable")
    assert bad["resource"] == f"{bkt}/{key}"

    cached = api.get(f"/buckets/{bkt}/objects/{key}", headers={"If-None-Match": f'"{etag}"'})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == f'"{etag}"'
    assert api.get(f"/buckets/{bkt}/objects/{key}",
                   headers={"If-None-Match": '"other"'}).status_code == 200

    assert api.delete(f"/buckets/{bkt}/objects/{key}").json() == {"deleted": True, "key": key}
    assert api.delete(f"/buckets/{bkt}/objects/{key}").json() == {"deleted": True, "key": key}
    missing = storage_error(api.get(f"/buckets/{bkt}/objects/{key}"), 404, "not_found")
    assert missing == {**missing, "message": "Object not found", "resource": f"{bkt}/{key}"}
    head_missing = api.head(f"/buckets/{bkt}/objects/{key}")
    assert head_missing.status_code == 404 and head_missing.content == b""
    storage_error(api.get(f"/buckets/{bkt}-nope/objects/k"), 404, "not_found")

    assert api.put(f"/buckets/{bkt}/objects/e", content=b"").status_code == 200
    assert api.get(f"/buckets/{bkt}/objects/e").content == b""
    api.put(f"/buckets/{bkt}/objects/e", content=b"second")  # an overwrite
    assert api.get(f"/buckets/{bkt}/objects/e").content == b"second"


def test_upload_requires_content_length(api: httpx.Client, bkt: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"abc"
        yield b"def"

    response = api.put(f"/buckets/{bkt}/objects/chunked", content=chunks())
    assert "content-length" not in response.request.headers
    storage_error(response, 411, "length_required")
    storage_error(api.get(f"/buckets/{bkt}/objects/chunked"), 404, "not_found")


def test_upload_digests(api: httpx.Client, bkt: str) -> None:
    data = b"verified"
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert api.put(f"/buckets/{bkt}/objects/v", content=data,
                   headers={"Content-MD5": good}).status_code == 200
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    storage_error(api.put(f"/buckets/{bkt}/objects/w", content=data,
                          headers={"Content-MD5": wrong}), 400, "validation_error")
    storage_error(api.get(f"/buckets/{bkt}/objects/w"), 404, "not_found")


def test_listing(api: httpx.Client, bkt: str) -> None:
    keys = ["a.txt", "docs/1.txt", "docs/2.txt", "docs/deep/3.txt", "z/9.txt"]
    for key in keys:
        api.put(f"/buckets/{bkt}/objects/{key}", content=key.encode())
    everything = api.get(f"/buckets/{bkt}/objects").json()
    assert [o["key"] for o in everything["objects"]] == keys
    assert everything["is_truncated"] is False and everything["continuation_token"] is None
    assert "common_prefixes" not in everything
    first = everything["objects"][0]
    assert first == {"key": "a.txt", "size": 5, "etag": hashlib.md5(b"a.txt").hexdigest(),
                     "last_modified": first["last_modified"]}
    datetime.strptime(first["last_modified"], "%Y-%m-%dT%H:%M:%SZ")

    docs = api.get(f"/buckets/{bkt}/objects", params={"prefix": "docs/"}).json()
    assert [o["key"] for o in docs["objects"]] == keys[1:4]
    grouped = api.get(f"/buckets/{bkt}/objects", params={"delimiter": "/"}).json()
    assert [o["key"] for o in grouped["objects"]] == ["a.txt"]
    assert grouped["common_prefixes"] == ["docs/", "z/"]

    seen: list[str] = []
    params: dict[str, Any] = {"max_keys": 2}
    while True:
        page = api.get(f"/buckets/{bkt}/objects", params=params).json()
        seen += [o["key"] for o in page["objects"]]
        if not page["is_truncated"]:
            assert page["continuation_token"] is None
            break
        params["continuation_token"] = page["continuation_token"]
    assert seen == keys

    storage_error(api.get(f"/buckets/{bkt}/objects", params={"max_keys": "x"}), 400,
                  "validation_error")
    storage_error(api.get(f"/buckets/{bkt}/objects", params={"max_keys": -1}), 400,
                  "validation_error")
    storage_error(api.get(f"/buckets/{bkt}/objects", params={"continuation_token": "!!"}),
                  400, "validation_error")
    storage_error(api.get("/buckets/api-no-such-bucket/objects"), 404, "not_found")


# -- interplay with S3 clients ----------------------------------------------------------------

def test_json_api_and_s3_see_the_same_objects(api: httpx.Client, boto: Any, bkt: str) -> None:
    data = b"written through the JSON API" * 100
    put = api.put(f"/buckets/{bkt}/objects/kb/one.bin", content=data,
                  headers={"Content-Type": "application/x-thing", "x-amz-meta-lang": "pt"})
    got = boto.get_object(Bucket=bkt, Key="kb/one.bin")
    assert got["Body"].read() == data
    assert got["ETag"] == f'"{put.json()["etag"]}"'
    assert got["ContentType"] == "application/x-thing"
    assert got["Metadata"] == {"lang": "pt"}

    boto.put_object(Bucket=bkt, Key="kb/two.bin", Body=b"from boto3", ContentType="text/csv",
                    Metadata={"source": "s3"})
    head = boto.head_object(Bucket=bkt, Key="kb/two.bin")
    mine = api.get(f"/buckets/{bkt}/objects/kb/two.bin")
    assert mine.content == b"from boto3"
    assert mine.headers["etag"] == head["ETag"]
    assert mine.headers["content-type"] == "text/csv"
    assert mine.headers["x-amz-meta-source"] == "s3"
    listed = {o["key"]: o["etag"] for o in api.get(f"/buckets/{bkt}/objects").json()["objects"]}
    assert listed == {"kb/one.bin": put.json()["etag"], "kb/two.bin": head["ETag"].strip('"')}


# -- copy ------------------------------------------------------------------------------------

def test_copy(api: httpx.Client, boto: Any, bkt: str) -> None:
    other = f"api-{uuid.uuid4().hex[:16]}"
    api.post("/buckets", json={"name": other})
    try:
        api.put(f"/buckets/{bkt}/objects/file.pdf", content=b"%PDF",
                headers={"Content-Type": "application/pdf", "x-amz-meta-a": "1"})
        copied = api.post(f"/buckets/{bkt}/objects/file.pdf/copy", json={
            "source_bucket": bkt, "source_key": "file.pdf",
            "destination_bucket": other, "destination_key": "copied-file.pdf"})
        assert copied.status_code == 200
        assert copied.json() == {"copied": True, "source": f"{bkt}/file.pdf",
                                 "destination": f"{other}/copied-file.pdf",
                                 "etag": hashlib.md5(b"%PDF").hexdigest()}
        head = boto.head_object(Bucket=other, Key="copied-file.pdf")
        assert head["ContentType"] == "application/pdf" and head["Metadata"] == {"a": "1"}

        # The path names the source when the body does not; same bucket by default.
        short = api.post(f"/buckets/{bkt}/objects/file.pdf/copy",
                         json={"destination_key": "dir/copy.pdf"})
        assert short.json()["destination"] == f"{bkt}/dir/copy.pdf"
        assert api.get(f"/buckets/{bkt}/objects/dir/copy.pdf").content == b"%PDF"

        storage_error(api.post(f"/buckets/{bkt}/objects/file.pdf/copy", json={}), 400,
                      "validation_error")
        missing = storage_error(api.post(f"/buckets/{bkt}/objects/nope.pdf/copy",
                                         json={"destination_key": "x"}), 404, "not_found")
        assert missing["resource"] == f"{bkt}/nope.pdf"
        no_bucket = storage_error(api.post(f"/buckets/{bkt}/objects/file.pdf/copy", json={
            "destination_bucket": "api-no-such-bucket", "destination_key": "x"}),
            404, "not_found")
        assert no_bucket["resource"] == "api-no-such-bucket"
        storage_error(api.post(f"/buckets/{bkt}/objects/file.pdf/rename", json={}), 404,
                      "not_found")
    finally:
        for obj in boto.list_objects_v2(Bucket=other).get("Contents", []):
            boto.delete_object(Bucket=other, Key=obj["Key"])
        boto.delete_bucket(Bucket=other)


# -- presigned URLs --------------------------------------------------------------------------

def test_presign_get_and_put(env: Env, api: httpx.Client, bkt: str) -> None:
    api.put(f"/buckets/{bkt}/objects/docs/file.pdf", content=b"pdf bytes")
    made = api.post(f"/buckets/{bkt}/objects/docs/file.pdf/presign",
                    json={"operation": "GET", "expires_in": 3600,
                          "content_type": "application/pdf"})
    assert made.status_code == 200
    body = made.json()
    assert body["url"].startswith(f"{env.server.url}/{bkt}/docs/file.pdf?X-Amz-Algorithm=")
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 3590 < (expires - datetime.now(UTC)).total_seconds() <= 3600
    fetched = httpx.get(body["url"])
    assert fetched.status_code == 200 and fetched.content == b"pdf bytes"
    assert fetched.headers["content-type"] == "application/pdf"
    tampered = body["url"].replace("docs/file.pdf", "docs/other.pdf")
    assert httpx.get(tampered).status_code == 403

    up = api.post(f"/buckets/{bkt}/objects/up load/ü.txt/presign",
                  json={"operation": "PUT", "content_type": "text/plain"}).json()
    assert up["headers"] == {"Content-Type": "text/plain"}
    sent = httpx.put(up["url"], content=b"uploaded", headers=up["headers"])
    assert sent.status_code == 200, sent.text
    got = api.get(f"/buckets/{bkt}/objects/up load/ü.txt")
    assert got.content == b"uploaded" and got.headers["content-type"] == "text/plain"

    head = api.post(f"/buckets/{bkt}/objects/up load/ü.txt/presign",
                    json={"operation": "HEAD"}).json()
    assert httpx.head(head["url"]).status_code == 200
    delete = api.post(f"/buckets/{bkt}/objects/up load/ü.txt/presign",
                      json={"operation": "DELETE", "expires_in": 60}).json()
    assert httpx.delete(delete["url"]).status_code == 204
    storage_error(api.get(f"/buckets/{bkt}/objects/up load/ü.txt"), 404, "not_found")

    week = api.post(f"/buckets/{bkt}/objects/k/presign", json={"expires_in": 604800})
    assert week.status_code == 200
    for bad in ({"expires_in": 604801}, {"expires_in": 0}, {"expires_in": "60"},
                {"operation": "PATCH"}):
        storage_error(api.post(f"/buckets/{bkt}/objects/k/presign", json=bad), 400,
                      "validation_error")


def test_presign_permissions(env: Env, api: httpx.Client, bkt: str) -> None:
    with env.client(env.member) as bob:
        storage_error(bob.post(f"/buckets/{bkt}/objects/k/presign", json={}), 403,
                      "forbidden")
        own = f"bob-{uuid.uuid4().hex[:12]}"
        bob.post("/buckets", json={"name": own})
        bob.put(f"/buckets/{own}/objects/k", content=b"bob's")
        url = bob.post(f"/buckets/{own}/objects/k/presign", json={}).json()["url"]
        # Signed with Bob's own S3 key.
        assert f"X-Amz-Credential={env.member_keys[0]}%2F" in url
        assert httpx.get(url).content == b"bob's"
    with env.client(env.member_read) as reader:
        assert reader.post(f"/buckets/{own}/objects/k/presign", json={}).status_code == 200
        storage_error(reader.post(f"/buckets/{own}/objects/k/presign",
                                  json={"operation": "PUT"}), 403, "forbidden")
    with env.client(env.keyless) as carol:
        mine = f"carol-{uuid.uuid4().hex[:12]}"
        carol.post("/buckets", json={"name": mine})
        no_key = storage_error(carol.post(f"/buckets/{mine}/objects/k/presign", json={}),
                               409, "conflict")
        assert "S3 access key" in no_key["message"]
        assert carol.delete(f"/buckets/{mine}").status_code == 200
    with env.client(env.member) as bob:
        bob.delete(f"/buckets/{own}/objects/k")
        bob.delete(f"/buckets/{own}")


def test_presigned_url_matches_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    moment = datetime(2024, 1, 15, 10, 30, 0, tzinfo=UTC)

    def frozen(remove_tzinfo: bool = True) -> datetime:
        return moment.replace(tzinfo=None) if remove_tzinfo else moment

    monkeypatch.setattr(botocore.auth, "get_current_datetime", frozen)
    try:  # with awscrt installed, botocore presigns with its CRT signer
        crt_auth = importlib.import_module("botocore.crt.auth")
        monkeypatch.setattr(crt_auth, "get_current_datetime", frozen)
    except ImportError:
        pass
    client = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:8080",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret/key+example",
        config=botocore.config.Config(signature_version="s3v4",
                                      s3={"addressing_style": "path"}))
    for method, op, key, extra in (
        ("GET", "get_object", "docs/manual.pdf", {}),
        ("PUT", "put_object", "a b/ç~x+y.pdf", {"ContentType": "application/pdf"}),
        ("GET", "get_object", "k", {"ResponseContentType": "text/plain"}),
    ):
        expected = client.generate_presigned_url(
            op, Params={"Bucket": "mybot.gbai", "Key": key, **extra}, ExpiresIn=900)
        headers = {"Content-Type": extra["ContentType"]} if "ContentType" in extra else {}
        params = ({"response-content-type": extra["ResponseContentType"]}
                  if "ResponseContentType" in extra else {})
        url, expires_at = presign_url(
            method=method, scheme="http", host="127.0.0.1:8080", bucket="mybot.gbai",
            key=key, access_key="AKIDEXAMPLE", secret_key="secret/key+example",
            region="us-east-1", expires_in=900, headers=headers, params=params, now=moment)
        assert expires_at == datetime(2024, 1, 15, 10, 45, tzinfo=UTC)

        def sig(u: str) -> tuple[str, str]:
            base, _, query = u.partition("?")
            pairs = dict(p.split("=", 1) for p in query.split("&"))
            return base, pairs["X-Amz-Signature"]

        assert sig(url) == sig(expected), (url, expected)


# -- multipart -------------------------------------------------------------------------------

def test_multipart_upload(api: httpx.Client, boto: Any, bkt: str) -> None:
    key = "big/archive.zip"
    started = api.post(f"/buckets/{bkt}/objects/{key}/multipart",
                       json={"content_type": "application/zip", "metadata": {"v": "2"}})
    assert started.status_code == 200
    upload_id = started.json()["upload_id"]
    assert started.json() == {"upload_id": upload_id, "bucket": bkt, "key": key}

    first, second = b"a" * (5 * MiB), b"tail bytes"
    etags = []
    for number, chunk in ((1, first), (2, second)):
        part = api.put(f"/buckets/{bkt}/objects/{key}/multipart/{upload_id}/{number}",
                       content=chunk)
        assert part.status_code == 200, part.text
        assert part.json() == {"part_number": number, "etag": hashlib.md5(chunk).hexdigest()}
        etags.append(part.json()["etag"])
    done = api.post(f"/buckets/{bkt}/objects/{key}/multipart/{upload_id}/complete",
                    json={"parts": [{"part_number": n, "etag": e}
                                    for n, e in enumerate(etags, start=1)]})
    assert done.status_code == 200, done.text
    combined = hashlib.md5(b"".join(bytes.fromhex(e) for e in etags)).hexdigest() + "-2"
    assert done.json() == {"bucket": bkt, "key": key, "etag": combined, "version_id": None}
    head = boto.head_object(Bucket=bkt, Key=key)
    assert head["ETag"] == f'"{combined}"' and head["ContentLength"] == len(first + second)
    assert head["ContentType"] == "application/zip" and head["Metadata"] == {"v": "2"}
    got = api.get(f"/buckets/{bkt}/objects/{key}", headers={"Range": f"bytes={5 * MiB - 2}-"})
    assert got.content == b"aa" + second

    # An empty completion body takes every uploaded part, in order.
    again = api.post(f"/buckets/{bkt}/objects/{key}/multipart").json()["upload_id"]
    api.put(f"/buckets/{bkt}/objects/{key}/multipart/{again}/1", content=b"only part")
    whole = api.post(f"/buckets/{bkt}/objects/{key}/multipart/{again}/complete")
    assert whole.status_code == 200, whole.text
    assert api.get(f"/buckets/{bkt}/objects/{key}").content == b"only part"

    # Abort; the upload is then gone, and part uploads to it never become objects.
    third = api.post(f"/buckets/{bkt}/objects/{key}/multipart").json()["upload_id"]
    aborted = api.delete(f"/buckets/{bkt}/objects/{key}/multipart/{third}")
    assert aborted.json() == {"aborted": True, "key": key, "upload_id": third}
    late = storage_error(api.put(f"/buckets/{bkt}/objects/{key}/multipart/{third}/1",
                                 content=b"late"), 404, "not_found")
    assert late["message"] == "Multipart upload not found"
    storage_error(api.post(f"/buckets/{bkt}/objects/{key}/multipart/{third}/complete"),
                  404, "not_found")
    storage_error(api.put(f"/buckets/{bkt}/objects/{key}/multipart/{'A' * 64}/1",
                          content=b"x"), 404, "not_found")
    bad = storage_error(api.post(f"/buckets/{bkt}/objects/{key}/multipart/{upload_id}/complete",
                                 json={"parts": [{"part_number": "1"}]}), 400,
                        "validation_error")
    assert bad["resource"] == f"{bkt}/{key}"

    # Keys that merely look like these paths are ordinary keys.
    odd = "x/multipart/short-id/1"
    assert api.put(f"/buckets/{bkt}/objects/{odd}", content=b"plain").status_code == 200
    assert api.get(f"/buckets/{bkt}/objects/{odd}").content == b"plain"
    assert api.put(f"/buckets/{bkt}/objects/y/copy", content=b"c").status_code == 200
    assert api.get(f"/buckets/{bkt}/objects/y/copy").content == b"c"


# -- the reference's cURL examples, verbatim -------------------------------------------------

CURL_EXAMPLES = [
    """curl -X PUT \\
-H "Authorization: Bearer token123" \\
-H "Content-Type: application/pdf" \\
--data-binary @document.pdf \\
http://localhost:8080/api/v1/storage/buckets/mybot.gbai/objects/docs/manual.pdf""",
    """curl -X GET \\
-H "Authorization: Bearer token123" \\
http://localhost:8080/api/v1/storage/buckets/mybot.gbai/objects/docs/manual.pdf \\
-o downloaded.pdf""",
    """curl -X GET \\
-H "Authorization: Bearer token123" \\
"http://localhost:8080/api/v1/storage/buckets/mybot.gbai/objects?prefix=docs/\"""",
]


def test_reference_curl_examples(env: Env, api: httpx.Client, tmp_path: Path) -> None:
    if api.get("/buckets/mybot.gbai/objects").status_code == 404:
        assert api.post("/buckets", json={"name": "mybot.gbai"}).status_code == 201
    document = b"%PDF-1.4\n" + bytes(range(256)) * 100
    (tmp_path / "document.pdf").write_bytes(document)
    outputs = []
    for example in CURL_EXAMPLES:
        command = (example.replace("http://localhost:8080", env.server.url)
                   .replace("token123", env.admin))
        result = subprocess.run(["bash", "-c", command + " --silent --show-error"],
                                cwd=tmp_path, capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    uploaded = json.loads(outputs[0])
    assert uploaded == {"bucket": "mybot.gbai", "key": "docs/manual.pdf",
                        "etag": hashlib.md5(document).hexdigest(), "version_id": None}
    assert (tmp_path / "downloaded.pdf").read_bytes() == document
    listed = json.loads(outputs[2])
    assert [o["key"] for o in listed["objects"]] == ["docs/manual.pdf"]
    assert listed["is_truncated"] is False and listed["continuation_token"] is None
    head = api.head("/buckets/mybot.gbai/objects/docs/manual.pdf")
    assert head.headers["content-type"] == "application/pdf"


# -- keys with line breaks ------------------------------------------------------------------

def _path(key: str) -> str:
    return quote(key, safe="/")


def test_keys_with_line_breaks_are_reachable_both_ways(api: httpx.Client, boto: Any,
                                                       bkt: str) -> None:
    """S3 keys may hold CR and LF; the JSON API's routes match them like any character."""
    # Written through S3, used through the JSON API.
    key = "kb/line\nfeed\r.txt"
    boto.put_object(Bucket=bkt, Key=key, Body=b"from s3", Metadata={"k": "v"})
    got = api.get(f"/buckets/{bkt}/objects/{_path(key)}")
    assert got.status_code == 200, got.text
    assert got.content == b"from s3" and got.headers["x-amz-meta-k"] == "v"
    head = api.head(f"/buckets/{bkt}/objects/{_path(key)}")
    assert head.status_code == 200 and head.headers["content-length"] == "7"
    copy = "kb/copy\r\n"
    copied = api.post(f"/buckets/{bkt}/objects/{_path(key)}/copy",
                      json={"destination_key": copy})
    assert copied.status_code == 200, copied.text
    assert boto.get_object(Bucket=bkt, Key=copy)["Body"].read() == b"from s3"
    gone = api.delete(f"/buckets/{bkt}/objects/{_path(key)}")
    assert gone.json() == {"deleted": True, "key": key}
    storage_error(api.get(f"/buckets/{bkt}/objects/{_path(key)}"), 404, "not_found")
    assert boto.list_objects_v2(Bucket=bkt, Prefix="kb/line").get("KeyCount") == 0

    # A trailing line feed is part of the key, not dropped by the route's end anchor.
    boto.put_object(Bucket=bkt, Key="trail", Body=b"no line feed")
    missing = storage_error(api.get(f"/buckets/{bkt}/objects/trail%0A"), 404, "not_found")
    assert missing["resource"] == f"{bkt}/trail\n"
    assert api.put(f"/buckets/{bkt}/objects/trail%0A", content=b"with").status_code == 200
    assert boto.get_object(Bucket=bkt, Key="trail\n")["Body"].read() == b"with"
    assert boto.get_object(Bucket=bkt, Key="trail")["Body"].read() == b"no line feed"
    assert api.delete(f"/buckets/{bkt}/objects/trail%0A").json()["key"] == "trail\n"
    assert boto.get_object(Bucket=bkt, Key="trail")["Body"].read() == b"no line feed"
    # Nor does a line feed after a fixed path reach that path's route.
    storage_error(api.get("/buckets%0A"), 404, "not_found")
    storage_error(api.get(f"/buckets/{bkt}/objects%0A"), 404, "not_found")

    # Written through the JSON API (single PUT and multipart), used through S3.
    key = "api\r\nkey\n"
    assert api.put(f"/buckets/{bkt}/objects/{_path(key)}", content=b"from api",
                   headers={"x-amz-meta-k": "w"}).status_code == 200
    got_s3 = boto.get_object(Bucket=bkt, Key=key)
    assert got_s3["Body"].read() == b"from api" and got_s3["Metadata"] == {"k": "w"}
    assert boto.head_object(Bucket=bkt, Key=key)["ContentLength"] == 8
    boto.copy_object(Bucket=bkt, Key="s3\ncopy", CopySource={"Bucket": bkt, "Key": key})
    assert api.get(f"/buckets/{bkt}/objects/{_path('s3' + chr(10) + 'copy')}").content \
        == b"from api"
    multi = "multi\npart"
    upload = api.post(f"/buckets/{bkt}/objects/{_path(multi)}/multipart").json()["upload_id"]
    part = api.put(f"/buckets/{bkt}/objects/{_path(multi)}/multipart/{upload}/1",
                   content=b"one part")
    assert part.status_code == 200 and part.json()["part_number"] == 1, part.text
    done = api.post(f"/buckets/{bkt}/objects/{_path(multi)}/multipart/{upload}/complete")
    assert done.status_code == 200 and done.json()["key"] == multi, done.text
    assert boto.get_object(Bucket=bkt, Key=multi)["Body"].read() == b"one part"
    aborted = api.post(f"/buckets/{bkt}/objects/{_path(multi)}/multipart").json()["upload_id"]
    assert api.delete(f"/buckets/{bkt}/objects/{_path(multi)}/multipart/{aborted}").json() \
        == {"aborted": True, "key": multi, "upload_id": aborted}
    boto.delete_object(Bucket=bkt, Key=key)
    storage_error(api.get(f"/buckets/{bkt}/objects/{_path(key)}"), 404, "not_found")
    listed = [o["key"] for o in api.get(f"/buckets/{bkt}/objects").json()["objects"]]
    assert sorted(listed) == sorted(["kb/copy\r\n", "multi\npart", "s3\ncopy", "trail"])


# -- metadata and content types that become response headers ---------------------------------

def _decoded(value: str) -> str:
    return "".join(part.decode(charset or "ascii") if isinstance(part, bytes) else part
                   for part, charset in decode_header(value))


def test_metadata_must_be_header_text(api: httpx.Client, boto: Any, bkt: str) -> None:
    """Copy and initiate-multipart take metadata and content_type as JSON; they are held to
    what S3 accepts as request headers. Non-ASCII metadata values are stored RFC 2047-encoded
    (as S3 returns them); anything else a header cannot carry is a 400."""
    api.put(f"/buckets/{bkt}/objects/src", content=b"source")
    bad_bodies = [
        {"content_type": "text/\u0100"},
        {"content_type": "text/plain\r\nX-Injected: 1"},
        {"metadata": {"note": "a\nb"}},
        {"metadata": {"note": "a\rb"}},
        {"metadata": {"note": "bell\u0007"}},
        {"metadata": {"bad\nname": "x"}},
        {"metadata": {"two words": "x"}},
        {"metadata": {"n\u0101me": "x"}},
        {"metadata": {"": "x"}},
    ]
    for body in bad_bodies:
        copied = api.post(f"/buckets/{bkt}/objects/src/copy",
                          json={"destination_key": "dst", **body})
        storage_error(copied, 400, "validation_error")
        started = api.post(f"/buckets/{bkt}/objects/mp/multipart", json=body)
        storage_error(started, 400, "validation_error")
    presigned = api.post(f"/buckets/{bkt}/objects/src/presign",
                         json={"operation": "PUT", "content_type": "text/\u0100"})
    storage_error(presigned, 400, "validation_error")
    assert boto.list_multipart_uploads(Bucket=bkt).get("Uploads", []) == []
    storage_error(api.get(f"/buckets/{bkt}/objects/dst"), 404, "not_found")

    note = "a\u00e7\u00e3o \u0101 \U0001f600"  # "ação ā 😀"
    copied = api.post(f"/buckets/{bkt}/objects/src/copy", json={
        "destination_key": "dst", "content_type": "text/plain; charset=utf-8",
        "metadata": {"Note": note, "plain": "  ascii stays  "}})
    assert copied.status_code == 200, copied.text
    for response in (api.get(f"/buckets/{bkt}/objects/dst"),
                     api.head(f"/buckets/{bkt}/objects/dst")):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        encoded = response.headers["x-amz-meta-note"]
        assert encoded.startswith("=?UTF-8?B?") and _decoded(encoded) == note
        assert response.headers["x-amz-meta-plain"] == "ascii stays"
    head = boto.head_object(Bucket=bkt, Key="dst")
    assert _decoded(head["Metadata"]["note"]) == note
    assert head["Metadata"]["plain"] == "ascii stays"

    started = api.post(f"/buckets/{bkt}/objects/mp/multipart",
                       json={"metadata": {"note": note}})
    assert started.status_code == 200, started.text
    upload = started.json()["upload_id"]
    assert api.put(f"/buckets/{bkt}/objects/mp/multipart/{upload}/1",
                   content=b"part").status_code == 200
    done = api.post(f"/buckets/{bkt}/objects/mp/multipart/{upload}/complete")
    assert done.status_code == 200, done.text
    assert _decoded(api.head(f"/buckets/{bkt}/objects/mp").headers["x-amz-meta-note"]) == note
    assert _decoded(boto.get_object(Bucket=bkt, Key="mp")["Metadata"]["note"]) == note


def test_stored_values_a_header_cannot_carry_never_break_a_read(
        env: Env, api: httpx.Client, boto: Any, bkt: str) -> None:
    """Defense in depth: whatever a row holds (an older version's writes), GET and HEAD
    answer, through S3 and the JSON API alike, with header text that can be sent."""
    boto.put_object(Bucket=bkt, Key="tampered", Body=b"body", Metadata={"ok": "fine"})
    db = sqlite3.connect(env.server.data_dir / "gateway.db", timeout=30)
    try:
        with db:
            changed = db.execute(
                "UPDATE objects SET content_type = ?, user_metadata = ?, headers = ? "
                "WHERE key = ?",
                ("text/\u0100", json.dumps({"ok": "fine", "note": "\u0101",
                                            "crlf": "a\r\nInjected: 1", "bad name": "x",
                                            "lf\nname": "y"}),
                 json.dumps({"Content-Disposition": "attachment\n; x"}), "tampered"))
            assert changed.rowcount == 1
    finally:
        db.close()
    for response in (api.get(f"/buckets/{bkt}/objects/tampered"),
                     api.head(f"/buckets/{bkt}/objects/tampered")):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["x-amz-meta-ok"] == "fine"
        assert _decoded(response.headers["x-amz-meta-note"]) == "\u0101"
        assert _decoded(response.headers["x-amz-meta-crlf"]) == "a\r\nInjected: 1"
        assert "injected" not in response.headers
        assert response.headers["x-amz-missing-meta"] == "2"  # the two invalid names
        assert _decoded(response.headers["content-disposition"]) == "attachment\n; x"
    got = boto.get_object(Bucket=bkt, Key="tampered")
    assert got["Body"].read() == b"body" and got["ContentType"] == "binary/octet-stream"
    assert got["Metadata"]["ok"] == "fine" and _decoded(got["Metadata"]["note"]) == "\u0101"
    assert boto.head_object(Bucket=bkt, Key="tampered")["ContentLength"] == 4
    # A response-* override that is not header text is refused; one beyond Latin-1 is sent
    # RFC 2047-encoded.
    url = boto.generate_presigned_url("get_object", Params={
        "Bucket": bkt, "Key": "tampered", "ResponseContentDisposition": "a\r\nX-Injected: 1"})
    refused = httpx.get(url)
    assert refused.status_code == 400 and b"InvalidArgument" in refused.content
    url = boto.generate_presigned_url("get_object", Params={
        "Bucket": bkt, "Key": "tampered", "ResponseContentDisposition": "\u0101"})
    sent = httpx.get(url)
    assert sent.status_code == 200 and _decoded(sent.headers["content-disposition"]) == "\u0101"


def test_part_numbers_and_offsets_sql_cannot_hold_are_refused(api: httpx.Client, boto: Any,
                                                              bkt: str) -> None:
    upload = api.post(f"/buckets/{bkt}/objects/big/multipart").json()["upload_id"]
    for number in (0, 10_001, 2**63, 2**70):
        done = api.post(f"/buckets/{bkt}/objects/big/multipart/{upload}/complete",
                        json={"parts": [{"part_number": number, "etag": "x"}]})
        storage_error(done, 400, "validation_error")
    parts = boto.list_parts(Bucket=bkt, Key="big", UploadId=upload,
                            PartNumberMarker=2**70)
    assert parts.get("Parts", []) == [] and parts["IsTruncated"] is False
    listed = api.get(f"/buckets/{bkt}/objects", params={"max_keys": str(2**70)})
    assert listed.status_code == 200  # clamped to the page size, as documented


# -- the framework, in process ---------------------------------------------------------------

def _scope(path: str, method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "path": "/api" + path, "root_path": "/api", "method": method,
            "headers": []}


def test_error_shapes() -> None:
    quota = error_response(errors.QuotaExceeded(10_737_418_240, 10_737_418_240),
                           _scope("/v1/storage/buckets/b/objects/k", "PUT"), "RID")
    assert quota.status_code == 507
    assert json.loads(bytes(quota.body)) == {
        "error": "insufficient_storage", "message": "Storage quota exceeded",
        "quota": 10_737_418_240, "used": 10_737_418_240, "code": "QuotaExceeded",
        "request_id": "RID"}
    too_large = error_response(errors.EntityTooLarge(), _scope("/v1/storage/x"), "RID")
    assert too_large.status_code == 413
    assert json.loads(bytes(too_large.body))["error"] == "payload_too_large"

    envelope = error_response(errors.NoSuchBucket(fields={"BucketName": "b"}),
                              _scope("/v1/admin/buckets/b"), "RID")
    assert envelope.status_code == 404
    assert json.loads(bytes(envelope.body)) == {
        "success": False, "request_id": "RID",
        "error": {"code": "NOT_FOUND", "message": "Bucket not found",
                  "details": {"s3_code": "NoSuchBucket", "BucketName": "b"}}}


async def test_api_app_answers_unknown_paths_and_methods_as_json() -> None:
    """The API app is dispatched to directly (no Starlette app above it): its router's 404
    and 405 still reach the JSON renderer, with a request id."""
    async def hello(_request: Request) -> Response:
        return Response("hi")

    app = ApiApp(SimpleNamespace(gateway=object(), rate_limits=None),
                 [Route("/v1/hello", hello, methods=["GET"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        missing = await client.get("/v1/hello%0A")
        wrong = await client.delete("/v1/hello")
        storage = await client.get("/v1/storage/x%0Ay")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert missing.headers["x-request-id"] == missing.json()["request_id"]
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert storage.status_code == 404 and storage.json()["error"] == "not_found"


async def test_unknown_exceptions_are_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    async def boom(_request: Request) -> Response:
        raise RuntimeError("secret internals")

    app = ApiApp(SimpleNamespace(gateway=object()),
                 [Route("/v1/boom", boom), Route("/v1/storage/boom", boom)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/v1/boom")
        storage = await client.get("/v1/storage/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "SERVER_ERROR" and "secret" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]
    assert storage.status_code == 500 and storage.json()["error"] == "server_error"
    assert any(body["request_id"] in r.getMessage() and r.exc_info for r in caplog.records)
