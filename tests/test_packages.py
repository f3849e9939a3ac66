"""Bot-package folder rules through every way an object can arrive: S3 PUT, a presigned
PUT, a browser form POST, the JSON API, multipart (refused at creation by name, at
completion by content) and server-side copy. A refusal is a clear 4xx and nothing is stored:
no object, no usage, no blob; the refusal is recorded. Also: the public ``.gbtheme`` and the
expiry of ``.gbdrive/temp/``."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests import _postgres as postgres
from tests._server import GatewayProcess, database_for
from tests._server import cli_json as cli
from tests.conftest import make_client

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + b" " * 200
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 300  # a program, not a script


class Env:
    def __init__(self, server: GatewayProcess) -> None:
        self.server = server
        made = cli(server.data_dir, "token", "create", "--user", "admin", "--name", "t",
                   "--permission=storage:read", "--permission=storage:write")
        self.token = str(made["token"])
        self.s3 = make_client(server)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url + "/api/v1/storage",
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Rows from the gateway's metadata database (SQLite or PostgreSQL)."""
        url = database_for(self.server.data_dir)
        if url:
            return postgres.query(url, statement)
        with sqlite3.connect(self.server.data_dir / "gateway.db") as db:
            return list(db.execute(statement))

    def rejections(self) -> list[tuple[str, str, str]]:
        return [(str(b), str(k), str(r)) for b, k, r in
                self.sql("SELECT bucket, key, reason FROM upload_rejections ORDER BY id")]

    def usage(self, bucket: str) -> tuple[int, int]:
        assert bucket.replace(".", "").isalnum()
        row = self.sql(f"SELECT used_bytes, used_objects FROM buckets WHERE name = '{bucket}'")
        return int(row[0][0]), int(row[0][1])

    def blobs(self) -> int:
        return sum(1 for p in (self.server.data_dir).rglob("*")
                   if p.is_file() and "/b/" in str(p))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = tmp_path_factory.mktemp("packages") / "data"
    server = GatewayProcess(data, env_extra={"GATEWAY_TEMP_EXPIRY": "3s",
                                             "GATEWAY_HOUSEKEEPING_SECONDS": "1"}).start()
    try:
        yield Env(server)
    finally:
        server.stop()


@pytest.fixture
def pkg(env: Env) -> str:
    name = f"p{uuid.uuid4().hex[:10]}.gbai"
    env.s3.create_bucket(Bucket=name)
    for folder in (".gbkb/", ".gbdialog/", ".gbtheme/", ".gbdrive/temp/"):
        env.s3.put_object(Bucket=name, Key=folder, Body=b"")
    return name


def s3_error(call: Any) -> tuple[int, str]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def keys(env: Env, bucket: str) -> list[str]:
    listed = env.s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_allowed_files_go_in(env: Env, pkg: str) -> None:
    s3 = env.s3
    s3.put_object(Bucket=pkg, Key=".gbkb/docs/manual.pdf", Body=PDF)
    s3.put_object(Bucket=pkg, Key=".gbkb/data/faq.csv", Body=b"q,a\nhi,hello\n")
    s3.put_object(Bucket=pkg, Key=".gbdialog/scripts/start.bas", Body=b'TALK "Hello"\n')
    s3.put_object(Bucket=pkg, Key="mybot.gbdialog/tools/t.bas", Body="PRINT \"é\"\n".encode())
    s3.put_object(Bucket=pkg, Key=".gbtheme/images/logo.png", Body=PNG)
    s3.put_object(Bucket=pkg, Key=".gbdrive/attachments/any.bin", Body=ELF)
    s3.put_object(Bucket=pkg, Key="README", Body=ELF)  # outside the folders: no rule
    # Buckets that are not packages take anything anywhere.
    plain = f"plain-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=plain)
    s3.put_object(Bucket=plain, Key=".gbdialog/x.exe", Body=ELF)


def test_a_public_theme_with_cache_headers(env: Env, pkg: str) -> None:
    env.s3.put_object(Bucket=pkg, Key=".gbtheme/css/site.css", Body=b"body{color:red}")
    anonymous = httpx.get(f"{env.server.url}/{pkg}/.gbtheme/css/site.css")
    assert anonymous.status_code == 200 and anonymous.content == b"body{color:red}"
    assert anonymous.headers["cache-control"] == "public, max-age=3600"
    env.s3.put_object(Bucket=pkg, Key=".gbkb/secret.txt", Body=b"private")
    assert httpx.get(f"{env.server.url}/{pkg}/.gbkb/secret.txt").status_code == 403


def assert_nothing_stored(env: Env, pkg: str, before: tuple[list[str], tuple[int, int], int],
                          key: str) -> None:
    assert (keys(env, pkg), env.usage(pkg), env.blobs()) == before
    assert s3_error(lambda: env.s3.head_object(Bucket=pkg, Key=key))[0] == 404


