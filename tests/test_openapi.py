"""The OpenAPI document (GET /api/v1/openapi.json) and the docs page (GET /api/docs).

- The document is valid OpenAPI 3.1 and names exactly the routes of ``ROUTE_MODULES``
  (path and method, both ways), so neither can drift from the other.
- The served document, the page and its packaged assets load (types, cache headers, 304s).
- Headless Chromium renders the page offline: every operation is listed and no request
  leaves 127.0.0.1.
- Schemathesis, against a real gateway with an admin API token, checks that no answer is a
  5xx and that every answer's status code, content type, headers and body match the
  document. The run is bounded (``MAX_EXAMPLES`` per operation) and deterministic.
- The bot platform's operations, called on customers, bots, users and conversations that
  exist (their ids are random, so the generated requests mostly meet 404s), answer as
  documented too, checked the same way.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.routing import Match, Route

from gateway.api import ROUTE_MODULES, collect_routes
from gateway.api.openapi import ASSETS, document
from gateway.service.tokens import PERMISSIONS
from tests._server import GatewayProcess
from tests._server import cli_json as cli

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
#: Sample values for path parameters, to turn a documented path into a request path.
SAMPLES = {"uploadId": "A" * 64, "partNumber": "7", "key": "docs/manual.pdf",
           "asset": "docs.js"}
MAX_EXAMPLES = 50
#: The change feed holds a request up to ``wait`` seconds while nothing is new: longer
#: waits are cut to this, so that the run stays short (the feed is still long-polled).
MAX_FEED_WAIT = 1
BUCKET, KEY = "mybot.gbai", "docs/manual.pdf"  # the document's examples; they exist


def documented() -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document()["paths"].items()
            for method in item if method in HTTP_METHODS}


def concrete(path: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: SAMPLES.get(m[1], "x1"), path)


def dispatched(path: str, method: str) -> Route | None:
    """The route the API's router sends this request to (the first full match)."""
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    for route in collect_routes():
        assert isinstance(route, Route)
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


# -- the document and the routes -------------------------------------------------------------


def test_document_is_valid_openapi_31() -> None:
    from openapi_spec_validator import validate

    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    ids = [op["operationId"] for item in doc["paths"].values()
           for method, op in item.items() if method in HTTP_METHODS]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth", "apiKey"}


def test_every_route_is_documented_and_every_operation_is_a_route() -> None:
    assert "gateway.api.openapi" in ROUTE_MODULES
    routes = collect_routes()
    # Document → routes: each operation reaches a route that takes its method.
    reached: set[tuple[str, str]] = set()
    for path, method in sorted(documented()):
        route = dispatched(concrete(path), method)
        assert route is not None, f"{method} {path} is documented but no route answers it"
        reached.add((route.path, method))
    # Routes → document: every (route, method) is reached by a documented operation. HEAD
    # is implied by GET (Starlette answers it on every GET route); where it is an operation
    # of its own (objects) the document says so, and that was checked above.
    for route in routes:
        assert isinstance(route, Route)
        for method in sorted(route.methods or ()):
            if method == "HEAD" and "GET" in (route.methods or ()):
                continue
            assert (route.path, method) in reached, \
                f"{method} {route.path} ({route.endpoint.__qualname__}) is not documented"


def test_storage_object_sub_operations_are_documented() -> None:
    """One Starlette route serves POST ``…/objects/{path}`` and dispatches on the last
    segment; each operation it knows is a documented path of its own."""
    from gateway.api import storage

    paths = document()["paths"]
    base = "/v1/storage/buckets/{bucket}/objects/{key}"
    for name in storage._POST_OPERATIONS:
        assert "post" in paths[f"{base}/{name}"], name
    assert "post" in paths[base + "/multipart/{uploadId}/complete"]
    assert "put" in paths[base + "/multipart/{uploadId}/{partNumber}"]
    assert "delete" in paths[base + "/multipart/{uploadId}"]
    for verb in ("get", "head", "put", "delete"):
        assert verb in paths[base]


