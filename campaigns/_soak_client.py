"""One soak client: a thread sending a weighted mix of S3, presigned and JSON API
requests, checking every answer against what it knows was acknowledged."""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from botocore.exceptions import ClientError

from campaigns._soak_model import (
    API,
    BUCKET,
    HEADER,
    SHARED_KEYS,
    TIMEOUT,
    Held,
    MiB,
    Soak,
    Stats,
    Version,
    api_path,
    body_for,
    identify,
    md5,
    own_keys,
    parse_head,
)


class Client:
    """One of the concurrent clients: its own connections, keys and figures."""

    def __init__(self, soak: Soak, index: int) -> None:
        self.soak = soak
        self.index = index
        self.rng = random.Random(soak.seed * 1000 + index)
        self.seq = itertools.count(1)
        self.stats = Stats()
        self.own = {key: Held() for key in own_keys(index)}
        self.unsure: set[str] = set()
        self.newest: str | None = None  # the latest key of put_new
        self.http = httpx.Client(timeout=TIMEOUT, verify=soak.tls)
        self.api = httpx.Client(base_url=soak.server.url + API, timeout=TIMEOUT, verify=soak.tls,
                                headers={"Authorization": f"Bearer {soak.token}"})
        self.ops: list[tuple[Callable[[], None], float]] = [
            (lambda: self.put_own("put_small", self.rng.randrange(8 * 1024)), 12),
            (lambda: self.put_own("put_medium", self.rng.randrange(64 * 1024, MiB)), 4),
            (lambda: self.put_own("presigned_put", self.rng.randrange(64 * 1024), "url"), 3),
            (lambda: self.put_own("api_upload", self.rng.randrange(64 * 1024), "api"), 3),
            (self.put_shared, 8),
            (lambda: self.get_own("get"), 12),
            (lambda: self.get_own("get_range", ranged=True), 5),
            (lambda: self.get_own("presigned_get", via="url"), 3),
            (lambda: self.get_own("api_download", via="api"), 3),
            (self.get_shared, 8),
            (self.get_shared_range, 3),
            (self.head_own, 5),
            (self.head_shared, 2),
            (self.list_own, 3),
            (self.list_shared, 2),
            (self.api_list, 2),
            (self.copy_own, 2),
            (self.copy_shared, 2),
            (lambda: self.delete_own("delete"), 3),
            (lambda: self.delete_own("api_delete", via="api"), 1.5),
            (self.delete_batch, 1),
            (self.multipart, 0.4),
            (self.multipart_abort, 0.2),
            (self.put_new, 2),
        ]

    def close(self) -> None:
        self.http.close()
        self.api.close()

    # -- the loop ----------------------------------------------------------------------------

    def run(self, deadline: float) -> None:
        actions = [action for action, _ in self.ops]
        weights = list(itertools.accumulate(weight for _, weight in self.ops))
        while time.monotonic() < deadline:
            action = self.rng.choices(actions, cum_weights=weights)[0]
            try:
                action()
            except Exception as exc:  # a bug in the checks themselves: report, go on
                self.soak.fail(f"client {self.index}: {type(exc).__name__}: {exc}")
                self.stats.exceptions[type(exc).__name__] += 1

    # -- requests ----------------------------------------------------------------------------

    def record(self, op: str, key: str, status: int, expect: Iterable[int], started: float,
               detail: str = "") -> None:
        self.stats.latency.setdefault(op, []).append(time.monotonic() - started)
        self.stats.statuses[status] += 1
        if status not in expect:
            self.stats.unexpected += 1
            self.soak.fail(f"{op} {key}: HTTP {status} {detail}".rstrip())

    def exception(self, op: str, key: str, exc: Exception, started: float) -> None:
        self.stats.exceptions[type(exc).__name__] += 1
        self.soak.fail(f"{op} {key}: {type(exc).__name__} after "
                       f"{time.monotonic() - started:.1f} s: {exc}")

    def s3(self, op: str, method: str, expect: tuple[int, ...], **kwargs: Any
           ) -> tuple[int, dict[str, Any], bytes]:
        """A boto3 call: its status (0 for an exception), answer and body."""
        key = str(kwargs.get("Key", kwargs.get("Prefix", "")))
        started = time.monotonic()
        body = b""
        try:
            try:
                answer: dict[str, Any] = getattr(self.soak.s3, method)(**kwargs)
                status = int(answer["ResponseMetadata"]["HTTPStatusCode"])
                if "Body" in answer:
                    body = answer["Body"].read()
                detail = ""
            except ClientError as exc:
                answer = {}
                status = int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
                detail = str(exc.response.get("Error", {}).get("Code", ""))
        except Exception as exc:
            self.exception(op, key, exc, started)
            return 0, {}, b""
        sent = kwargs.get("Body")
        self.stats.up += len(sent) if isinstance(sent, bytes) else 0
        self.stats.down += len(body)
        self.record(op, key, status, expect, started, detail)
        return status, answer, body

    def http_call(self, op: str, key: str, client: httpx.Client, method: str, url: str,
                  expect: tuple[int, ...], **kwargs: Any) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.exception(op, key, exc, started)
            return None
        content = kwargs.get("content")
        self.stats.up += len(content) if isinstance(content, bytes) else 0
        self.stats.down += len(response.content)
        self.record(op, key, response.status_code, expect, started, response.text[:200]
                    if response.status_code >= 400 else "")
        return response

    def mismatch(self, message: str) -> None:
        self.stats.mismatches += 1
        self.soak.fail(f"mismatch: {message}")

    # -- writing -----------------------------------------------------------------------------

    def write(self, op: str, key: str, data: bytes, via: str) -> tuple[int, str | None]:
        """PUT ``data`` at ``key`` by boto3, a presigned URL or the JSON API: the status and
        the ETag answered."""
        if via == "s3":
            status, answer, _ = self.s3(op, "put_object", (200,), Bucket=BUCKET, Key=key,
                                        Body=data)
            return status, str(answer["ETag"]).strip('"') if status == 200 else None
        if via == "url":
            url = self.soak.s3.generate_presigned_url(
                "put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600)
            response = self.http_call(op, key, self.http, "PUT", url, (200,), content=data)
        else:
            response = self.http_call(op, key, self.api, "PUT", api_path(key), (200,),
                                      content=data)
        if response is None or response.status_code != 200:
            return (response.status_code if response is not None else 0), None
        etag = response.headers.get("etag", "") if via == "url" else response.json()["etag"]
        return 200, str(etag).strip('"')

    def new_version(self, size: int) -> tuple[Version, bytes]:
        version = (self.index, next(self.seq), size)
        return version, body_for(*version)

    def acknowledged(self, op: str, key: str, version: Version, etag: str,
                     got: str | None) -> None:
        if got != etag:
            self.mismatch(f"{op} {key}: ETag {got} for a body whose MD5 is {etag}")
        self.stats.created[(key, etag)] += 1

    def put_own(self, op: str, size: int, via: str = "s3") -> None:
        self.put_key(op, self.rng.choice(list(self.own)), size, via)

    def put_key(self, op: str, key: str, size: int, via: str = "s3") -> None:
        version, data = self.new_version(size)
        etag = md5(data)
        self.stats.tried[(key, etag)] += 1
        status, got = self.write(op, key, data, via)
        if status == 200:
            self.acknowledged(op, key, version, etag, got)
            self.own[key] = Held(etag, version)
            self.unsure.discard(key)
        else:
            self.lost(key)

    def lost(self, key: str) -> None:
        self.unsure.add(key)
        self.soak.taint(key)

    def put_shared(self) -> None:
        key = self.rng.choice(SHARED_KEYS)
        size = self.rng.randrange(4096) if self.rng.random() < 0.8 else \
            self.rng.randrange(256 * 1024)
        version, data = self.new_version(size)
        etag = md5(data)
        self.stats.tried[(key, etag)] += 1
        self.soak.shared.begin(key, version, etag)
        status, got = self.write("put_shared", key, data,
                                 self.rng.choice(("s3", "s3", "url", "api")))
        if status == 200:
            self.soak.shared.ack(key, version)
            self.acknowledged("put_shared", key, version, etag, got)

    # -- reading -----------------------------------------------------------------------------

    def read(self, op: str, key: str, via: str, expect: tuple[int, ...],
             byte_range: tuple[int, int] | None = None) -> tuple[int, bytes, str]:
        """GET ``key`` (a range of it): status, body and the ETag header, unquoted."""
        header = f"bytes={byte_range[0]}-{byte_range[1]}" if byte_range else None
        if via == "s3":
            extra = {"Range": header} if header else {}
            status, answer, body = self.s3(op, "get_object", expect, Bucket=BUCKET, Key=key,
                                           **extra)
            return status, body, str(answer.get("ETag", "")).strip('"')
        if via == "url":
            url = self.soak.s3.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600)
            response = self.http_call(op, key, self.http, "GET", url, expect)
        else:
            response = self.http_call(op, key, self.api, "GET", api_path(key), expect,
                                      headers={"Range": header} if header else {})
        if response is None:
            return 0, b"", ""
        return response.status_code, response.content, \
            response.headers.get("etag", "").strip('"')

    def get_own(self, op: str, via: str = "s3", ranged: bool = False) -> None:
        self.check_own(op, self.rng.choice(list(self.own)), via, ranged)

    def check_own(self, op: str, key: str, via: str = "s3", ranged: bool = False) -> None:
        """Read one of the client's own keys: exactly what was last acknowledged."""
        held = self.own[key]
        byte_range = None
        if ranged and held.version is not None:
            total = HEADER + held.version[2]
            start = self.rng.randrange(total)
            byte_range = (start, min(total - 1, start + self.rng.randrange(1, 64 * 1024)))
        if key in self.unsure:
            expect: tuple[int, ...] = (200, 206, 404)
        elif held.etag is None:
            expect = (404,)
        else:
            expect = (206,) if byte_range else (200,)
        status, body, etag = self.read(op, key, via, expect, byte_range)
        if status not in (200, 206) or key in self.unsure:
            return
        assert held.version is not None
        whole = body_for(*held.version)
        wanted = whole[byte_range[0]:byte_range[1] + 1] if byte_range else whole
        if body != wanted:
            found = identify(body) if byte_range is None else None
            self.mismatch(f"{op} {key}: {len(body)} bytes, not the {len(wanted)} of "
                          f"{held.version} last acknowledged (body is {found})")
        elif etag != held.etag:
            self.mismatch(f"{op} {key}: ETag {etag}, acknowledged {held.etag}")

    def check_shared(self, op: str, key: str, version: Version | None, floor: float) -> None:
        if version is None:
            self.mismatch(f"{op} {key}: a torn, mixed or unknown body")
            return
        problem = self.soak.shared.stale(key, version, floor)
        if problem:
            self.mismatch(f"{op} {problem}")

    def get_shared(self) -> None:
        key = self.rng.choice(SHARED_KEYS)
        floor = self.soak.shared.floor_of(key)
        status, body, etag = self.read("get_shared", key,
                                       self.rng.choice(("s3", "s3", "url", "api")), (200,))
        if status == 200:
            if etag != md5(body):
                self.mismatch(f"get_shared {key}: ETag {etag} is not the body's MD5")
            self.check_shared("get_shared", key, identify(body), floor)

    def get_shared_range(self) -> None:
        key = self.rng.choice(SHARED_KEYS)
        floor = self.soak.shared.floor_of(key)
        status, body, etag = self.read("get_shared_range", key, "s3", (200, 206),
                                       (0, HEADER + 99))
        if status not in (200, 206):
            return
        version = parse_head(body)
        if version is None or body != body_for(*version)[:HEADER + 100]:
            self.mismatch(f"get_shared_range {key}: not the start of a whole body")
            return
        if self.soak.shared.by_etag.get(etag) != version:
            self.mismatch(f"get_shared_range {key}: ETag {etag} is not that of {version}")
        self.check_shared("get_shared_range", key, version, floor)

    def head_own(self) -> None:
        key = self.rng.choice(list(self.own))
        held = self.own[key]
        unsure = key in self.unsure
        expect = (200, 404) if unsure else (404,) if held.etag is None else (200,)
        status, answer, _ = self.s3("head", "head_object", expect, Bucket=BUCKET, Key=key)
        if status == 200 and not unsure and held.version is not None:
            etag, size = str(answer["ETag"]).strip('"'), answer["ContentLength"]
            if (etag, size) != (held.etag, HEADER + held.version[2]):
                self.mismatch(f"head {key}: {etag} {size} bytes, acknowledged {held.etag} "
                              f"{HEADER + held.version[2]} bytes")

    def head_shared(self) -> None:
        key = self.rng.choice(SHARED_KEYS)
        floor = self.soak.shared.floor_of(key)
        status, answer, _ = self.s3("head_shared", "head_object", (200,), Bucket=BUCKET,
                                    Key=key)
        if status == 200:
            version = self.soak.shared.by_etag.get(str(answer["ETag"]).strip('"'))
            if version is not None and answer["ContentLength"] != HEADER + version[2]:
                self.mismatch(f"head_shared {key}: {answer['ContentLength']} bytes for "
                              f"{version}")
            self.check_shared("head_shared", key, version, floor)

    # -- listing -----------------------------------------------------------------------------

    def expected_listing(self) -> dict[str, tuple[str, int]] | None:
        """Own keys and (ETag, size), or None when a failed write left one unknown."""
        if self.unsure:
            return None
        return {key: (held.etag, HEADER + held.version[2]) for key, held in self.own.items()
                if held.etag is not None and held.version is not None}

    def list_own(self) -> None:
        prefix = f"c{self.index:02d}/"
        grouped = self.rng.random() < 0.3
        extra = {"Delimiter": "/"} if grouped else {}
        status, answer, _ = self.s3("list", "list_objects_v2", (200,), Bucket=BUCKET,
                                    Prefix=prefix, **extra)
        expected = self.expected_listing()
        if status != 200 or expected is None:
            return
        if grouped:
            got = {p["Prefix"] for p in answer.get("CommonPrefixes", [])}
            want = {prefix + key[len(prefix):].split("/")[0] + "/" for key in expected}
            if got != want or answer.get("Contents"):
                self.mismatch(f"list {prefix} /: prefixes {sorted(got)}, not {sorted(want)}")
            return
        listed = {o["Key"]: (o["ETag"].strip('"'), o["Size"]) for o in answer.get("Contents", [])}
        if listed != expected:
            self.mismatch(f"list {prefix}: {listed}, acknowledged {expected}")

    def api_list(self) -> None:
        prefix = f"c{self.index:02d}/"
        response = self.http_call("api_list", prefix, self.api, "GET", f"/buckets/{BUCKET}/objects",
                                  (200,), params={"prefix": prefix})
        expected = self.expected_listing()
        if response is None or response.status_code != 200 or expected is None:
            return
        listed = {o["key"]: (o["etag"], o["size"]) for o in response.json()["objects"]}
        if listed != expected:
            self.mismatch(f"api_list {prefix}: {listed}, acknowledged {expected}")

    def list_shared(self) -> None:
        status, answer, _ = self.s3("list_shared", "list_objects_v2", (200,), Bucket=BUCKET,
                                    Prefix="shared/")
        if status != 200:
            return
        listed = {o["Key"]: o["ETag"].strip('"') for o in answer.get("Contents", [])}
        if sorted(listed) != SHARED_KEYS:
            self.mismatch(f"list_shared: keys {sorted(listed)}")
        for key, etag in listed.items():
            if etag not in self.soak.shared.by_etag:
                self.mismatch(f"list_shared {key}: ETag {etag} of no write")

    # -- copying and deleting ----------------------------------------------------------------

    def copy_own(self) -> None:
        held_keys = [k for k, h in self.own.items() if h.etag is not None and k not in self.unsure]
        if not held_keys:
            return
        source = self.rng.choice(held_keys)
        target = self.rng.choice([k for k in self.own if k != source])  # not onto itself
        held = self.own[source]
        assert held.etag is not None
        self.stats.tried[(target, held.etag)] += 1
        status, answer, _ = self.s3("copy", "copy_object", (200,), Bucket=BUCKET, Key=target,
                                    CopySource={"Bucket": BUCKET, "Key": source})
        if status != 200:
            self.lost(target)
            return
        etag = str(answer["CopyObjectResult"]["ETag"]).strip('"')
        if etag != held.etag:
            self.mismatch(f"copy {source} -> {target}: ETag {etag}, source has {held.etag}")
        self.stats.created[(target, etag)] += 1
        self.own[target] = Held(etag, held.version)
        self.unsure.discard(target)

    def copy_shared(self) -> None:
        source = self.rng.choice(SHARED_KEYS)
        target = self.rng.choice(list(self.own))
        floor = self.soak.shared.floor_of(source)
        status, answer, _ = self.s3("copy_shared", "copy_object", (200,), Bucket=BUCKET,
                                    Key=target, CopySource={"Bucket": BUCKET, "Key": source})
        if status != 200:
            self.lost(target)
            return
        etag = str(answer["CopyObjectResult"]["ETag"]).strip('"')
        version = self.soak.shared.by_etag.get(etag)
        self.check_shared("copy_shared", source, version, floor)
        self.stats.tried[(target, etag)] += 1
        self.stats.created[(target, etag)] += 1
        self.own[target] = Held(etag, version)
        if version is None:
            self.lost(target)
        else:
            self.unsure.discard(target)

    def forget(self, key: str) -> None:
        """``key`` was deleted, acknowledged."""
        if self.own[key].etag is not None and key not in self.unsure:
            self.stats.removed[key] += 1
        self.own[key] = Held()
        self.unsure.discard(key)

    def delete_own(self, op: str, via: str = "s3") -> None:
        self.delete_key(op, self.rng.choice(list(self.own)), via)

    def delete_key(self, op: str, key: str, via: str = "s3") -> bool:
        """Whether the delete was acknowledged."""
        if via == "s3":
            status = self.s3(op, "delete_object", (204,), Bucket=BUCKET, Key=key)[0]
            ok = status == 204
        else:
            response = self.http_call(op, key, self.api, "DELETE", api_path(key), (200,))
            ok = response is not None and response.status_code == 200
            if ok and response is not None and response.json() != {"deleted": True, "key": key}:
                self.mismatch(f"{op} {key}: answered {response.text}")
        if ok:
            self.forget(key)
        else:
            self.lost(key)
        return ok

    def put_new(self) -> None:
        """A key never used before takes the place of the previous one: keys churn, as
        they do in real use, so that what the gateway keeps per key would show."""
        key = f"c{self.index:02d}/new/{next(self.seq)}"
        self.own[key] = Held()
        self.put_key("put_new", key, self.rng.randrange(16 * 1024))
        old, self.newest = self.newest, key
        if old is not None and old in self.own and self.delete_key("delete_old", old):
            del self.own[old]

    def delete_batch(self) -> None:
        keys = self.rng.sample(list(self.own), self.rng.randrange(1, 5))
        absent = f"c{self.index:02d}/never/{next(self.seq)}"
        status, answer, _ = self.s3(
            "delete_batch", "delete_objects", (200,), Bucket=BUCKET,
            Delete={"Objects": [{"Key": k} for k in [*keys, absent]]})
        if status != 200:
            for key in keys:
                self.lost(key)
            return
        deleted = {d["Key"] for d in answer.get("Deleted", [])}
        if deleted != {*keys, absent} or answer.get("Errors"):
            self.mismatch(f"delete_batch: deleted {sorted(deleted)}, errors "
                          f"{answer.get('Errors')}, asked {sorted([*keys, absent])}")
        for key in keys:
            if key in deleted:
                self.forget(key)
            else:
                self.lost(key)

    # -- multipart ---------------------------------------------------------------------------

    def multipart(self) -> None:
        key = self.rng.choice(list(self.own))
        two = self.rng.random() < 0.5
        size = 5 * MiB + self.rng.randrange(64 * 1024) if two else self.rng.randrange(256 * 1024)
        version, data = self.new_version(size)
        parts = [data[:5 * MiB], data[5 * MiB:]] if two else [data]
        etag = md5(b"".join(hashlib.md5(p).digest() for p in parts)) + f"-{len(parts)}"
        self.stats.tried[(key, etag)] += 1
        status, answer, _ = self.s3("mpu_create", "create_multipart_upload", (200,),
                                    Bucket=BUCKET, Key=key)
        if status != 200:
            return
        upload = answer["UploadId"]
        done = []
        for number, part in enumerate(parts, 1):
            status, answer, _ = self.s3("mpu_part", "upload_part", (200,), Bucket=BUCKET,
                                        Key=key, UploadId=upload, PartNumber=number, Body=part)
            if status != 200:
                self.s3("mpu_abort", "abort_multipart_upload", (204,), Bucket=BUCKET, Key=key,
                        UploadId=upload)
                return
            done.append({"PartNumber": number, "ETag": answer["ETag"]})
        status, answer, _ = self.s3("mpu_complete", "complete_multipart_upload", (200,),
                                    Bucket=BUCKET, Key=key, UploadId=upload,
                                    MultipartUpload={"Parts": done})
        if status == 200:
            self.acknowledged("mpu_complete", key, version, etag,
                              str(answer["ETag"]).strip('"'))
            self.own[key] = Held(etag, version)
            self.unsure.discard(key)
        else:
            self.lost(key)

    def multipart_abort(self) -> None:
        key = self.rng.choice(list(self.own))
        status, answer, _ = self.s3("mpu_create", "create_multipart_upload", (200,),
                                    Bucket=BUCKET, Key=key)
        if status != 200:
            return
        upload = answer["UploadId"]
        self.s3("mpu_part", "upload_part", (200,), Bucket=BUCKET, Key=key, UploadId=upload,
                PartNumber=1, Body=self.new_version(self.rng.randrange(64 * 1024))[1])
        self.s3("mpu_abort", "abort_multipart_upload", (204,), Bucket=BUCKET, Key=key,
                UploadId=upload)
        self.s3("mpu_gone", "list_parts", (404,), Bucket=BUCKET, Key=key, UploadId=upload)


