"""A real browser against the gateway: headless Chromium (Debian's ``chromium`` driven by
Playwright) runs a web app served from another origin, the way a bot platform's upload page
uses S3.

The app's "backend" is boto3 in this process: it creates the bucket, sets its CORS rules and
hands out presigned URLs and presigned POST policies, once with boto3's default settings (for
this endpoint botocore 1.44 signs those with Signature Version 2) and once with
``signature_version="s3v4"``. The page then does what browser uploaders do:

* a 20 MiB PUT of a generated Blob to a presigned URL (a non-simple request: a real CORS
  preflight), reading the ETag through ``ExposeHeaders``;
* an ``<input type=file>`` upload through a presigned POST form, once with ``fetch(FormData)``
  reading the 201 XML, once as a real form submission that S3 redirects back to the app;
* presigned GETs (one with ``response-content-disposition``), hashed with WebCrypto;
* from an origin the bucket's rules do not allow, the same PUT must be refused.

Screenshots and each page's network log (preflights included, from the DevTools protocol) are
written to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import random
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests._server import GatewayProcess
from tests.conftest import make_client

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("chromium not installed: apt-get install chromium", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed: pip install -e '.[test]'")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
PAGES = Path(__file__).parent / "browser"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"

MiB = 1024 * 1024
PUT_SIZE = 20 * MiB
FORM_SIZE = 3 * MiB + 12345
PUT_CONTENT_TYPE = "application/x-gateway-browser-test"
BLOCK = 65536
EXPIRES = 600


def deterministic_bytes(size: int, seed: int) -> bytes:
    """The bytes tests/browser/app.js:deterministicBytes generates in the page."""
    block = bytearray(BLOCK)
    x = seed
    for i in range(BLOCK):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        block[i] = (x >> 16) & 0xFF
    out = bytearray()
    for n, offset in enumerate(range(0, size, BLOCK)):
        table = bytes(j ^ (n & 0xFF) for j in range(256))
        out += bytes(block[: min(BLOCK, size - offset)]).translate(table)
    return bytes(out)


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------- servers

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_server() -> Iterator[str]:
    """tests/browser/ over HTTP on a free loopback port; yields the origin."""
    handler = partial(_QuietHandler, directory=str(PAGES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass(frozen=True)
class Origins:
    app: str         # the web app: the bucket's CORS rules allow it
    disallowed: str  # another page no rule allows


@pytest.fixture(scope="module")
def origins() -> Iterator[Origins]:
    with static_server() as app, static_server() as other:
        yield Origins(app, other)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.iterdir():
        if old.is_file():
            old.unlink()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# ------------------------------------------------------------------------ page + its records

@dataclass
class BrowserPage:
    """A page in a fresh browser context, with what it logged and sent recorded."""

    page: Any
    name: str
    network: list[dict[str, Any]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    shots: int = 0

    def shot(self, step: str) -> None:
        self.shots += 1
        self.page.screenshot(path=ARTIFACTS / f"{self.name}-{self.shots:02d}-{step}.png",
                             full_page=True)

    def call(self, function: str, *args: Any) -> Any:
        """``await app.<function>(...args)`` in the page."""
        return self.page.evaluate(f"(args) => app.{function}(...args)", list(args))

    def preflights(self) -> list[dict[str, Any]]:
        """The CORS preflights Chromium sent, with their answers."""
        return [e for e in self.network if e.get("type") == "Preflight" and "status" in e]

    def diagnosis(self) -> str:
        """The network log (preflights included) and console, for assertion messages."""
        lines = ["network:"]
        for event in self.network[-20:]:
            lines.append("  " + json.dumps(event, sort_keys=True)[:1500])
        lines.append("console:")
        lines += ["  " + line[:500] for line in self.console[-20:]]
        return "\n".join(lines)

    def save_logs(self) -> None:
        (ARTIFACTS / f"{self.name}-network.json").write_text(json.dumps(self.network, indent=1))
        (ARTIFACTS / f"{self.name}-console.txt").write_text("\n".join(self.console) + "\n")


_CORS_HEADERS = re.compile(r"^(access-control-.*|vary|etag|content-disposition|content-type"
                           r"|location|x-amz-request-id)$", re.IGNORECASE)


def _record_network(context: Any, page: Any, log: list[dict[str, Any]]) -> None:
    """Every request with its answer, via the DevTools protocol: unlike page.on('response') it
    shows CORS preflights and why Chromium blocked a request (corsErrorStatus)."""
    cdp = context.new_cdp_session(page)
    requests: dict[str, dict[str, Any]] = {}

    def short(url: str) -> str:
        return url if len(url) <= 160 else url[:157] + "..."

    def sent(event: dict[str, Any]) -> None:
        entry = {"method": event["request"]["method"], "url": short(event["request"]["url"]),
                 "type": event.get("type")}
        if event.get("redirectResponse"):
            redirect = event["redirectResponse"]
            log.append({**requests.get(event["requestId"], {}), "status": redirect["status"],
                        "headers": {k: v for k, v in redirect["headers"].items()
                                    if _CORS_HEADERS.match(k)}})
        requests[event["requestId"]] = entry
        if event["request"]["method"] == "OPTIONS" or event.get("type") == "Preflight":
            entry["request_headers"] = {k: v for k, v in event["request"]["headers"].items()
                                        if k.lower().startswith(("access-control", "origin"))}

    def received(event: dict[str, Any]) -> None:
        entry = requests.get(event["requestId"], {"url": short(event["response"]["url"])})
        entry = {**entry, "type": event.get("type", entry.get("type")),
                 "status": event["response"]["status"],
                 "headers": {k: v for k, v in event["response"]["headers"].items()
                             if _CORS_HEADERS.match(k)}}
        log.append(entry)

    def failed(event: dict[str, Any]) -> None:
        entry = requests.get(event["requestId"], {})
        log.append({**entry, "type": event.get("type", entry.get("type")),
                    "failed": event.get("errorText"), "cors": event.get("corsErrorStatus")})

    cdp.on("Network.requestWillBeSent", sent)
    cdp.on("Network.responseReceived", received)
    cdp.on("Network.loadingFailed", failed)
    # Keep request and response bodies out of the protocol's buffers: they are tens of MiB.
    cdp.send("Network.enable", {"maxTotalBufferSize": MiB, "maxResourceBufferSize": 64 * 1024,
                                "maxPostDataSize": 1024})


@pytest.fixture
def browser_page(chromium: Any, request: pytest.FixtureRequest) -> Iterator[BrowserPage]:
    context = chromium.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.removeprefix("test_")).strip("-")
    recorded = BrowserPage(page, name)
    _record_network(context, page, recorded.network)
    page.on("console", lambda message: recorded.console.append(
        f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: recorded.console.append(f"pageerror: {error}"))
    try:
        yield recorded
    finally:
        with contextlib.suppress(Exception):
            recorded.shot("final")
        recorded.save_logs()
        context.close()


# ------------------------------------------------------------------------------- S3 backend

@pytest.fixture(params=["default", "s3v4"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def presigner(flavor: str, gateway: GatewayProcess) -> Any:
    """What the app's backend signs with: boto3's default settings (SigV2 query strings and
    policies for this endpoint, as of botocore 1.44), or SigV4."""
    if flavor == "default":
        return make_client(gateway)
    return make_client(gateway, config=Config(signature_version="s3v4"))


@pytest.fixture
def cors_bucket(s3: Any, bucket: str, origins: Origins) -> str:
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [origins.app],
        "AllowedMethods": ["GET", "PUT", "POST", "HEAD", "DELETE"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag", "x-amz-request-id"],
        "MaxAgeSeconds": 600,
    }]})
    return bucket


def post_policy(presigner: Any, bucket: str, key: str, fields: dict[str, str]) -> dict[str, Any]:
    """A presigned POST for ``key`` (``${filename}`` allowed) that also binds ``fields``."""
    return presigner.generate_presigned_post(
        bucket, key, Fields=fields,
        Conditions=[*({name: value} for name, value in fields.items()),
                    ["content-length-range", 1, 30 * MiB],
                    ["starts-with", "$key", "uploads/"],
                    ["starts-with", "$Content-Type", ""]],
        ExpiresIn=EXPIRES)


def form_fields(post: dict[str, Any]) -> list[list[str]]:
    """The form's fields in page order: key, Content-Type (the page fills it in from the
    chosen file), then the policy's other fields; the file input comes last."""
    fields = dict(post["fields"])
    return [["key", fields.pop("key")], ["Content-Type", ""],
            *([name, value] for name, value in fields.items())]