# -- a real gateway --------------------------------------------------------------------------


@dataclass
class Api:
    server: GatewayProcess
    token: str

    @property
    def url(self) -> str:
        return self.server.url + "/api"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Its own gateway: the Schemathesis run creates and changes users, tokens, buckets."""
    server = GatewayProcess(tmp_path_factory.mktemp("openapi") / "data").start()
    try:
        made = cli(server.data_dir, "token", "create", "--user", "admin", "--name", "openapi",
                   *(f"--permission={p}" for p in PERMISSIONS))
        found = Api(server, made["token"])
        # What the document's examples name, so that example requests also succeed.
        with found.client() as c:
            assert c.post("/v1/storage/buckets", json={"name": BUCKET}).status_code == 201
            assert c.put(f"/v1/storage/buckets/{BUCKET}/objects/{KEY}",
                         content=b"%PDF-1.4 manual").status_code == 200
            assert c.post("/v1/admin/users", json={"name": "alice"}).status_code == 201
            assert c.post("/v1/admin/groups", json={"name": "editors"}).status_code == 201
        yield found
    except BaseException:
        print(server.log())
        raise
    finally:
        server.stop()


def test_served_document_is_the_document(api: Api) -> None:
    r = httpx.get(api.url + "/v1/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-cache"
    assert r.json() == json.loads(json.dumps(document()))
    again = httpx.get(api.url + "/v1/openapi.json", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_docs_page_and_assets_load(api: Api) -> None:
    page = httpx.get(api.url + "/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert 'data-spec-url="v1/openapi.json"' in page.text
    # Assets are named relative to the page (/api/docs), with a content hash.
    refs = re.findall(r'(?:src|href)="(docs/[^"]+)"', page.text)
    assert {urlsplit(r).path for r in refs} == {
        "docs/swagger-ui.css", "docs/swagger-ui-bundle.js", "docs/docs.js"}
    types = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
    for ref in refs:
        r = httpx.get(f"{api.url}/{ref}")
        assert r.status_code == 200, ref
        assert r.headers["content-type"] == types[Path(urlsplit(ref).path).suffix]
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert urlsplit(ref).query == "v=" + r.headers["etag"].strip('"')[:16]
        same = httpx.get(f"{api.url}/{ref}", headers={"If-None-Match": r.headers["etag"]})
        assert same.status_code == 304 and same.content == b""
    bundle = httpx.get(api.url + "/docs/swagger-ui-bundle.js")
    assert len(bundle.content) > 1_000_000 and b"SwaggerUIBundle" in bundle.content
    for name in ("LICENSE", "NOTICE"):
        r = httpx.get(f"{api.url}/docs/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "Apache License" in httpx.get(api.url + "/docs/LICENSE").text
    missing = httpx.get(api.url + "/docs/nope.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert set(ASSETS) >= {"swagger-ui-bundle.js", "swagger-ui.css", "docs.js"}


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


def test_docs_page_renders_every_operation_offline(api: Api) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    requested: list[str] = []
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()

            def guard(route: Any) -> None:
                url = route.request.url
                requested.append(url)
                if urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:"):
                    route.continue_()
                else:
                    route.abort()  # it would have left the machine: recorded, then failed

            context.route("**/*", guard)
            page = context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(api.url + "/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock", timeout=30_000)
            shown = page.locator(".opblock-summary-path").all_inner_texts()
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    outside = [u for u in requested
               if urlsplit(u).hostname != "127.0.0.1" and not u.startswith("data:")]
    assert outside == [], outside
    assert any(u.endswith("/api/v1/openapi.json") for u in requested), requested
    assert problems == [], problems
    assert "Gateway JSON API" in title
    normalized = {p.replace("\u200b", "").strip() for p in shown}
    assert "/v1/storage/buckets" in normalized
    paths = set(document()["paths"])
    assert paths <= normalized, sorted(paths - normalized)


# -- Schemathesis ----------------------------------------------------------------------------

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# Package archives (POST /v1/bots/{bot_id}/package) are bytes, sent as they are.
schemathesis.serializer.alias(["application/x-tar", "application/gzip"],
                              "application/octet-stream")


#: The document as the code builds it; test_served_document_is_the_document checks that
#: the gateway serves exactly this. (Loaded in-process: schemathesis.pytest.from_fixture
#: fails under pytest 9, ``Function._nodeid``.)
api_schema = schemathesis.openapi.from_dict(document())
api_schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True,
                                    database="none")
# 501 (versioning: true) and 507 (quota exceeded) are answers the document promises, not
# failures; status_code_conformance still checks that the operation documents them.
api_schema.config.checks.not_a_server_error.expected_statuses = ["2xx", "3xx", "4xx", "501",
                                                                  "507"]


def short_wait(value: Any) -> Any:
    """``wait`` as generated, unless the gateway would read it as more than
    ``MAX_FEED_WAIT`` seconds (``int()`` of the text, as it does)."""
    if isinstance(value, list):
        return [short_wait(v) for v in value]
    try:
        seconds = int(str(value))
    except ValueError:
        return value
    return MAX_FEED_WAIT if seconds > MAX_FEED_WAIT else value


@api_schema.parametrize()
def test_api_conforms_to_its_document(case: Any, api: Api) -> None:
    """Nothing is excluded. Logout is safe to fuzz with the run's API token: only a login
    session can log out (an API token is answered 400, as documented). The token holds
    every permission, so the bot platform's routes answer as they do for an administrator."""
    headers = {"Authorization": f"Bearer {api.token}"}
    if case.path == "/v1/storage/changes" and case.query and "wait" in case.query:
        case.query["wait"] = short_wait(case.query["wait"])
    if case.path.startswith("/v1/admin/keys"):
        # The other credential form, X-Api-Key (Base64), gets some traffic too.
        headers = {"X-Api-Key": base64.b64encode(api.token.encode()).decode()}
    case.call_and_validate(base_url=api.url, headers=headers, checks=CHECKS)


