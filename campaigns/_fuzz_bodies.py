"""Fuzz targets on the request bodies the gateway parses: the XML control documents of S3
(with a corpus of XML attacks, and an HTTP listener that counts any external entity the
gateway would fetch) and browser form uploads (POST policies, multipart form bodies)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from campaigns._fuzz_core import Fuzzer, shown
from campaigns._fuzz_inputs import (
    EDGE_DATES,
    PASSWD_MARKERS,
    deep_json_texts,
    dumps,
    header_text,
    json_scalars,
    json_values,
    junk_text,
    mutated,
    xml_attacks,
    xml_trees,
)
from campaigns._fuzz_s3 import S3Fixture
from campaigns._fuzz_wire import (
    ALGORITHM,
    REGION,
    RawResponse,
    canonical_query,
    derive_key,
)

XML_BUCKET = "fuzz-xml"
POST_BUCKET = "fuzz-post"

#: XML attacks every endpoint must refuse with a 4xx (the rest may parse to something
#: harmless, or be refused: either way never a 5xx, never slow, never echoing a file).
MUST_REFUSE_XML = frozenset({
    "billion laughs", "quadratic blowup", "external entity file", "external entity http",
    "external entity to a closed port", "parameter entity", "external DTD", "internal DTD",
    "entity in attribute", "beyond the body limit", "invalid UTF-8", "NUL byte", "two roots",
    "unclosed", "deep nesting unclosed", "not XML", "empty", "whitespace", "unknown encoding",
})


class Canary:
    """A listener that counts connections: where external entities point. The gateway must
    never connect to it."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/entity.dtd"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


# -- XML ---------------------------------------------------------------------------------------

@dataclass
class XmlEndpoint:
    name: str
    method: str
    path: str
    params: Callable[[], list[tuple[str, str]]]
    root: str
    leaf: str
    vocabulary: tuple[str, ...]
    valid: Callable[[], bytes]


@dataclass
class Upload:
    """The multipart upload CompleteMultipartUpload is fuzzed against (renewed when a
    fuzzed document happens to complete it)."""

    s3: Any
    upload_id: str = ""
    etag: str = ""

    def renew(self) -> None:
        self.upload_id = self.s3.create_multipart_upload(Bucket=XML_BUCKET,
                                                         Key="mpu")["UploadId"]
        self.etag = self.s3.upload_part(Bucket=XML_BUCKET, Key="mpu", PartNumber=1,
                                        UploadId=self.upload_id, Body=b"part")["ETag"]


