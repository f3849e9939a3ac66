"""Fuzz targets on the S3 wire of a running gateway: SigV4/SigV2 authentication (header and
presigned), aws-chunked bodies, Range and conditional headers, copy sources, and malformed
HTTP. Each sends real requests as bytes and checks the answers against what S3 promises."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError
from hypothesis import strategies as st

from campaigns._fuzz_core import Fuzzer, shown
from campaigns._fuzz_inputs import (
    EDGE_DATES,
    EDGE_STRINGS,
    header_text,
    huge,
    junk_text,
    mutated,
    strip_surrogates,
)
from campaigns._fuzz_wire import UNSIGNED, Header, build_request, send
from tests import _awschunked as ac

BUCKET = "fuzz"
OBJECT = "data.bin"
PATH = f"/{BUCKET}/{OBJECT}"


@dataclass
class S3Fixture:
    """What the S3 targets work on: an object of known bytes, ETag and Last-Modified."""

    s3: Any  # boto3 client
    data: bytes
    etag: str  # without quotes
    last_modified: datetime
    part_copy_upload: str

    def exists(self, key: str, bucket: str = BUCKET) -> bool:
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise
        return True

    def read(self, key: str, bucket: str = BUCKET) -> bytes:
        body: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


def setup(fuzzer: Fuzzer, s3: Any, rng: random.Random) -> S3Fixture:
    s3.create_bucket(Bucket=BUCKET)
    data = rng.randbytes(rng.randrange(1500, 4000))
    s3.put_object(Bucket=BUCKET, Key=OBJECT, Body=data)
    head = s3.head_object(Bucket=BUCKET, Key=OBJECT)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="part-copy")["UploadId"]
    return S3Fixture(s3, data, head["ETag"].strip('"'), head["LastModified"].astimezone(UTC),
                     upload)


# -- SigV4 in the Authorization header -------------------------------------------------------

def _replace_field(auth: str, name: str, value: str) -> str:
    return re.sub(rf"{name}=[^,]*", lambda _: f"{name}={value}", auth, count=1)


@st.composite
def authorization_variants(draw: st.DrawFn, auth: str) -> tuple[str, list[bytes]]:
    """(what was done, the Authorization header values to send) from a valid one."""
    kind = draw(st.sampled_from(("keep", "mutate", "junk", "field", "drop-field", "dup-field",
                                 "separators", "scheme", "twice", "none")))
    if kind == "keep":
        return kind, [auth.encode()]
    if kind == "mutate":
        return kind, [draw(mutated(auth.encode())).replace(b"\r", b"").replace(b"\n", b"")]
    if kind == "junk":
        return kind, [draw(header_text(200))]
    if kind == "field":
        name = draw(st.sampled_from(("Credential", "SignedHeaders", "Signature")))
        current = re.search(rf"{name}=([^,]*)", auth)
        assert current is not None
        parts = current.group(1).split("/" if name == "Credential" else ";")
        choice = draw(st.sampled_from(("whole", "part", "extra")))
        if choice == "whole":
            value = draw(junk_text(80))
        elif choice == "part":
            parts[draw(st.integers(0, len(parts) - 1))] = draw(junk_text(40))
            value = ("/" if name == "Credential" else ";").join(parts)
        else:
            value = current.group(1) + draw(st.sampled_from(("/", ";", "/x", ";x", "=", " ")))
        return f"{kind}:{name}", [_replace_field(auth, name, value.replace(",", "%2C"))
                                  .encode("utf-8", "surrogatepass")]
    if kind == "drop-field":
        name = draw(st.sampled_from(("Credential", "SignedHeaders", "Signature")))
        return kind, [re.sub(rf",?\s*{name}=[^,]*", "", auth, count=1).encode()]
    if kind == "dup-field":
        name = draw(st.sampled_from(("Credential", "SignedHeaders", "Signature")))
        field = re.search(rf"{name}=[^,]*", auth)
        assert field is not None
        return kind, [(auth + ", " + field.group(0)).encode()]
    if kind == "separators":
        sep = draw(st.sampled_from((",", " , ", ";", ",,", "\t,", ", ,")))
        return kind, [auth.replace(", ", sep).encode()]
    if kind == "scheme":
        scheme = draw(st.sampled_from(("AWS", "AWS4-HMAC-SHA512", "aws4-hmac-sha256", "",
                                       "Bearer", "Basic", "AWS4-HMAC-SHA256,")))
        rest = auth.split(" ", 1)[1]
        return kind, [f"{scheme} {rest}".encode() if scheme else rest.encode()]
    if kind == "twice":
        return kind, [auth.encode(), draw(st.one_of(st.just(auth.encode()), header_text()))]
    return kind, []


@st.composite
def sigv4_requests(draw: st.DrawFn, fuzzer: Fuzzer) -> dict[str, Any]:
    method = draw(st.sampled_from(("GET", "HEAD", "PUT", "DELETE")))
    key = f"sigv4/{draw(st.integers(0, 3))}"
    body = draw(st.sampled_from((b"", b"x", b"fuzz body\n")))
    payload = UNSIGNED if draw(st.booleans()) else hashlib.sha256(body).hexdigest()
    signed = fuzzer.signer.sign(method, f"/{BUCKET}/{key}", payload=payload)
    headers = dict((str(n), str(v)) for n, v in signed.headers)
    auth = headers.pop("Authorization")
    kind, auth_values = draw(authorization_variants(auth))
    date_kind = draw(st.sampled_from(("keep", "keep", "edge", "junk", "drop", "date-header",
                                      "twice", "skewed")))
    out: list[Header] = [("Authorization", v) for v in auth_values]
    amz_date = headers.pop("x-amz-date")
    if date_kind == "keep":
        out.append(("x-amz-date", amz_date))
    elif date_kind == "edge":
        out.append(("x-amz-date", draw(st.sampled_from(EDGE_DATES))))
    elif date_kind == "junk":
        out.append(("x-amz-date", draw(header_text())))
    elif date_kind == "date-header":
        out.append(("Date", draw(st.one_of(st.sampled_from(EDGE_DATES), header_text()))))
    elif date_kind == "twice":
        out += [("x-amz-date", amz_date), ("x-amz-date", draw(st.sampled_from(EDGE_DATES)))]
    elif date_kind == "skewed":
        when = datetime.now(UTC) + timedelta(seconds=draw(st.sampled_from(
            (-10**9, -86400 * 8, -901, 901, 86400, 10**9 // 4))))
        out.append(("x-amz-date", when.strftime("%Y%m%dT%H%M%SZ")))
    sha_kind = draw(st.sampled_from(("keep", "keep", "drop", "junk", "mode", "nonhex")))
    sha = headers.pop("x-amz-content-sha256")
    if sha_kind == "keep":
        out.append(("x-amz-content-sha256", sha))
    elif sha_kind == "junk":
        out.append(("x-amz-content-sha256", draw(header_text())))
    elif sha_kind == "mode":
        out.append(("x-amz-content-sha256", draw(st.sampled_from((
            "UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            "unsigned-payload", hashlib.sha256(b"other").hexdigest().upper())))))
    elif sha_kind == "nonhex":
        out.append(("x-amz-content-sha256", "g" * 64))
    out += [(n, v) for n, v in headers.items()]
    return {"method": method, "path": f"/{BUCKET}/{key}", "headers": out, "body": body,
            "signature": signed.signature, "auth": kind, "date": date_kind, "sha": sha_kind}


def fuzz_sigv4_header(fuzzer: Fuzzer, examples: int) -> None:
    target = "SigV4 Authorization header"

    def one(req: dict[str, Any]) -> None:
        r = fuzzer.raw(target, req["method"], req["path"], req["headers"], req["body"],
                       what=req)
        if r is None or not 200 <= r.status < 300:
            return
        sent = b" ".join(v if isinstance(v, bytes) else v.encode()
                         for n, v in req["headers"] if str(n).lower() == "authorization")
        if req["signature"].encode() not in sent.lower():
            fuzzer.report.fail(f"{target}: {r.status} although the signature was changed: "
                               f"{shown(req)}")

    fuzzer.explore(target, sigv4_requests(fuzzer), one, examples)


# -- presigned query strings -----------------------------------------------------------------

def _query(params: list[tuple[str, str]], raw: bool) -> str:
    if raw:  # as typed by hand: nothing encoded but what would break the request line
        return "&".join(f"{n}={v}".replace(" ", "%20").replace("#", "%23") for n, v in params)
    return "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in params)


@st.composite
def presigned_requests(draw: st.DrawFn, fuzzer: Fuzzer) -> dict[str, Any]:
    expires = draw(st.sampled_from((1, 60, 604800)))
    params = fuzzer.signer.presign("GET", PATH, expires=expires)
    signature = params[-1][1]
    style = draw(st.sampled_from(("v4", "v4", "v2", "mixed")))
    if style in ("v2", "mixed"):
        v2 = [("AWSAccessKeyId", fuzzer.server.access_key),
              ("Signature", "c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXI="),
              ("Expires", str(int(datetime.now(UTC).timestamp()) + 300))]
        params = v2 if style == "v2" else params + v2
    edited: list[tuple[str, str]] = []
    for name, value in params:
        action = draw(st.sampled_from(("keep",) * 6 + ("drop", "junk", "edge", "dup", "huge",
                                                       "case")))
        if action == "keep":
            edited.append((name, value))
        elif action == "junk":
            edited.append((name, strip_surrogates(draw(junk_text(80)))))
        elif action == "edge":
            edited.append((name, draw(st.sampled_from(EDGE_STRINGS + EDGE_DATES))))
        elif action == "dup":
            edited += [(name, strip_surrogates(draw(junk_text(40)))), (name, value)]
        elif action == "huge":
            edited.append((name, draw(huge())))
        elif action == "case":
            edited.append((name.lower(), value))
    if draw(st.booleans()):
        edited.append((draw(st.sampled_from(("x-amz-content-sha256", "X-Amz-Security-Token",
                                             "versionId", "partNumber", "response-content-type",
                                             "uploadId"))),
                       strip_surrogates(draw(junk_text(40)))))
    raw = draw(st.booleans())
    return {"target": PATH + "?" + _query(edited, raw), "signature": signature,
            "style": style}


def fuzz_presigned(fuzzer: Fuzzer, fixture: S3Fixture, examples: int) -> None:
    target = "presigned query (SigV4, SigV2)"

    def one(req: dict[str, Any]) -> None:
        r = fuzzer.raw(target, "GET", req["target"], [], what=req)
        if r is None or not 200 <= r.status < 300:
            return
        if quote(req["signature"], safe="") not in req["target"] and \
                req["signature"] not in req["target"]:
            fuzzer.report.fail(f"{target}: {r.status} without the signature: {shown(req)}")
        elif r.body != fixture.data:
            fuzzer.report.fail(f"{target}: {r.status} with other bytes than the object's")

    fuzzer.explore(target, presigned_requests(fuzzer), one, examples)


# -- aws-chunked bodies ----------------------------------------------------------------------

MODES = ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
         "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
#: Corruptions that must be refused (the others may turn out harmless: then the object
#: must hold exactly the bytes sent).
MUST_REFUSE = frozenset({"decoded length", "chunk size", "chunk signature", "checksum value",
                         "trailer signature"})
_SIZE_LINE = re.compile(rb"(?m)^([0-9a-fA-F]+)(;chunk-signature=([0-9a-f]{64}))?\r$")


@st.composite
def chunked_plans(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from(MODES))
    data = draw(st.binary(max_size=3000))
    chunk_size = draw(st.integers(1, 1024))
    corruption = draw(st.sampled_from((
        "none", "decoded length", "chunk size", "chunk signature", "truncated", "trailer",
        "checksum value", "trailer signature", "mutated", "no decoded length")))
    return {"mode": mode, "data": data, "chunk_size": chunk_size, "corruption": corruption,
            "seed": draw(st.integers(0, 2**32))}


def corrupt(plan: dict[str, Any], wire: bytes, rng: random.Random,
             decoded: str) -> tuple[bytes, str, bool]:
    """(wire, x-amz-decoded-content-length, whether the corruption must be refused)."""
    kind = plan["corruption"]
    signed = plan["mode"] != MODES[2]
    if kind == "decoded length":
        n = len(plan["data"])
        return wire, str(rng.choice((n + 1, n - 1, n * 2 + 7, -1, 2**63, 10**30))) \
            if n else str(rng.choice((1, 5, -1))), True
    if kind == "no decoded length":
        return wire, "", False
    if kind == "chunk size":
        lines = list(_SIZE_LINE.finditer(wire))
        m = rng.choice(lines)
        old = int(m.group(1), 16)
        new = rng.choice(("zz", "-1", "ffffffffffffffff", "1" * 17, "", " 1", "0x10",
                          f"{old + 1:x}", f"{max(old - 1, 0):x}", f"{old + 4096:x}", "g"))
        try:
            same = len(new) <= 16 and int(new, 16) == old and new.strip() == new
        except ValueError:
            same = False
        return wire[:m.start(1)] + new.encode() + wire[m.end(1):], decoded, not same
    if kind == "chunk signature" and signed:
        lines = [m for m in _SIZE_LINE.finditer(wire) if m.group(3)]
        m = rng.choice(lines)
        pos = m.start(3) + rng.randrange(64)
        flipped = b"0" if wire[pos:pos + 1] != b"0" else b"1"
        return wire[:pos] + flipped + wire[pos + 1:], decoded, True
    if kind == "truncated":
        return wire[:rng.randrange(len(wire))], decoded, False
    trailer_at = wire.rfind(b"x-amz-checksum-crc32:")
    if kind == "checksum value" and trailer_at >= 0:
        end = wire.index(b"\r\n", trailer_at)
        wrong = ac.crc32_b64(plan["data"] + b"\x00").encode()
        return (wire[:trailer_at] + b"x-amz-checksum-crc32:" + wrong + wire[end:], decoded,
                True)
    if kind == "trailer signature" and trailer_at >= 0 and signed:
        at = wire.rfind(b"x-amz-trailer-signature:") + len(b"x-amz-trailer-signature:")
        end = wire.index(b"\r\n", at)
        signature = wire[at:end]
        flipped = (b"0" if signature[:1] != b"0" else b"1") + signature[1:]
        junk = rng.choice((flipped, b"\xe9" * 64, signature[:63], signature + b"0", b"zz",
                           b"", signature.upper().replace(b"A", b"G"), b"\x00" * 64))
        return wire[:at] + junk + wire[end:], decoded, True
    if kind == "trailer" and trailer_at >= 0:
        tail = wire[trailer_at:]
        edit = rng.choice((b"", b"x-amz-checksum-crc32\r\n\r\n", b":\r\n\r\n",
                           b"x-amz-checksum-crc32:" + b"A" * 20000 + b"\r\n\r\n",
                           b"\xff\xfe:\x00\r\n\r\n", tail.replace(b":", b"", 1),
                           tail.replace(b"\r\n", b"\n"), tail[:rng.randrange(len(tail) + 1)]))
        return wire[:trailer_at] + edit, decoded, False
    if kind == "mutated":
        data = bytearray(wire)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data)) if data else 0
            if data and rng.random() < 0.5:
                data[pos] = rng.randrange(256)
            else:
                data[pos:pos] = rng.choice((b"\r\n", b";", b"0", b"f", b"\x00", b"-"))
        return bytes(data), decoded, False
    return wire, decoded, False


def fuzz_aws_chunked(fuzzer: Fuzzer, fixture: S3Fixture, examples: int) -> None:
    target = "aws-chunked bodies"
    counter = iter(range(10**9))

    def one(plan: dict[str, Any]) -> None:
        rng = random.Random(plan["seed"])
        mode, data = plan["mode"], plan["data"]
        key = f"chunked/{next(counter)}"
        trailer = mode != MODES[0]
        signed_headers = [("content-encoding", "aws-chunked")]
        if trailer:
            signed_headers.append(("x-amz-trailer", "x-amz-checksum-crc32"))
        signed = fuzzer.signer.sign("PUT", f"/{BUCKET}/{key}", headers=signed_headers,
                                    payload=mode)
        signing = ac.Signing(signed.key, signed.amz_date, signed.scope, signed.signature)
        trailers = [("x-amz-checksum-crc32", ac.crc32_b64(data))] if trailer else None
        wire = ac.encode(data, chunk_size=plan["chunk_size"],
                         signing=signing if mode != MODES[2] else None, trailers=trailers)
        wire, decoded, must_refuse = corrupt(plan, wire, rng, str(len(data)))
        headers: list[Header] = list(signed.headers)
        if decoded:
            headers.append(("x-amz-decoded-content-length", decoded))
        what = {**plan, "data": f"{len(data)} bytes", "wire": wire[:300]}
        r = fuzzer.raw(target, "PUT", f"/{BUCKET}/{key}", headers, wire, what=what)
        if r is None:
            return
        if 200 <= r.status < 300:
            if must_refuse:
                fuzzer.report.fail(f"{target}: {r.status} for a body that must be refused: "
                                   f"{shown(what)}")
            stored = fixture.read(key)
            if stored != data:
                fuzzer.report.fail(f"{target}: stored {len(stored)} bytes that differ from "
                                   f"the {len(data)} sent: {shown(what)}")
            fixture.s3.delete_object(Bucket=BUCKET, Key=key)
        elif 400 <= r.status < 500:
            if plan["corruption"] == "none":
                fuzzer.report.fail(f"{target}: {r.status} {r.error_code} for a valid body: "
                                   f"{shown(what)}")
            if fixture.exists(key):
                fuzzer.report.fail(f"{target}: refused ({r.status}) but an object was "
                                   f"written: {shown(what)}")
        else:
            fuzzer.report.fail(f"{target}: unexpected {r.status}: {shown(what)}")

    fuzzer.explore(target, chunked_plans(), one, examples)


# -- Range and conditional headers ------------------------------------------------------------

@dataclass(frozen=True)
class Cond:
    """A header value, and (when it was built from known parts) what it means."""

    text: bytes
    meaning: Any = None  # True/False: matches; a datetime; None: junk (no exact oracle)
    structured: bool = True


def etag_conditions(etag: str) -> st.SearchStrategy[Cond]:
    other = '"0123456789abcdef0123456789abcdef"'
    return st.one_of(
        st.sampled_from((
            Cond(f'"{etag}"'.encode(), True), Cond(etag.encode(), True), Cond(b"*", True),
            Cond(other.encode(), False), Cond(f'{other}, "{etag}"'.encode(), True),
            Cond(f'{other},"{etag}"'.encode(), True), Cond(b'"", ""', False))),
        header_text(80).map(lambda b: Cond(b, None, False)),
    )


def date_conditions(last_modified: datetime) -> st.SearchStrategy[Cond]:
    now = datetime.now(UTC)
    known = [last_modified - timedelta(days=1), last_modified, last_modified - timedelta(seconds=1),
             now + timedelta(days=1), datetime(1970, 1, 1, tzinfo=UTC)]
    return st.one_of(
        st.sampled_from([Cond(format_datetime(d, usegmt=True).encode(), d) for d in known]),
        st.sampled_from(EDGE_DATES).map(lambda t: Cond(t.encode(), None, False)),
        header_text(40).map(lambda b: Cond(b, None, False)),
    )


@st.composite
def range_values(draw: st.DrawFn, size: int) -> tuple[bytes, tuple[int, int] | str | None]:
    """(Range header, the byte interval [a, b) it selects, "416", or None: whole object)."""
    edges = st.one_of(st.sampled_from((0, 1, size - 1, size, size + 1, 2**63, 10**30)),
                      st.integers(0, size + 10))
    kind = draw(st.sampled_from(("bounded", "open", "suffix", "junk", "multi", "reversed",
                                 "spaces", "unit")))
    if kind == "bounded":
        a, b = draw(edges), draw(edges)
        if b < a:
            return f"bytes={a}-{b}".encode(), None
        return f"bytes={a}-{b}".encode(), "416" if a >= size else (a, min(b + 1, size))
    if kind == "reversed":
        return f"bytes={size}-0".encode(), None
    if kind == "open":
        a = draw(edges)
        return f"bytes={a}-".encode(), "416" if a >= size else (a, size)
    if kind == "suffix":
        n = draw(edges)
        return f"bytes=-{n}".encode(), "416" if n == 0 else (max(0, size - n), size)
    if kind == "multi":
        return b"bytes=0-1,3-4", None
    if kind == "spaces":
        return f"bytes = {draw(st.integers(0, size - 1))} - ".encode(), "loose"
    if kind == "unit":
        return draw(st.sampled_from((b"items=0-1", b"bytes 0-1", b"Bytes=0-1", b"bytes=",
                                     b"bytes=-", b"bytes=--1", b"bytes=1-2-3"))), "loose"
    return draw(header_text(60)), "loose"


def expected_read(conds: dict[str, Cond], etag_lm: datetime) -> int | None:
    """RFC 7232 §6 order (what tests/test_s3_conditional.py pins): 412, 304 or None."""
    lm = etag_lm.replace(microsecond=0)
    im, ius = conds.get("If-Match"), conds.get("If-Unmodified-Since")
    inm, ims = conds.get("If-None-Match"), conds.get("If-Modified-Since")
    if im is not None:
        if not im.meaning:
            return 412
    elif ius is not None and lm > ius.meaning:
        return 412
    if inm is not None:
        if inm.meaning:
            return 304
    elif ims is not None and lm <= ims.meaning:
        return 304
    return None


@st.composite
def read_requests(draw: st.DrawFn, fixture: S3Fixture) -> dict[str, Any]:
    method = draw(st.sampled_from(("GET", "HEAD")))
    conds: dict[str, Cond] = {}
    for name in ("If-Match", "If-None-Match"):
        if draw(st.integers(0, 3)) == 0:
            conds[name] = draw(etag_conditions(fixture.etag))
    for name in ("If-Modified-Since", "If-Unmodified-Since"):
        if draw(st.integers(0, 3)) == 0:
            conds[name] = draw(date_conditions(fixture.last_modified))
    rng = draw(st.one_of(st.none(), range_values(len(fixture.data))))
    return {"method": method, "conds": conds, "range": rng}


def fuzz_range_conditional(fuzzer: Fuzzer, fixture: S3Fixture, examples: int) -> None:
    target = "Range and conditional headers"
    data, size = fixture.data, len(fixture.data)

    def one(req: dict[str, Any]) -> None:
        method = req["method"]
        headers = fuzzer.sign(method, PATH)
        headers += [(name, c.text) for name, c in req["conds"].items()]
        if req["range"] is not None:
            headers.append(("Range", req["range"][0]))
        r = fuzzer.raw(target, method, PATH, headers, what=req)
        if r is None:
            return
        exact = all(c.structured for c in req["conds"].values()) and (
            req["range"] is None or req["range"][1] != "loose")
        allowed = {200, 206, 304, 400, 412, 416}
        if r.status not in allowed:
            fuzzer.report.fail(f"{target}: {r.status} for {shown(req)}")
            return
        body_ok = method == "HEAD" or r.status not in (200, 206)
        if r.status == 200:
            body_ok = body_ok or r.body == data
        elif r.status == 206:
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", r.headers.get("content-range", ""))
            if m is None or int(m.group(3)) != size:
                fuzzer.report.fail(f"{target}: 206 with Content-Range "
                                   f"{r.headers.get('content-range')!r} for {shown(req)}")
                return
            a, b = int(m.group(1)), int(m.group(2))
            body_ok = body_ok or r.body == data[a:b + 1]
            if int(r.headers.get("content-length", -1)) != b + 1 - a:
                fuzzer.report.fail(f"{target}: 206 Content-Length "
                                   f"{r.headers.get('content-length')} for bytes {a}-{b}")
        elif r.status == 416 and r.headers.get("content-range") != f"bytes */{size}":
            fuzzer.report.fail(f"{target}: 416 with Content-Range "
                               f"{r.headers.get('content-range')!r}")
        if not body_ok:
            fuzzer.report.fail(f"{target}: {r.status} with wrong bytes for {shown(req)}")
        if not exact:
            return
        wanted: int
        decided = expected_read(req["conds"], fixture.last_modified)
        interval = req["range"][1] if req["range"] is not None else None
        if decided is not None:
            wanted = decided
        elif interval == "416":
            wanted = 416
        elif interval is None:
            wanted = 200
        else:
            wanted = 206
        if r.status != wanted:
            fuzzer.report.fail(f"{target}: {r.status}, S3 answers {wanted}: {shown(req)}")
            return
        if wanted == 206 and method == "GET" and isinstance(interval, tuple):
            a, b = interval
            if r.body != data[a:b]:
                fuzzer.report.fail(f"{target}: wrong slice for {shown(req)}")

    fuzzer.explore(target, read_requests(fixture), one, examples)


@st.composite
def copy_requests(draw: st.DrawFn, fixture: S3Fixture) -> dict[str, Any]:
    conds: dict[str, Cond] = {}
    for name in ("If-Match", "If-None-Match"):
        if draw(st.integers(0, 2)) == 0:
            conds[name] = draw(etag_conditions(fixture.etag))
    for name in ("If-Modified-Since", "If-Unmodified-Since"):
        if draw(st.integers(0, 2)) == 0:
            conds[name] = draw(date_conditions(fixture.last_modified))
    part = draw(st.booleans())
    rng = draw(st.one_of(st.none(), range_values(len(fixture.data)))) if part else None
    source = draw(st.one_of(st.just(PATH), st.just(PATH[1:]),
                            st.sampled_from((f"{PATH}?versionId=null", f"{PATH}?versionId=",
                                             "/fuzz", "/", "", "fuzz/", "/nobucket/x",
                                             f"{PATH}%00", f"/{BUCKET}/%", "%2Ffuzz%2Fdata.bin")),
                            header_text(60)))
    return {"conds": conds, "range": rng, "part": part, "source": source}


def fuzz_copy_source(fuzzer: Fuzzer, fixture: S3Fixture, examples: int) -> None:
    """CopyObject and UploadPartCopy with fuzzed x-amz-copy-source, -range and -if-*."""
    target = "copy source headers"
    data, size = fixture.data, len(fixture.data)

    def one(req: dict[str, Any]) -> None:
        if req["part"]:
            path = f"/{BUCKET}/part-copy?partNumber=1&uploadId={fixture.part_copy_upload}"
            headers = fuzzer.sign("PUT", f"/{BUCKET}/part-copy", params=[
                ("partNumber", "1"), ("uploadId", fixture.part_copy_upload)])
        else:
            path = f"/{BUCKET}/copy-dest"
            headers = fuzzer.sign("PUT", path)
        source = req["source"]
        headers.append(("x-amz-copy-source", source))
        headers += [(f"x-amz-copy-source-{name.lower()}", c.text)
                    for name, c in req["conds"].items()]
        if req["range"] is not None:
            headers.append(("x-amz-copy-source-range", req["range"][0]))
        r = fuzzer.raw(target, "PUT", path, headers, what=req)
        if r is None:
            return
        if r.status not in (200, 400, 403, 404, 412):
            fuzzer.report.fail(f"{target}: {r.status} {r.error_code} for {shown(req)}")
            return
        exact = (source in (PATH, PATH[1:]) and all(c.structured for c in req["conds"].values())
                 and (req["range"] is None or req["range"][1] not in ("loose",)))
        if not exact:
            return
        decided = expected_read(req["conds"], fixture.last_modified)
        interval = req["range"][1] if req["range"] is not None else None
        # Only bytes=first-last within the object is a copy range; anything else is refused
        # (400), perhaps before the conditions are read.
        bounded = req["range"] is None or re.fullmatch(rb"bytes=\d+-\d+", req["range"][0])
        usable = req["range"] is None or (bounded and isinstance(interval, tuple))
        wanted: set[int]
        if decided is not None:
            wanted = {412} if usable else {400, 412}
        elif not usable:
            wanted = {400}
        elif req["range"] is not None:
            # A last byte past the end: S3 refuses it; clamping to the end is tolerated.
            last = int(req["range"][0].split(b"-")[1])
            wanted = {200} if last < size else {200, 400}
        else:
            wanted = {200}
        if r.status not in wanted:
            fuzzer.report.fail(f"{target}: {r.status} {r.error_code}, S3 answers "
                               f"{sorted(wanted)}: {shown(req)}")
            return
        if r.status != 200:
            return
        if req["part"]:
            a, b = interval if isinstance(interval, tuple) else (0, size)
            expected = hashlib.md5(data[a:b]).hexdigest()
            if f"<ETag>&quot;{expected}&quot;</ETag>".encode() not in r.body and \
                    f'<ETag>"{expected}"</ETag>'.encode() not in r.body:
                fuzzer.report.fail(f"{target}: copied part is not bytes {a}-{b - 1}: "
                                   f"{r.body[:300]!r}")
        elif fixture.read("copy-dest") != data:
            fuzzer.report.fail(f"{target}: the copy differs from its source")

    fuzzer.explore(target, copy_requests(fixture), one, examples)


# -- malformed HTTP --------------------------------------------------------------------------

@st.composite
def wire_requests(draw: st.DrawFn, host: str) -> tuple[str, bytes]:
    """Requests broken below S3: request line, header syntax, body framing."""
    kind = draw(st.sampled_from(("junk", "mutated", "bad header", "framing", "huge header",
                                 "many headers", "method")))
    valid = build_request("GET", PATH, [("x-amz-date", "20240101T000000Z")], host=host)
    if kind == "junk":
        return kind, draw(st.binary(min_size=1, max_size=400)) + b"\r\n\r\n"
    if kind == "mutated":
        return kind, draw(mutated(valid))
    if kind == "bad header":
        line = draw(st.sampled_from((b"X-Bad Name: 1", b"X-Nul: a\x00b", b": empty-name",
                                     b"X-Fold: a\r\n folded", b"X-Bare-LF: a\nX-Other: b",
                                     b"Host: second.example", b"X-Utf8: \xc3\xa9\xff",
                                     b"Content-Length: 5\r\nContent-Length: 6",
                                     b"Content-Length: -1", b"Content-Length: 1e3",
                                     b"Transfer-Encoding: chunked\r\nContent-Length: 3",
                                     b"Transfer-Encoding: gzip, chunked",
                                     b"Expect: 100-continue", b"Range: bytes=0-0")))
        return kind, valid.replace(b"Connection: close\r\n",
                                   b"Connection: close\r\n" + line + b"\r\n", 1)
    if kind == "framing":
        body = draw(st.sampled_from((b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n",
                                     b"ffffffffffffffffff\r\n", b"3;ext=\x00\r\nabc\r\n0\r\n\r\n",
                                     b"-1\r\n\r\n", b"3\r\nabc", b"0\r\nTrailer: x\r\n\r\n")))
        return kind, (f"PUT /{BUCKET}/wire HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode() + body
    if kind == "huge header":
        return kind, valid.replace(b"Connection: close\r\n", b"Connection: close\r\nX-Huge: "
                                   + b"a" * draw(st.sampled_from((8000, 70_000, 300_000)))
                                   + b"\r\n", 1)
    if kind == "many headers":
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(draw(st.sampled_from((100, 5000)))))
        return kind, valid.replace(b"Connection: close\r\n", b"Connection: close\r\n" + many, 1)
    method = draw(st.sampled_from((b"PROPFIND", b"G\x00T", b"get", b"CONNECT", b"TRACE",
                                   b"A" * 5000, b"PATCH", b"OPTIONS")))
    return kind, method + valid[3:]


def fuzz_wire(fuzzer: Fuzzer, examples: int) -> None:
    target = "malformed HTTP"

    def one(item: tuple[str, bytes]) -> None:
        kind, data = item
        r = send(fuzzer.server.port, data, timeout=10, shut_write=True)
        fuzzer.record(target, r.status if r else None, (kind, data[:200]),
                      seconds=r.seconds if r else 0.0,
                      detail=r.body.decode("utf-8", "replace") if r else "")

    fuzzer.explore(target, wire_requests(fuzzer.host), one, examples)