def conform(api: Api, method: str, path: str, status: int | tuple[int, ...], *,
            token: str | None = None, **case: Any) -> Any:
    """One request of a document's operation, made with the given values (``case``: the
    Case's ``path_parameters``, ``query``, ``body``, ``media_type``) and checked by the
    run's checks; its answer must have ``status`` (or one of them). ``token``: whose
    (default: the run's)."""
    made = api_schema[path][method].Case(**case)
    response = made.call_and_validate(
        base_url=api.url, checks=CHECKS,
        headers={"Authorization": f"Bearer {token or api.token}"})
    wanted = status if isinstance(status, tuple) else (status,)
    assert response.status_code in wanted, (method, path, response.text)
    return response


def test_bot_platform_answers_conform_on_real_things(api: Api) -> None:
    """Ids are random, so the run above mostly meets 404s on the bot platform's paths: here
    each operation is called on things that exist, and its answer checked the same way."""
    with api.client() as c:
        assert c.post("/v1/admin/users", json={"name": "bob"}).status_code in (201, 409)
        made = c.post("/v1/tokens", json={"name": "tour", "user": "bob",
                                          "permissions": ["bots:read", "bots:write"]})
        assert made.status_code == 201, made.text
        bob = made.json()["data"]["token"]
    # The admin's customer: made here, or already by the run above (then answered as is).
    customer = conform(api, "POST", "/v1/customers", (200, 201),
                       body={"name": "Acme", "plan": "gold"}).json()["data"]
    conform(api, "POST", "/v1/customers", 200)
    cid = {"customer_id": customer["id"]}
    conform(api, "GET", "/v1/customers/{customer_id}", 200, path_parameters=cid)
    conform(api, "PUT", "/v1/customers/{customer_id}", 200, path_parameters=cid,
            body={"email": "bots@acme.example", "plan": None})

    name = f"tour-{uuid.uuid4().hex[:8]}"
    made = conform(api, "POST", "/v1/bots", 201,
                   body={"name": name, "description": "A tour", "s3Key": True,
                         "tone": "formal", "quota": {"objects": 100}})
    assert made.headers["cache-control"] == ["no-store"]
    bot = made.json()["data"]
    assert bot["tone"] == "formal" and bot["secret"] and bot["s3Key"]["accessKey"]
    bid = {"bot_id": bot["id"]}
    listed = conform(api, "GET", "/v1/bots", 200, query={"filter[name]": name})
    assert [b["id"] for b in listed.json()["data"]] == [bot["id"]]  # filter[name]=…
    keyset = conform(api, "GET", "/v1/bots", 200, query={
        "where": json.dumps({"fieldPath": "name", "predicate": "eq", "value": name}),
        "total": "true"}).json()["data"]
    assert [b["id"] for b in keyset["items"]] == [bot["id"]]
    assert keyset["pageInfo"]["total"] == 1
    conform(api, "GET", "/v1/bots/{bot_id}", 200, path_parameters=bid,
            query={"customerId": customer["id"]})
    renewed = conform(api, "PUT", "/v1/bots/{bot_id}", 200, path_parameters=bid,
                      body={"secret": "new"})
    assert renewed.headers["cache-control"] == ["no-store"]
    assert "cache-control" not in conform(api, "PUT", "/v1/bots/{bot_id}", 200,
                                          path_parameters=bid,
                                          body={"description": "Changed"}).headers

    user = conform(api, "POST", "/v1/users", 201,
                   body={"botId": bot["id"], "externalId": 42, "plan": "free"}).json()["data"]
    conform(api, "POST", "/v1/users", 200, body={"botId": bot["id"], "externalId": "42"})
    uid = {"user_id": user["id"]}
    conform(api, "GET", "/v1/users", 200, query={"botId": bot["id"], "botStatus": "active"})
    conform(api, "GET", "/v1/users", 200, query={"botId": bot["id"],
                                                 "cursor": json.dumps({"first": 1})})
    conform(api, "GET", "/v1/users/{user_id}", 200, path_parameters=uid,
            query={"botId": bot["id"]})
    conform(api, "PUT", "/v1/users/{user_id}", 200, path_parameters=uid,
            body={"botId": bot["id"], "botStatus": "muted"})
    conform(api, "PUT", "/v1/users", 200,
            body={"botId": bot["id"], "ids": [user["id"]], "update": {"botStatus": "active"}})

    room = conform(api, "POST", "/v1/conversations", 201,
                   body={"name": "support", "participants": [{"user": "alice",
                                                               "role": "moderator"}]}
                   ).json()["data"]
    conv = {"conversation": room["id"]}
    conform(api, "GET", "/v1/conversations", 200, query={"filter[role]": "owner"})
    conform(api, "GET", "/v1/conversations", 200,
            query={"order_by": json.dumps({"fieldPath": "name"})})
    conform(api, "GET", "/v1/conversations/{conversation}", 200, path_parameters=conv)
    participants = "/v1/conversations/{conversation}/participants"
    conform(api, "POST", participants, 201, path_parameters=conv, body={"user": "bob"})
    conform(api, "POST", participants, 200, path_parameters=conv,
            body={"user": "bob", "role": "moderator"})
    conform(api, "DELETE", participants + "/{user}", 200,
            path_parameters={**conv, "user": "bob"})
    conform(api, "POST", participants, 201, path_parameters=conv, body={"user": "bob"})
    left = conform(api, "DELETE", participants + "/{user}", 200, token=bob,
                   path_parameters={**conv, "user": "bob"})
    assert left.json()["data"] is None

    both = {**conv, **bid}
    conform(api, "GET", "/v1/bot/{conversation}", 200, path_parameters=conv)
    conform(api, "POST", "/v1/bot/{conversation}/{bot_id}", 201, path_parameters=both)
    conform(api, "POST", "/v1/bot/{conversation}/{bot_id}", 200, path_parameters=both)
    conform(api, "DELETE", "/v1/bot/{conversation}/{bot_id}", 200, path_parameters=both)
    conform(api, "GET", "/v1/bot/admin", 200, query={"sort": "error_count"})
    conform(api, "GET", "/v1/bot/admin", 200, query={"total": "true"})

    package = "/v1/bots/{bot_id}/package"
    tar = conform(api, "GET", package, 200, path_parameters=bid).content
    conform(api, "GET", package, 200, path_parameters=bid, query={"format": "tar.gz"})
    conform(api, "HEAD", package, 200, path_parameters=bid)
    conform(api, "POST", package, 200, path_parameters=bid, query={"mode": "merge"},
            body=tar, media_type="application/x-tar")
    bucket = bot["bucket"]
    conform(api, "GET", "/v1/storage/changes", 200, query={"bucket": bucket, "limit": 5})
    conform(api, "GET", "/v1/storage/buckets/{bucket}/search", 200,
            path_parameters={"bucket": bucket},
            query={"where": json.dumps({"fieldPath": "key", "predicate": "starts_with",
                                        "value": ".gbkb/"}), "total": "true"})
    conform(api, "DELETE", "/v1/bots/{bot_id}", 200, path_parameters=bid)