def xml_endpoints(upload: Upload) -> list[XmlEndpoint]:
    def fixed(*params: tuple[str, str]) -> Callable[[], list[tuple[str, str]]]:
        return lambda: list(params)

    def const(text: str) -> Callable[[], bytes]:
        return lambda: text.encode()

    b = f"/{XML_BUCKET}"
    return [
        XmlEndpoint("DeleteObjects", "POST", b, fixed(("delete", "")), "Delete", "Key",
                    ("Object", "Key", "VersionId", "Quiet"),
                    const("<Delete><Object><Key>gone</Key></Object><Quiet>true</Quiet>"
                          "</Delete>")),
        XmlEndpoint("CompleteMultipartUpload", "POST", f"{b}/mpu",
                    lambda: [("uploadId", upload.upload_id)], "CompleteMultipartUpload", "ETag",
                    ("Part", "PartNumber", "ETag", "ChecksumCRC32"),
                    lambda: (f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
                             f"<ETag>{upload.etag}</ETag></Part></CompleteMultipartUpload>"
                             ).encode()),
        XmlEndpoint("PutBucketTagging", "PUT", b, fixed(("tagging", "")), "Tagging", "Key",
                    ("TagSet", "Tag", "Key", "Value"),
                    const("<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet>"
                          "</Tagging>")),
        XmlEndpoint("PutObjectTagging", "PUT", f"{b}/tagged", fixed(("tagging", "")),
                    "Tagging", "Value", ("TagSet", "Tag", "Key", "Value"),
                    const("<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet>"
                          "</Tagging>")),
        XmlEndpoint("PutBucketVersioning", "PUT", b, fixed(("versioning", "")),
                    "VersioningConfiguration", "Status", ("Status", "MfaDelete"),
                    const("<VersioningConfiguration><Status>Suspended</Status>"
                          "</VersioningConfiguration>")),
        XmlEndpoint("PutBucketLifecycle", "PUT", b, fixed(("lifecycle", "")),
                    "LifecycleConfiguration", "ID",
                    ("Rule", "ID", "Filter", "Prefix", "Status", "Expiration", "Days", "Date",
                     "And", "Tag", "Key", "Value", "ObjectSizeGreaterThan",
                     "NoncurrentVersionExpiration", "NoncurrentDays",
                     "AbortIncompleteMultipartUpload", "DaysAfterInitiation"),
                    const("<LifecycleConfiguration><Rule><ID>r</ID><Filter><Prefix>tmp/"
                          "</Prefix></Filter><Status>Enabled</Status><Expiration><Days>3"
                          "</Days></Expiration></Rule></LifecycleConfiguration>")),
        XmlEndpoint("PutBucketCors", "PUT", b, fixed(("cors", "")), "CORSConfiguration",
                    "AllowedOrigin",
                    ("CORSRule", "AllowedOrigin", "AllowedMethod", "AllowedHeader",
                     "ExposeHeader", "MaxAgeSeconds", "ID"),
                    const("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>"
                          "<AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>60</MaxAgeSeconds>"
                          "</CORSRule></CORSConfiguration>")),
        XmlEndpoint("PutBucketAcl", "PUT", b, fixed(("acl", "")), "AccessControlPolicy",
                    "URI", ("Owner", "ID", "AccessControlList", "Grant", "Grantee", "URI",
                            "Permission"),
                    const("<AccessControlPolicy><AccessControlList><Grant><Grantee><URI>"
                          "http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee>"
                          "<Permission>READ</Permission></Grant></AccessControlList>"
                          "</AccessControlPolicy>")),
        XmlEndpoint("PutObjectAcl", "PUT", f"{b}/tagged", fixed(("acl", "")),
                    "AccessControlPolicy", "Permission",
                    ("Owner", "AccessControlList", "Grant", "Grantee", "URI", "Permission"),
                    const("<AccessControlPolicy><AccessControlList><Grant><Permission>"
                          "FULL_CONTROL</Permission></Grant></AccessControlList>"
                          "</AccessControlPolicy>")),
        XmlEndpoint("PutBucketEncryption", "PUT", b, fixed(("encryption", "")),
                    "ServerSideEncryptionConfiguration", "SSEAlgorithm",
                    ("Rule", "ApplyServerSideEncryptionByDefault", "SSEAlgorithm",
                     "KMSMasterKeyID", "BucketKeyEnabled"),
                    const("<ServerSideEncryptionConfiguration><Rule>"
                          "<ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256"
                          "</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>"
                          "</ServerSideEncryptionConfiguration>")),
        XmlEndpoint("CreateBucket", "PUT", b, fixed(), "CreateBucketConfiguration",
                    "LocationConstraint", ("LocationConstraint", "Location", "Bucket"),
                    const("<CreateBucketConfiguration><LocationConstraint>us-east-1"
                          "</LocationConstraint></CreateBucketConfiguration>")),
    ]


def setup_xml(s3: Any) -> Upload:
    s3.create_bucket(Bucket=XML_BUCKET)
    s3.put_object(Bucket=XML_BUCKET, Key="tagged", Body=b"tagged")
    upload = Upload(s3)
    upload.renew()
    return upload


def _send_xml(fuzzer: Fuzzer, target: str, endpoint: XmlEndpoint, body: bytes,
              what: Any) -> RawResponse | None:
    params = endpoint.params()
    headers = fuzzer.sign(endpoint.method, endpoint.path, params=params)
    headers.append(("Content-MD5", base64.b64encode(hashlib.md5(body).digest()).decode()))
    query = canonical_query(params)
    path = endpoint.path + (f"?{query}" if query else "")
    return fuzzer.raw(target, endpoint.method, path, headers, body, what=what)