def preflight(url: str, origin: str, method: str = "PUT") -> httpx.Response:
    """The preflight Chromium sends before the PUT, replayed outside the browser."""
    return httpx.request("OPTIONS", url, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type"})


def describe(response: httpx.Response) -> str:
    return f"{response.status_code} {dict(response.headers)} {response.text[:500]!r}"


def head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return None
        raise


@pytest.fixture
def upload_file(tmp_path: Path, flavor: str) -> tuple[Path, bytes]:
    data = random.Random(7).randbytes(FORM_SIZE)
    path = tmp_path / f"photo-{flavor}.png"
    path.write_bytes(data)
    return path, data


# ------------------------------------------------------------------------------------ tests

def test_presigned_put_and_get(browser_page: BrowserPage, origins: Origins, s3: Any,
                               cors_bucket: str, presigner: Any) -> None:
    bucket, key = cors_bucket, "browser/blob-20MiB.bin"
    data = deterministic_bytes(PUT_SIZE, seed=20240601)
    put_url = presigner.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": PUT_CONTENT_TYPE},
        ExpiresIn=EXPIRES)
    page = browser_page
    page.page.goto(f"{origins.app}/app.html")
    page.shot("app-loaded")

    put = page.call("putBlob", put_url, PUT_CONTENT_TYPE, PUT_SIZE, 20240601)
    page.shot("put-done")
    assert put["sha256"] == sha256_hex(data), "the page and the test generate different bytes"
    assert "error" not in put, (
        f"PUT from {origins.app} failed in the browser: {put['error']}\n"
        f"the same preflight outside the browser: {describe(preflight(put_url, origins.app))}\n"
        f"{page.diagnosis()}")
    assert put["status"] == 200, f"{put}\n{page.diagnosis()}"
    assert put["etag"] == md5_etag(data), (
        f"ETag as the page reads it (ExposeHeaders ETag): {put['etag']!r}\n{page.diagnosis()}")
    assert put["requestId"], f"x-amz-request-id not readable (ExposeHeaders)\n{page.diagnosis()}"
    preflights = page.preflights()
    assert len(preflights) == 1, f"expected the PUT's one preflight\n{page.diagnosis()}"
    assert preflights[0]["status"] == 200
    assert preflights[0]["headers"].get("access-control-max-age") == "600", preflights

    stored = s3.head_object(Bucket=bucket, Key=key)
    assert stored["ETag"] == put["etag"]
    assert stored["ContentLength"] == PUT_SIZE
    assert stored["ContentType"] == PUT_CONTENT_TYPE
    assert sha256_hex(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == put["sha256"]

    get_url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=EXPIRES)
    got = page.call("download", get_url)
    assert "error" not in got, f"presigned GET: {got['error']}\n{page.diagnosis()}"
    assert got["status"] == 200, f"{got}\n{page.diagnosis()}"
    assert (got["size"], got["sha256"]) == (PUT_SIZE, put["sha256"])
    assert got["etag"] == put["etag"]
    assert got["contentType"] == PUT_CONTENT_TYPE

    disposition = 'attachment; filename="report.pdf"'
    attachment_url = presigner.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": key, "ResponseContentDisposition": disposition},
        ExpiresIn=EXPIRES)
    with page.page.expect_response(lambda r: "response-content-disposition" in r.url) as info:
        got = page.call("download", attachment_url)
    assert "error" not in got, f"presigned GET (attachment): {got['error']}\n{page.diagnosis()}"
    assert got["status"] == 200, f"{got}\n{page.diagnosis()}"
    assert (got["size"], got["sha256"]) == (PUT_SIZE, put["sha256"])
    # Content-Disposition is not in the rule's ExposeHeaders: the script may not read it, but
    # the answer carries it.
    assert info.value.all_headers().get("content-disposition") == disposition
    page.shot("downloaded")


