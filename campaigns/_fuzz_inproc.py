"""Fuzz targets on the gateway's pure parsers, called in this process: many more inputs per
second than over HTTP. The one rule: a parser answers hostile input with a GatewayError of a
4xx status (the S3 error the client gets), or a QueryError (a 400 of the JSON API); any
other exception would reach the client as a 500."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import strategies as st
from sqlalchemy import literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from campaigns._fuzz_api import KeysetList, keyset_params
from campaigns._fuzz_bodies import (
    MUST_REFUSE_XML,
    POST_BUCKET,
    Form,
    Upload,
    condition_items,
    signed_fields,
    valid_conditions,
    xml_endpoints,
)
from campaigns._fuzz_core import Fuzzer, shown
from campaigns._fuzz_inputs import (
    EDGE_DATES,
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
from campaigns._fuzz_s3 import (
    MODES,
    chunked_plans,
    corrupt,
    presigned_requests,
    sigv4_requests,
)
from gateway import errors
from gateway.auth import authenticate_request, decode_aws_chunked, verify_post_form
from gateway.auth.sigv4 import ChunkSigner, RequestView
from gateway.checksums import checksum_request
from gateway.headers import (
    object_attributes,
    parse_copy_source,
    parse_range,
    read_conditions,
    write_conditions,
)
from gateway.s3 import cors
from gateway.s3.form import FormReader, boundary_of
from gateway.s3.handlers import encryption, lifecycle
from gateway.s3.handlers.multipart import _completed_parts
from gateway.s3.handlers.tagging import parse_tag_pairs
from gateway.s3.xml import parse
from gateway.service.conditions import check_read, resolve_range
from gateway.service.lifecycle_rules import validate_rules
from gateway.service.query import Query, QueryError, page_statement, parse_query
from gateway.service.tagging import parse_tagging_header, validate_tags
from tests import _awschunked as ac

T = TypeVar("T")


class InProcess:
    """Runs the parsers, the async ones on one event loop, and judges what they raise."""

    def __init__(self, fuzzer: Fuzzer) -> None:
        self.fuzzer = fuzzer
        self.runner = asyncio.Runner()
        self.now = datetime.now(UTC)

    def close(self) -> None:
        self.runner.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def judge(self, target: str, what: Any, call: Callable[[], object],
              allowed: tuple[type[BaseException], ...] = ()) -> bool:
        """Call; True when it returned. A 4xx GatewayError (or one of ``allowed``) is a
        proper refusal; anything else is a defect."""
        try:
            call()
        except errors.GatewayError as exc:
            if exc.status >= 500 and not isinstance(exc, errors.NotImplemented_):
                self.fail(target, what, exc)
            self.fuzzer.report.add("parser refusals")
            return False
        except allowed:
            self.fuzzer.report.add("parser refusals")
            return False
        except Exception as exc:
            self.fail(target, what, exc)
            return False
        return True

    def fail(self, target: str, what: Any, exc: BaseException) -> None:
        self.fuzzer.report.add("parser defects")
        self.fuzzer.report.fail(f"{target}: {type(exc).__name__}: {str(exc)[:200]} for "
                                f"{shown(what)}")


async def _lookup(fuzzer: Fuzzer, access_key: str) -> str | None:
    return fuzzer.server.secret_key if access_key == fuzzer.server.access_key else None


def _view(method: str, target: str, headers: list[tuple[Any, Any]], host: str) -> RequestView:
    path, _, query = target.partition("?")

    def text(value: Any) -> str:
        return value.decode("latin-1") if isinstance(value, bytes) else str(value).encode(
            "utf-8", "surrogatepass").decode("latin-1")

    return RequestView(method, path, query,
                       [("host", host), *((text(n), text(v)) for n, v in headers)])


def fuzz_auth(ip: InProcess, examples: int) -> None:
    target = "parser: SigV4/SigV2 authentication"
    fuzzer = ip.fuzzer

    async def lookup(access_key: str) -> str | None:
        return await _lookup(fuzzer, access_key)

    def one(item: tuple[str, dict[str, Any]]) -> None:
        kind, req = item
        if kind == "header":
            view = _view(req["method"], req["path"], req["headers"], fuzzer.host)
        else:
            view = _view("GET", req["target"], [], fuzzer.host)
        ip.judge(target, req, lambda: ip.run(authenticate_request(
            view, lookup, now=datetime.now(UTC))))

    strategy = st.one_of(st.tuples(st.just("header"), sigv4_requests(fuzzer)),
                         st.tuples(st.just("query"), presigned_requests(fuzzer)))
    fuzzer.explore(target, strategy, one, examples)


async def _feed(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def fuzz_chunked(ip: InProcess, examples: int) -> None:
    target = "parser: aws-chunked decoder"
    key = ac.derive_key("secret", "20240101", "us-east-1")
    seed_signature = "0" * 64
    scope = "20240101/us-east-1/s3/aws4_request"

    @st.composite
    def plans(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, list[int]]:
        plan = draw(chunked_plans())
        signing = ac.Signing(key, "20240101T000000Z", scope, seed_signature)
        trailers = ([("x-amz-checksum-crc32", ac.crc32_b64(plan["data"]))]
                    if plan["mode"] != MODES[0] else None)
        wire = ac.encode(plan["data"], chunk_size=plan["chunk_size"],
                         signing=signing if plan["mode"] != MODES[2] else None,
                         trailers=trailers)
        if plan["corruption"] != "none":
            wire = corrupt(plan, wire, random.Random(plan["seed"]), "")[0]
            if draw(st.booleans()):
                wire = draw(mutated(wire, max_edits=6))
        cuts = draw(st.lists(st.integers(0, max(len(wire), 1)), max_size=8))
        return plan, wire, cuts

    def one(item: tuple[dict[str, Any], bytes, list[int]]) -> None:
        plan, wire, cuts = item
        points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
        pieces = [wire[a:b] for a, b in itertools.pairwise(points)]
        signer = None if plan["mode"] == MODES[2] else ChunkSigner(
            key, "20240101T000000Z", scope, seed_signature,
            expects_trailer=plan["mode"] == MODES[1])
        out = bytearray()

        async def decode() -> None:
            async for data in decode_aws_chunked(_feed(pieces), chunk_signer=signer,
                                                 trailers={}):
                out.extend(data)

        what = {**plan, "data": f"{len(plan['data'])} bytes", "wire": wire[:200]}
        if ip.judge(target, what, lambda: ip.run(decode())) and signer is not None \
                and bytes(out) != plan["data"]:
            ip.fuzzer.report.fail(f"{target}: a signed body decoded to other bytes than "
                                  f"were signed: {shown(what)}")

    ip.fuzzer.explore(target, plans(), one, examples)


def fuzz_headers(ip: InProcess, examples: int) -> None:
    """Range, conditional, copy-source, metadata, checksum and tagging headers."""
    target = "parser: request headers"
    etag = hashlib.md5(b"x").hexdigest()
    modified = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

    text = st.one_of(header_text(80).map(lambda b: b.decode("latin-1")),
                     st.sampled_from(EDGE_DATES), junk_text(80))
    names = st.sampled_from((
        "range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since",
        "x-amz-copy-source", "x-amz-copy-source-range", "x-amz-meta-a", "x-amz-meta-\u00e9",
        "content-type", "content-encoding", "x-amz-storage-class", "x-amz-acl",
        "x-amz-tagging", "x-amz-checksum-crc32", "x-amz-checksum-sha256",
        "x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm", "x-amz-trailer",
        "content-md5", "x-amz-grant-read", "expires", "cache-control"))
    plans = st.tuples(st.dictionaries(names, text, max_size=6), st.integers(0, 10**12),
                      st.booleans())

    def one(plan: tuple[dict[str, str], int, bool]) -> None:
        headers, size, as_text = plan
        size %= 5000 if size % 3 else 10**12

        def ranges() -> None:
            spec = parse_range(headers.get("range"))
            if spec is not None:
                resolved = resolve_range(spec, size)
                if resolved is not None and not 0 <= resolved.start <= resolved.end <= size:
                    raise AssertionError(f"range {resolved} outside 0..{size}")

        checks: list[Callable[[], object]] = [
            ranges,
            lambda: check_read(read_conditions(headers), etag, modified),
            lambda: check_read(read_conditions(headers, prefix="x-amz-copy-source-"), etag,
                               modified),
            lambda: write_conditions(headers),
            lambda: object_attributes(headers, text=as_text),
            lambda: checksum_request(headers),
            lambda: validate_tags(list((parse_tagging_header(headers.get("x-amz-tagging"))
                                        or {}).items())),
        ]
        if "x-amz-copy-source" in headers:
            checks.append(lambda: parse_copy_source(headers["x-amz-copy-source"]))
        for check in checks:
            ip.judge(target, headers, check)

    ip.fuzzer.explore(target, plans, one, examples)


def fuzz_xml_parsers(ip: InProcess, examples: int) -> None:
    target = "parser: XML documents"
    parsers: dict[str, Callable[[bytes], object]] = {
        "PutBucketTagging": lambda b: validate_tags(parse_tag_pairs(b), "bucket"),
        "PutObjectTagging": lambda b: validate_tags(parse_tag_pairs(b), "object"),
        "PutBucketLifecycle": lambda b: validate_rules(lifecycle.parse_configuration(b)),
        "PutBucketCors": cors.parse_rules,
        "PutBucketEncryption": encryption.parse_configuration,
        "CompleteMultipartUpload": _completed_parts,
    }
    upload = Upload(None, "upload", "0" * 32)
    endpoints = [e for e in xml_endpoints(upload) if e.name in parsers]
    small_attacks = [(e, name, body) for e in endpoints
                     for name, body in xml_attacks(e.root, e.leaf,
                                                   canary_url="http://127.0.0.1:1/")
                     if len(body) < 200_000]
    for endpoint, name, body in small_attacks:
        returned = ip.judge(target, (endpoint.name, name),
                            functools.partial(parsers[endpoint.name], body))
        if returned and name in MUST_REFUSE_XML:
            ip.fuzzer.report.fail(f"{target}: {endpoint.name} accepted the {name} attack")
    ip.fuzzer.inputs(target + " (attack corpus)", len(small_attacks))
    plans = st.sampled_from(endpoints).flatmap(lambda e: st.tuples(st.just(e), st.one_of(
        mutated(e.valid()), xml_trees(e.root, e.vocabulary))))

    def one(plan: tuple[Any, bytes]) -> None:
        endpoint, body = plan
        ip.judge(target, (endpoint.name, body[:300]), lambda: parsers[endpoint.name](body))
        ip.judge(target, body[:300], lambda: parse(body))

    ip.fuzzer.explore(target, plans, one, examples)


def fuzz_post_parsers(ip: InProcess, examples: int) -> None:
    """The policy checks on form fields, and the multipart form reader."""
    target = "parser: POST policy and form"
    fuzzer = ip.fuzzer

    async def lookup(access_key: str) -> str | None:
        return await _lookup(fuzzer, access_key)

    @st.composite
    def forms(draw: st.DrawFn) -> dict[str, str]:
        now = datetime.now(UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        credential = f"{fuzzer.server.access_key}/{amz_date[:8]}/us-east-1/s3/aws4_request"
        conditions: Any = valid_conditions("k", credential, amz_date)
        conditions += draw(st.lists(condition_items(), max_size=4))
        expiration = draw(st.one_of(
            st.just((now + timedelta(hours=1)).isoformat()), st.sampled_from(EDGE_DATES),
            json_scalars))
        document = draw(st.one_of(
            st.just({"expiration": expiration, "conditions": conditions}),
            st.fixed_dictionaries({"expiration": st.just(expiration),
                                   "conditions": json_values}),
            json_values, deep_json_texts()))
        policy = base64.b64encode(
            (document if isinstance(document, str) else dumps(document)).encode(
                "utf-8", "surrogatepass")).decode()
        if draw(st.integers(0, 5)) == 0:
            policy = draw(junk_text(100))
        fields = {n.decode(): v.decode("utf-8", "surrogatepass")
                  for n, v in signed_fields(fuzzer, "k", policy, when=now)}
        for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)):
            if draw(st.booleans()):
                del fields[name]
            else:
                fields[name] = draw(junk_text(80))
        fields.update(draw(st.dictionaries(junk_text(20, with_huge=False), junk_text(40),
                                           max_size=3)))
        return fields

    def one_form(fields: dict[str, str]) -> None:
        ip.judge(target, fields, lambda: ip.run(verify_post_form(
            fields, bucket=POST_BUCKET, filename="a.png", lookup_secret=lookup)))

    fuzzer.explore(target, forms(), one_form, examples)

    reader_target = "parser: multipart form reader"
    valid = Form([(b"key", b"k"), (b"policy", b"p")], (b"a.png", b"image/png", b"data"))

    @st.composite
    def bodies(draw: st.DrawFn) -> tuple[bytes, bytes, list[int]]:
        body = draw(st.one_of(mutated(valid.body(), max_edits=8),
                              st.binary(max_size=500)))
        content_type = draw(st.one_of(
            st.just(b"multipart/form-data; boundary=" + valid.boundary),
            header_text(100)))
        return content_type, body, draw(st.lists(st.integers(0, len(body) + 1), max_size=6))

    def one_body(item: tuple[bytes, bytes, list[int]]) -> None:
        content_type, body, cuts = item
        points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
        pieces = [body[a:b] for a, b in itertools.pairwise(points)]

        async def read() -> None:
            reader = FormReader(_feed(pieces), boundary_of(content_type.decode("latin-1")))
            await reader.fields()
            async for _ in reader.file():
                pass

        ip.judge(reader_target, (content_type, body[:300]), lambda: ip.run(read()))

    fuzzer.explore(reader_target, bodies(), one_body, examples)


def fuzz_query(ip: InProcess, lists: list[KeysetList], examples: int) -> None:
    """The keyset language: parsed, then compiled to SQL for both databases."""
    target = "parser: where/order_by/cursor"
    dialects = (sqlite.dialect(), postgresql.dialect())  # type: ignore[no-untyped-call]

    def one(plan: tuple[KeysetList, dict[str, str]]) -> None:
        keyset, params = plan
        query: Query | None = None

        def parse_it() -> None:
            nonlocal query
            query = parse_query(keyset.entity, where=params.get("where"),
                                order_by=params.get("order_by"), cursor=params.get("cursor"),
                                total=params.get("total"))

        if not ip.judge(target, (keyset.name, params), parse_it, allowed=(QueryError,)):
            return
        assert query is not None
        statement = page_statement(keyset.entity, query, select(literal_column("1")))
        for dialect in dialects:
            ip.judge(target, (keyset.name, dialect.name, params),
                     functools.partial(statement.compile, dialect=dialect))

    plans = st.sampled_from(lists).flatmap(lambda k: st.tuples(st.just(k), keyset_params(k)))
    ip.fuzzer.explore(target, plans, one, examples)


def run_all(fuzzer: Fuzzer, lists: list[KeysetList], examples: int) -> None:
    ip = InProcess(fuzzer)
    # The form parser logs every malformed body it meets: thousands of lines here.
    multipart_log = logging.getLogger("python_multipart")
    level = multipart_log.level
    multipart_log.setLevel(logging.CRITICAL)
    try:
        fuzz_auth(ip, examples)
        fuzz_chunked(ip, examples)
        fuzz_headers(ip, examples)
        fuzz_xml_parsers(ip, examples)
        fuzz_post_parsers(ip, examples)
        fuzz_query(ip, lists, examples)
    finally:
        multipart_log.setLevel(level)
        ip.close()