def _leaks(response: RawResponse) -> bool:
    return any(marker in response.body for marker in PASSWD_MARKERS)


def fuzz_xml(fuzzer: Fuzzer, upload: Upload, canary: Canary, examples: int, *,
             long: bool) -> None:
    """The attack corpus against every endpoint (long) or spread over them (short), then
    Hypothesis: mutations of each endpoint's valid document and random documents of its
    own elements."""
    target = "XML bodies"
    endpoints = xml_endpoints(upload)
    sent = 0

    def check(endpoint: XmlEndpoint, r: RawResponse | None, what: Any,
              must_refuse: bool) -> None:
        if r is None:
            return
        if _leaks(r):
            fuzzer.report.fail(f"{target}: the answer echoes /etc/passwd: {shown(what)}")
        if must_refuse and not 400 <= r.status < 500:
            fuzzer.report.fail(f"{target}: {endpoint.name} answered {r.status} to "
                               f"{shown(what)}")
        if endpoint.name == "CompleteMultipartUpload" and r.status == 200:
            upload.renew()

    attacks = xml_attacks("ROOT", "LEAF", canary_url=canary.url)
    for index, (name, _) in enumerate(attacks):
        chosen = endpoints if long or len(_attack(attacks, name)) < 100_000 else \
            [endpoints[index % len(endpoints)]]
        for endpoint in chosen:
            body = _attack(xml_attacks(endpoint.root, endpoint.leaf,
                                             canary_url=canary.url), name)
            what = (endpoint.name, name, body[:120])
            r = _send_xml(fuzzer, target, endpoint, body, what)
            sent += 1
            check(endpoint, r, what, name in MUST_REFUSE_XML)
    fuzzer.inputs(target + " (attack corpus)", sent)

    def documents(endpoint: XmlEndpoint) -> st.SearchStrategy[bytes]:
        return st.one_of(mutated(endpoint.valid()), xml_trees(endpoint.root,
                                                              endpoint.vocabulary))

    plans = st.sampled_from(endpoints).flatmap(
        lambda e: st.tuples(st.just(e), documents(e)))

    def one(plan: tuple[XmlEndpoint, bytes]) -> None:
        endpoint, body = plan
        what = (endpoint.name, body[:300])
        check(endpoint, _send_xml(fuzzer, target, endpoint, body, what), what, False)

    fuzzer.explore(target, plans, one, examples)
    fuzzer.report.figure("external entity fetches", canary.connections)
    fuzzer.report.check(canary.connections == 0,
                        f"{target}: the gateway connected {canary.connections} time(s) to "
                        "the URL of an external entity")


def _attack(attacks: list[tuple[str, bytes]], name: str) -> bytes:
    return next(body for attack, body in attacks if attack == name)


# -- POST policies and multipart forms ---------------------------------------------------------

@dataclass
class Form:
    fields: list[tuple[bytes, bytes]]
    file: tuple[bytes, bytes, bytes] | None  # (filename, content type, data)
    boundary: bytes = b"----fuzzboundary7MA4YWxkTrZu0gW"
    file_first: bool = False
    extra_file: bool = False

    def body(self) -> bytes:
        parts = []
        for name, value in self.fields:
            parts.append(b'Content-Disposition: form-data; name="' + name + b'"\r\n\r\n'
                         + value)
        if self.file is not None:
            filename, kind, data = self.file
            part = (b'Content-Disposition: form-data; name="file"; filename="' + filename
                    + b'"\r\nContent-Type: ' + kind + b"\r\n\r\n" + data)
            if self.file_first:
                parts.insert(0, part)
            else:
                parts.append(part)
            if self.extra_file:
                parts.append(part)
        out = b"".join(b"--" + self.boundary + b"\r\n" + p + b"\r\n" for p in parts)
        return out + b"--" + self.boundary + b"--\r\n"