def test_post_form_with_fetch(browser_page: BrowserPage, origins: Origins, s3: Any,
                              cors_bucket: str, presigner: Any,
                              upload_file: tuple[Path, bytes]) -> None:
    bucket = cors_bucket
    path, data = upload_file
    key = f"uploads/{path.name}"
    post = post_policy(presigner, bucket, "uploads/${filename}", {"success_action_status": "201"})
    page = browser_page
    page.page.goto(f"{origins.app}/app.html")
    page.call("buildForm", "post-fetch", "POST Object with fetch(FormData)", post["url"],
              form_fields(post))
    page.page.set_input_files("#post-fetch input[type=file]", path)
    page.shot("form-filled")

    # A key outside the policy's "uploads/" prefix is refused, and the page can read why.
    page.call("setField", "post-fetch", "key", "elsewhere/${filename}")
    refused = page.call("postForm", "post-fetch")
    assert "error" not in refused, (
        f"refused POST not readable: {refused['error']}\n{page.diagnosis()}")
    assert (refused["status"], refused["code"]) == (403, "AccessDenied"), refused["body"]
    assert head(s3, bucket, f"elsewhere/{path.name}") is None
    page.call("setField", "post-fetch", "key", post["fields"]["key"])

    result = page.call("postForm", "post-fetch")
    page.shot("post-done")
    assert result["file"]["sha256"] == sha256_hex(data)
    assert result["file"]["type"] == "image/png"
    assert "error" not in result, (
        f"POST from {origins.app} failed in the browser: {result['error']}\n{page.diagnosis()}")
    assert result["status"] == 201, f"{result}\n{page.diagnosis()}"
    assert result["root"] == "PostResponse", result["body"]
    assert result["bucket"] == bucket, result["body"]
    assert result["key"] == key, result["body"]
    assert result["xmlEtag"] == md5_etag(data), result["body"]
    assert result["etag"] == md5_etag(data), f"ETag header as the page reads it: {result}"
    location = unquote(result["location"] or "")
    assert bucket in location and location.endswith(key), result["body"]

    stored = s3.head_object(Bucket=bucket, Key=key)
    assert stored["ETag"] == md5_etag(data)
    assert stored["ContentLength"] == FORM_SIZE
    assert stored["ContentType"] == "image/png"

    get_url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=EXPIRES)
    got = page.call("download", get_url)
    page.shot("downloaded")
    assert "error" not in got, f"presigned GET: {got['error']}\n{page.diagnosis()}"
    assert got["status"] == 200, f"{got}\n{page.diagnosis()}"
    assert (got["size"], got["sha256"]) == (FORM_SIZE, result["file"]["sha256"])
    assert got["contentType"] == "image/png"