@pytest.fixture
def fresh_bucket(api: Api) -> str:
    """A bucket of its own: the Schemathesis run may have set quotas on the examples'."""
    name = f"fresh-{uuid.uuid4().hex[:12]}"
    with api.client() as c:
        assert c.post("/v1/storage/buckets", json={"name": name}).status_code == 201
        assert c.put(f"/v1/storage/buckets/{name}/objects/{KEY}",
                     content=b"%PDF-1.4 manual").status_code == 200
    return name


def test_a_line_feed_in_a_path_is_answered_as_json(api: Api, fresh_bucket: str) -> None:
    with api.client() as c:
        r = c.delete("/v1/tokens/a%0Ab")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert r.headers["x-request-id"]
        r = c.get(f"/v1/storage/buckets/{fresh_bucket}/objects/nothing%0A")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        key = "line\nfeed.txt"
        assert c.put(f"/v1/storage/buckets/{fresh_bucket}/objects/line%0Afeed.txt",
                     content=b"x").status_code == 200
        listed = c.get(f"/v1/storage/buckets/{fresh_bucket}/objects",
                       params={"prefix": "line"})
        assert [o["key"] for o in listed.json()["objects"]] == [key]


def test_unknown_credentials_are_401_in_both_shapes(api: Api) -> None:
    """The document's 401s: a flat body below /v1/storage, the envelope elsewhere."""
    bad = {"Authorization": "Bearer gwt_" + uuid.uuid4().hex}
    r = httpx.get(api.url + "/v1/storage/buckets", headers=bad)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = httpx.get(api.url + "/v1/admin/users", headers=bad)
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"


# -- bugs the document and the run brought up (other modules), now regression tests -------


def test_a_quota_limit_too_large_to_store_is_a_400(api: Api) -> None:
    with api.client() as c:
        r = c.put(f"/v1/admin/buckets/{BUCKET}/quota", json={"max_bytes": 2**63})
        assert r.status_code == 400, r.text


def test_a_token_expiry_beyond_year_9999_utc_is_a_400(api: Api) -> None:
    with api.client() as c:
        r = c.post("/v1/tokens", json={"name": "far", "permissions": ["storage:read"],
                                       "expires_at": "9999-12-31T23:59:59-23:59"})
        assert r.status_code == 400, r.text


def test_metadata_that_cannot_be_a_header_is_refused(api: Api, fresh_bucket: str) -> None:
    with api.client() as c:
        base = f"/v1/storage/buckets/{fresh_bucket}/objects"
        r = c.post(f"{base}/{KEY}/copy", json={"destination_key": "meta/copy",
                                               "metadata": {"note": "\u0101"}})
        if r.status_code == 200:  # accepted: then it must stay readable
            assert c.get(f"{base}/meta/copy").status_code == 200
        else:
            assert r.status_code == 400, r.text