def signed_fields(fuzzer: Fuzzer, key: str, policy: str, *,
                  when: datetime | None = None) -> list[tuple[bytes, bytes]]:
    when = when or datetime.now(UTC)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    credential = f"{fuzzer.server.access_key}/{amz_date[:8]}/{REGION}/s3/aws4_request"
    signing_key = derive_key(fuzzer.server.secret_key, amz_date[:8])
    signature = hmac.new(signing_key, policy.encode("utf-8", "surrogatepass"),
                         hashlib.sha256).hexdigest()
    return [(b"key", key.encode()), (b"x-amz-algorithm", ALGORITHM.encode()),
            (b"x-amz-credential", credential.encode()), (b"x-amz-date", amz_date.encode()),
            (b"policy", policy.encode("utf-8", "surrogatepass")),
            (b"x-amz-signature", signature.encode())]


def valid_conditions(key: str, credential: str, amz_date: str) -> list[Any]:
    return [{"bucket": POST_BUCKET}, ["starts-with", "$key", key], {"x-amz-algorithm": ALGORITHM},
            {"x-amz-credential": credential}, {"x-amz-date": amz_date}]


_EXTRA_FIELDS = ("success_action_status", "success_action_redirect", "Content-Type",
                 "x-amz-meta-note", "x-amz-meta-\u00e9", "x-amz-meta-a b", "tagging", "acl",
                 "x-amz-storage-class", "x-amz-server-side-encryption", "Cache-Control",
                 "Content-Disposition", "Expires", "x-amz-checksum-crc32",
                 "x-amz-server-side-encryption-customer-algorithm")


@st.composite
def condition_items(draw: st.DrawFn) -> Any:
    edge_numbers = st.sampled_from((-1, 0, 1, 2**63, 2**64, 10**400, 1.5, "1e3", "", " 7",
                                    "٣", True, None, "-0"))
    return draw(st.one_of(
        st.tuples(st.sampled_from(("eq", "starts-with", "EQ", "ends-with", "")),
                  st.one_of(st.sampled_from(("$key", "$bucket", "$", "key", "$Content-Type")),
                            junk_text(20, with_huge=False)),
                  json_scalars).map(list),
        st.tuples(st.just("content-length-range"), edge_numbers, edge_numbers).map(list),
        st.lists(json_values, max_size=4),
        st.dictionaries(junk_text(16, with_huge=False), json_values, max_size=2),
        json_values,
    ))