def test_post_form_submission_redirects(browser_page: BrowserPage, origins: Origins, s3: Any,
                                        cors_bucket: str, presigner: Any,
                                        upload_file: tuple[Path, bytes]) -> None:
    bucket = cors_bucket
    path, data = upload_file
    key = f"uploads/nav/{path.name}"
    redirect = f"{origins.app}/done.html"
    post = post_policy(presigner, bucket, "uploads/nav/${filename}",
                       {"success_action_redirect": redirect})
    page = browser_page
    page.page.goto(f"{origins.app}/app.html")
    page.call("buildForm", "post-nav", "POST Object as a form submission", post["url"],
              form_fields(post))
    page.page.set_input_files("#post-nav input[type=file]", path)
    page.shot("form-filled")

    with page.page.expect_response(lambda r: r.request.method == "POST") as info:
        page.page.click("#post-nav button[type=submit]")
    page.page.wait_for_load_state()
    page.shot("after-submit")
    answer = info.value
    body = "" if answer.status in (301, 302, 303, 307, 308) else answer.text()[:2000]
    assert answer.status == 303, (
        f"POST answered {answer.status} {answer.all_headers()} {body}\n{page.diagnosis()}")
    page.page.wait_for_url(lambda url: url.startswith(redirect))
    landed = urlsplit(page.page.url)
    assert f"{landed.scheme}://{landed.netloc}{landed.path}" == redirect
    params = parse_qs(landed.query)
    assert params.get("bucket") == [bucket], page.page.url
    assert params.get("key") == [key], page.page.url
    assert params.get("etag") == [md5_etag(data)], page.page.url
    assert page.page.inner_text("#params").count("\n") >= 2

    stored = s3.head_object(Bucket=bucket, Key=key)
    assert stored["ETag"] == md5_etag(data)
    assert stored["ContentLength"] == FORM_SIZE
    assert stored["ContentType"] == "image/png"


def test_disallowed_origin_is_refused(browser_page: BrowserPage, origins: Origins, s3: Any,
                                      cors_bucket: str, presigner: Any) -> None:
    bucket, key = cors_bucket, "blocked/blob.bin"
    put_url = presigner.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": PUT_CONTENT_TYPE},
        ExpiresIn=EXPIRES)
    page = browser_page
    page.page.goto(f"{origins.disallowed}/app.html")

    put = page.call("putBlob", put_url, PUT_CONTENT_TYPE, MiB, 99)
    page.shot("put-refused")
    assert put.get("error", "").startswith("TypeError"), (
        f"PUT from {origins.disallowed} was not refused: {put}\n{page.diagnosis()}")
    assert head(s3, bucket, key) is None, "the refused preflight's PUT stored the object"
    assert [p["status"] for p in page.preflights()] == [403], page.diagnosis()
    refused = preflight(put_url, origins.disallowed)
    assert refused.status_code == 403, describe(refused)
    assert "access-control-allow-origin" not in refused.headers, describe(refused)

    # A simple GET is sent without a preflight; the answer has no CORS headers for this
    # origin, so the script may not read it.
    s3.put_object(Bucket=bucket, Key="public/hello.txt", Body=b"hello")
    get_url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "public/hello.txt"}, ExpiresIn=EXPIRES)
    got = page.call("download", get_url)
    page.shot("get-refused")
    assert got.get("error", "").startswith("TypeError"), (
        f"GET from {origins.disallowed} was readable: {got}\n{page.diagnosis()}")