def test_a_disallowed_type_is_refused_on_every_path(env: Env, pkg: str) -> None:
    s3 = env.s3
    s3.put_object(Bucket=pkg, Key="elsewhere/prog.bas", Body=ELF)
    before = (keys(env, pkg), env.usage(pkg), env.blobs())
    refused_before = len(env.rejections())

    # 1. S3 PUT: by extension, and by content under an allowed extension.
    assert s3_error(lambda: s3.put_object(Bucket=pkg, Key=".gbdialog/run.exe", Body=b"x")) \
        == (415, "UnsupportedFileType")
    assert s3_error(lambda: s3.put_object(Bucket=pkg, Key=".gbdialog/run.bas", Body=ELF)) \
        == (415, "UnsupportedFileType")
    assert s3_error(lambda: s3.put_object(Bucket=pkg, Key=".gbkb/fake.pdf",
                                          Body=b"not a pdf at all")) \
        == (415, "UnsupportedFileType")
    # 2. A presigned PUT (a browser).
    url = s3.generate_presigned_url("put_object", Params={"Bucket": pkg,
                                                          "Key": ".gbdialog/run.bas"})
    answer = httpx.put(url, content=ELF)
    assert answer.status_code == 415 and b"<Code>UnsupportedFileType</Code>" in answer.content
    # 3. A form POST.
    post = s3.generate_presigned_post(pkg, ".gbdialog/run.bas")
    answer = httpx.post(post["url"], data=post["fields"], files={"file": ("run.bas", ELF)})
    assert answer.status_code == 415 and b"UnsupportedFileType" in answer.content
    # 4. The JSON API.
    with env.api() as api:
        answer = api.put(f"/buckets/{pkg}/objects/.gbdialog/run.bas", content=ELF)
        assert answer.status_code == 415, answer.text
        assert answer.json()["error"] == "unsupported_media_type"
        assert answer.json()["code"] == "UnsupportedFileType"
        answer = api.put(f"/buckets/{pkg}/objects/.gbdialog/run.exe", content=b"x")
        assert answer.status_code == 415
    # 5. Multipart: the name is refused at creation, the content at completion.
    assert s3_error(lambda: s3.create_multipart_upload(Bucket=pkg, Key=".gbdialog/r.exe")) \
        == (415, "UnsupportedFileType")
    upload = s3.create_multipart_upload(Bucket=pkg, Key=".gbdialog/big.bas")
    part = s3.upload_part(Bucket=pkg, Key=".gbdialog/big.bas", UploadId=upload["UploadId"],
                          PartNumber=1, Body=ELF)
    assert s3_error(lambda: s3.complete_multipart_upload(
        Bucket=pkg, Key=".gbdialog/big.bas", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})) \
        == (415, "UnsupportedFileType")
    assert s3.list_multipart_uploads(Bucket=pkg).get("Uploads", []) == []
    # 6. A server-side copy of a program into the scripts.
    assert s3_error(lambda: s3.copy_object(
        Bucket=pkg, Key=".gbdialog/copied.bas",
        CopySource={"Bucket": pkg, "Key": "elsewhere/prog.bas"})) == (415, "UnsupportedFileType")

    for key in (".gbdialog/run.exe", ".gbdialog/run.bas", ".gbkb/fake.pdf",
                ".gbdialog/big.bas", ".gbdialog/copied.bas"):
        assert_nothing_stored(env, pkg, before, key)
    recorded = env.rejections()[refused_before:]
    assert len(recorded) >= 10
    assert {(b, r) for b, _k, r in recorded} == {(pkg, "type")}


def test_folder_size_limits(env: Env, pkg: str) -> None:
    before = (keys(env, pkg), env.usage(pkg), env.blobs())
    too_big = b"' comment\n" * (110 * 1024)  # 1.1 MB of text: over .gbdialog's 1 MiB
    status, code = s3_error(lambda: env.s3.put_object(
        Bucket=pkg, Key=".gbdialog/huge.bas", Body=too_big))
    assert (status, code) == (400, "EntityTooLarge")
    # Unknown size (a form): refused once the size is known, still nothing stored.
    post = env.s3.generate_presigned_post(pkg, ".gbdialog/huge.bas")
    answer = httpx.post(post["url"], data=post["fields"],
                        files={"file": ("huge.bas", too_big)})
    assert answer.status_code == 400 and b"EntityTooLarge" in answer.content
    assert_nothing_stored(env, pkg, before, ".gbdialog/huge.bas")
    assert ("size" in {r for _b, _k, r in env.rejections()})


def test_temp_files_expire(env: Env, pkg: str) -> None:
    env.s3.put_object(Bucket=pkg, Key=".gbdrive/temp/scratch.txt", Body=b"tmp")
    env.s3.put_object(Bucket=pkg, Key=".gbdrive/attachments/keep.txt", Body=b"keep")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ".gbdrive/temp/scratch.txt" not in keys(env, pkg):
            break
        time.sleep(0.5)
    remaining = keys(env, pkg)
    assert ".gbdrive/temp/scratch.txt" not in remaining
    assert ".gbdrive/attachments/keep.txt" in remaining
    assert ".gbdrive/temp/" in remaining  # the folder itself stays


def test_rules_can_be_replaced_from_a_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{"folders": {".gbdialog": {"extensions": {".bas": "text", '
                     '".py": "text"}, "max_size": "100"}}}')
    server = GatewayProcess(tmp_path / "data",
                            env_extra={"GATEWAY_PACKAGE_RULES": str(rules)}).start()
    try:
        s3 = make_client(server)
        s3.create_bucket(Bucket="custom.gbai")
        s3.put_object(Bucket="custom.gbai", Key=".gbdialog/x.py", Body=b"print(1)\n")
        assert s3_error(lambda: s3.put_object(Bucket="custom.gbai", Key=".gbdialog/x.txt",
                                              Body=b"x")) == (415, "UnsupportedFileType")
        assert s3_error(lambda: s3.put_object(Bucket="custom.gbai", Key=".gbdialog/y.bas",
                                              Body=b"x" * 101))[1] == "EntityTooLarge"
    finally:
        server.stop()