@st.composite
def post_plans(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(("valid", "policy doc", "policy doc", "policy text", "fields",
                                 "wire", "extras", "extras")))
    plan: dict[str, Any] = {"kind": kind, "data": draw(st.binary(max_size=2000))}
    if kind == "valid":
        plan["length_range"] = draw(st.one_of(st.none(), st.tuples(st.integers(0, 3000),
                                                                   st.integers(0, 3000))))
    elif kind == "policy doc":
        plan["expiration"] = draw(st.one_of(st.just("valid"), st.sampled_from(EDGE_DATES),
                                            json_scalars))
        plan["conditions"] = draw(st.one_of(st.just("valid"),
                                            st.lists(condition_items(), max_size=5),
                                            json_values))
        plan["whole"] = draw(st.one_of(st.none(), json_values, deep_json_texts()))
    elif kind == "policy text":
        plan["text"] = draw(st.one_of(
            junk_text(200), st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
            deep_json_texts().map(lambda t: base64.b64encode(t.encode()).decode()),
            st.just("eyJleHBpcmF0aW9uIjo=")))
    elif kind == "fields":
        plan["edit"] = draw(st.sampled_from(("drop", "duplicate", "huge field", "many fields",
                                             "non-UTF-8", "no file", "two files", "file first",
                                             "empty key", "long key", "filename")))
        plan["index"] = draw(st.integers(0, 5))
        plan["filename"] = draw(header_text(80)).replace(b'"', b"")
    elif kind == "wire":
        plan["edit"] = draw(st.sampled_from(("mutate", "boundary mismatch", "no final boundary",
                                             "content type", "truncated", "huge boundary")))
        plan["content_type"] = draw(st.one_of(header_text(120), st.sampled_from((
            b"multipart/form-data", b"multipart/form-data; boundary=",
            b'multipart/form-data; boundary=""', b"text/plain", b"multipart/mixed; boundary=x",
            b"multipart/form-data; boundary=" + b"b" * 5000,
            b"multipart/form-data; boundary=a; boundary=b"))))
        plan["mutation_seed"] = draw(st.integers(0, 2**32))
    else:
        names = draw(st.lists(st.sampled_from(_EXTRA_FIELDS), min_size=1, max_size=3,
                              unique=True))
        if draw(st.booleans()):  # what the answer echoes: a redirect, a status
            names = list(dict.fromkeys([_EXTRA_FIELDS[draw(st.integers(0, 1))], *names]))
        plan["extras"] = [(n, draw(st.one_of(
            header_text(80), st.sampled_from((
                b"201", b"200", b"204", b"303", b"", b"http://127.0.0.1:1/\xc3\xa9",
                b"https://example.invalid/ok?x=1", b"http://a/\x7f\x00",
                b"javascript:alert(1)", b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value>"
                b"</Tag></TagSet></Tagging>", b"<!DOCTYPE x [<!ENTITY e SYSTEM "
                b"\"file:///etc/passwd\">]><Tagging>&e;</Tagging>", b"public-read",
                b"GLACIER", b"AES256", b"aws:kms"))))) for n in names]
    return plan


def _policy_text(plan: dict[str, Any], conditions: list[Any], expiration: str) -> str:
    """The form's (Base64) policy: valid, or broken as the plan says."""
    kind = plan["kind"]
    if kind == "policy text":
        text: str = plan["text"]
        return text
    document: Any = {"expiration": expiration, "conditions": conditions}
    if kind == "policy doc":
        whole = plan["whole"]
        if isinstance(whole, str):  # a JSON text, deeply nested
            return base64.b64encode(whole.encode()).decode()
        if whole is not None:
            document = whole
        else:
            if plan["expiration"] != "valid":
                document["expiration"] = plan["expiration"]
            if plan["conditions"] != "valid":
                extra = plan["conditions"]
                document["conditions"] = conditions + (extra if isinstance(extra, list)
                                                       else [extra])
    return base64.b64encode(dumps(document).encode("utf-8", "surrogatepass")).decode()


def _edit_fields(form: Form, plan: dict[str, Any], key: str) -> None:
    edit, i = plan["edit"], plan["index"] % len(form.fields)
    if edit == "drop":
        del form.fields[i]
    elif edit == "duplicate":
        name, value = form.fields[i]
        form.fields.append((name.upper(), value))
    elif edit == "huge field":
        form.fields.insert(i, (b"x-ignore-huge", b"h" * 70_000))
    elif edit == "many fields":
        form.fields += [(b"x-ignore-%d" % n, b"v" * 200) for n in range(6000)]
    elif edit == "non-UTF-8":
        form.fields[i] = (form.fields[i][0], b"\xff\xfe\xc3(")
    elif edit == "no file":
        form.file = None
    elif edit == "two files":
        form.extra_file = True
    elif edit == "file first":
        form.file_first = True
    elif edit == "empty key":
        form.fields[0] = (b"key", b"")
    elif edit == "long key":
        form.fields[0] = (b"key", key.encode() + b"k" * 1100)
    elif edit == "filename" and form.file is not None:
        form.file = (plan["filename"], form.file[1], form.file[2])


