"""Presigned UploadPart URLs from the Storage API (``POST …/{key}/presign`` with
``upload_id`` and ``part_number``), against a real gateway process: parts sent straight to
the S3 endpoint with no credentials but the URL's, completed through the JSON API, read back
byte for byte; and every refusal — an unknown or someone else's upload, another tenant, a
read-only token, a part number out of range, a user without an S3 key."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from tests._server import ROOT_ACCESS_KEY, ROOT_SECRET_KEY, GatewayProcess

API = "/api/v1/storage"
MiB = 1024 * 1024


@dataclass
class Env:
    server: GatewayProcess
    bob: str  # storage:read + storage:write, has an S3 key
    bob_read: str  # the same user, storage:read only
    eve: str  # another tenant with an S3 key of her own
    carol: str  # storage:read + storage:write, no S3 key
    bob_access_key: str

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url + API, timeout=60,
                            headers={"Authorization": f"Bearer {token}"})


def _made(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The users, S3 keys and tokens are made through the admin API of the running gateway
    (a root session): nine ``gateway`` CLI runs cost seconds each, and the CLI commands
    are tested where they are the subject (tests/test_accounts_cli.py, tests/test_tokens.py)."""
    server = GatewayProcess(tmp_path_factory.mktemp("presign-parts") / "data").start()
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api:
            login = api.post("/auth/login", json={"access_key": ROOT_ACCESS_KEY,
                                                  "secret_key": ROOT_SECRET_KEY})
            assert login.status_code == 200, login.text
            api.headers["Authorization"] = f"Bearer {login.json()['data']['token']}"
            for user in ("bob", "eve", "carol"):
                _made(api.post("/admin/users", json={"name": user}))
            keys = _made(api.post("/admin/users/bob/keys", json={}))
            _made(api.post("/admin/users/eve/keys", json={}))

            def token(user: str, *permissions: str) -> str:
                return str(_made(api.post("/tokens", json={
                    "name": uuid.uuid4().hex[:8], "user": user,
                    "permissions": list(permissions)}))["token"])

            rw = ("storage:read", "storage:write")
            made = Env(server, bob=token("bob", *rw), bob_read=token("bob", "storage:read"),
                       eve=token("eve", *rw), carol=token("carol", *rw),
                       bob_access_key=str(keys["access_key"]))
        yield made
    finally:
        server.stop()


@pytest.fixture
def bob(env: Env) -> Iterator[httpx.Client]:
    with env.client(env.bob) as client:
        yield client


@pytest.fixture
def bucket(bob: httpx.Client) -> str:
    name = f"parts-{uuid.uuid4().hex[:12]}"
    assert bob.post("/buckets", json={"name": name}).status_code == 201
    return name


def storage_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error and body["message"] and body["request_id"], body
    return body


def initiate(client: httpx.Client, bucket: str, key: str) -> str:
    started = client.post(f"/buckets/{bucket}/objects/{key}/multipart",
                          json={"content_type": "application/zip"})
    assert started.status_code == 200, started.text
    return str(started.json()["upload_id"])