def _edit_wire(form: Form, plan: dict[str, Any]) -> tuple[bytes, bytes]:
    """(body, Content-Type) broken below the form: boundaries, framing, media type."""
    rng = random.Random(plan["mutation_seed"])
    edit = plan["edit"]
    body = form.body()
    content_type = b"multipart/form-data; boundary=" + form.boundary
    if edit == "mutate":
        data = bytearray(body)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            data[pos:pos + rng.randint(0, 3)] = rng.choice(
                (b"", b"\r\n", b"--", b"\x00", b'"', b";", form.boundary[:5]))
        body = bytes(data)
    elif edit == "boundary mismatch":
        content_type = b"multipart/form-data; boundary=other"
    elif edit == "no final boundary":
        body = body[:body.rindex(b"--" + form.boundary)]
    elif edit == "content type":
        content_type = plan["content_type"]
    elif edit == "truncated":
        body = body[:rng.randrange(len(body))]
    elif edit == "huge boundary":
        form.boundary = b"B" * 3000
        body = form.body()
        content_type = b"multipart/form-data; boundary=" + form.boundary
    return body, content_type


def _must_succeed(plan: dict[str, Any]) -> bool:
    if plan["kind"] != "valid":
        return False
    bounds = plan["length_range"]
    return bounds is None or min(bounds) <= len(plan["data"]) <= max(bounds)


def fuzz_post_policy(fuzzer: Fuzzer, fixture: S3Fixture, examples: int) -> None:
    """Signed forms whose policy, fields or multipart framing are broken. Whatever the
    answer, it must say what happened: a success stored exactly the file under the key,
    a refusal stored nothing."""
    target = "POST policy forms"
    counter = iter(range(10**9))

    def one(plan: dict[str, Any]) -> None:
        key = f"post/{next(counter)}"
        now = datetime.now(UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        credential = f"{fuzzer.server.access_key}/{amz_date[:8]}/{REGION}/s3/aws4_request"
        conditions = valid_conditions(key, credential, amz_date)
        extras: list[tuple[str, bytes]] = plan.get("extras", [])
        conditions += [["starts-with", f"${name}", ""] for name, _ in extras]
        if plan["kind"] == "valid" and plan["length_range"] is not None:
            conditions.append(["content-length-range", *sorted(plan["length_range"])])
        policy = _policy_text(plan, conditions,
                              (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        form = Form(signed_fields(fuzzer, key, policy, when=now)
                    + [(n.encode(), v) for n, v in extras],
                    (b"photo.png", b"image/png", plan["data"]))
        if plan["kind"] == "fields":
            _edit_fields(form, plan, key)
        if plan["kind"] == "wire":
            body, content_type = _edit_wire(form, plan)
        else:
            body, content_type = form.body(), b"multipart/form-data; boundary=" + form.boundary
        what = {**plan, "data": f"{len(plan['data'])} bytes", "policy": policy[:120]}
        r = fuzzer.raw(target, "POST", f"/{POST_BUCKET}", [("Content-Type", content_type)],
                       body, what=what)
        if r is None:
            return
        if _leaks(r):
            fuzzer.report.fail(f"{target}: the answer echoes /etc/passwd: {shown(what)}")
        written = fixture.exists(key, POST_BUCKET)
        # Bodies broken below the form, and edited keys, may store under another key.
        key_intact = plan["kind"] != "wire" and plan.get("edit") not in ("long key",
                                                                           "empty key")
        if r.status < 400 and key_intact:
            if not written:
                fuzzer.report.fail(f"{target}: {r.status} but no object at {key}: "
                                   f"{shown(what)}")
            elif fixture.read(key, POST_BUCKET) != plan["data"]:
                fuzzer.report.fail(f"{target}: the object differs from the file sent: "
                                   f"{shown(what)}")
        elif r.status >= 400:
            if _must_succeed(plan):
                fuzzer.report.fail(f"{target}: {r.status} {r.error_code} for a valid form: "
                                   f"{shown(what)}")
            if written:
                fuzzer.report.fail(f"{target}: refused ({r.status}) yet an object was "
                                   f"written: {shown(what)}")

    fuzzer.explore(target, post_plans(), one, examples)


def setup_post(s3: Any) -> None:
    s3.create_bucket(Bucket=POST_BUCKET)