def test_parts_by_presigned_url_round_trip(env: Env, bob: httpx.Client, bucket: str) -> None:
    key = "big files/archive ü.zip"
    upload_id = initiate(bob, bucket, key)
    bodies = {1: os.urandom(5 * MiB), 2: os.urandom(MiB // 3)}
    etags = {}
    for number, content in bodies.items():
        # The reference's "operation" and the answer's "method" are both accepted.
        field = "operation" if number == 1 else "method"
        made = bob.post(f"/buckets/{bucket}/objects/{key}/presign",
                        json={field: "put", "upload_id": upload_id, "part_number": number,
                              "expires_in": 600})
        assert made.status_code == 200, made.text
        signed = made.json()
        assert signed["method"] == "PUT" and signed["headers"] == {}
        url = urlsplit(signed["url"])
        assert f"{url.scheme}://{url.netloc}" == env.server.url
        assert url.path == f"/{bucket}/{quote(key)}"
        query = parse_qs(url.query)
        assert query["partNumber"] == [str(number)] and query["uploadId"] == [upload_id]
        assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-Signature"]
        assert query["X-Amz-Credential"][0].startswith(env.bob_access_key + "/")

        if number == 1:
            # partNumber and uploadId are signed: the URL cannot be moved to another part.
            moved = signed["url"].replace("partNumber=1&", "partNumber=3&")
            assert moved != signed["url"]
            assert httpx.put(moved, content=b"elsewhere").status_code == 403

        sent = httpx.put(signed["url"], content=content, timeout=60)  # no other credentials
        assert sent.status_code == 200, sent.text
        etags[number] = sent.headers["etag"]

    listed = bob.post(f"/buckets/{bucket}/objects/{key}/multipart/{upload_id}/complete",
                      json={"parts": [{"part_number": n, "etag": e}
                                      for n, e in sorted(etags.items())]})
    assert listed.status_code == 200, listed.text
    assert listed.json()["etag"].endswith("-2")
    got = bob.get(f"/buckets/{bucket}/objects/{key}")
    assert got.status_code == 200
    assert got.content == bodies[1] + bodies[2]
    assert got.headers["content-type"] == "application/zip"


def test_presigned_part_refusals(env: Env, bob: httpx.Client, bucket: str) -> None:
    key = "k.bin"
    upload_id = initiate(bob, bucket, key)
    presign = f"/buckets/{bucket}/objects/{key}/presign"

    def part(**fields: Any) -> dict[str, Any]:
        return {"operation": "PUT", "upload_id": upload_id, "part_number": 1, **fields}

    # No such upload: an unknown id, or a real one under another key.
    missing = storage_error(bob.post(presign, json=part(upload_id="A" * 64)), 404,
                            "not_found")
    assert missing["message"] == "Multipart upload not found"
    storage_error(bob.post(presign, json=part(upload_id="short")), 404, "not_found")
    other_key = initiate(bob, bucket, "other.bin")
    storage_error(bob.post(presign, json=part(upload_id=other_key)), 404, "not_found")

    # Out of range, mistyped or half a part address: 400 before anything is looked up.
    for bad in (part(part_number=0), part(part_number=10001), part(part_number="1"),
                part(part_number=True), part(part_number=None),
                {"operation": "PUT", "part_number": 1}, part(upload_id=7),
                part(operation="GET"), part(operation="DELETE"),
                part(content_type="text/plain"), part(method="GET")):
        storage_error(bob.post(presign, json=bad), 400, "validation_error")
    assert bob.post(presign, json=part(part_number=10000)).status_code == 200

    # Another tenant, even with an S3 key of her own; and a read-only token of the owner.
    with env.client(env.eve) as eve:
        storage_error(eve.post(presign, json=part()), 403, "forbidden")
    with env.client(env.bob_read) as reader:
        storage_error(reader.post(presign, json=part()), 403, "forbidden")

    # An aborted upload takes no more parts.
    assert bob.delete(f"/buckets/{bucket}/objects/{key}/multipart/{upload_id}") \
        .status_code == 200
    storage_error(bob.post(presign, json=part()), 404, "not_found")


def test_presigned_part_needs_an_s3_key(env: Env) -> None:
    """The console falls back to the part endpoint on exactly this answer."""
    with env.client(env.carol) as carol:
        bucket = f"carol-{uuid.uuid4().hex[:12]}"
        assert carol.post("/buckets", json={"name": bucket}).status_code == 201
        upload_id = initiate(carol, bucket, "k")
        no_key = storage_error(carol.post(f"/buckets/{bucket}/objects/k/presign",
                                          json={"operation": "PUT", "upload_id": upload_id,
                                                "part_number": 1}), 409, "conflict")
        assert "S3 access key" in no_key["message"]
        sent = carol.put(f"/buckets/{bucket}/objects/k/multipart/{upload_id}/1",
                         content=b"by the part endpoint")
        assert sent.status_code == 200, sent.text
        done = carol.post(f"/buckets/{bucket}/objects/k/multipart/{upload_id}/complete")
        assert done.status_code == 200, done.text
        assert carol.get(f"/buckets/{bucket}/objects/k").content == b"by the part endpoint"
