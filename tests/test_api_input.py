"""Hostile input to the JSON API is a 400, never a 500, and stores nothing: JSON that is
not JSON (NaN, Infinity), integers of thousands of digits, nesting deeper than the parser
goes, NUL characters (which PostgreSQL cannot store) in bodies, paths and queries, and
change-feed cursors and prefixes at the edges of what SQL and Unicode allow. Run it with
``GATEWAY_TEST_DATABASE=postgresql`` to see the PostgreSQL side."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from tests._server import GatewayProcess, database_for
from tests._server import cli_json as cli


@pytest.fixture(scope="module")
def on_postgresql(tmp_path_factory: pytest.TempPathFactory) -> bool:
    return bool(database_for(tmp_path_factory.getbasetemp() / "probe"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = GatewayProcess(tmp_path_factory.mktemp("input") / "data").start()
    token = cli(server.data_dir, "token", "create", "--user", "admin", "--name", "t",
                "--permission=bots:read", "--permission=bots:write", "--permission=admin",
                "--permission=storage:read", "--permission=storage:write")["token"]
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            yield client
    finally:
        server.stop()


def refused(answer: httpx.Response) -> None:
    """A 400 in the shape of its endpoint family (flat below /storage, else envelope)."""
    assert answer.status_code == 400, answer.text
    body = answer.json()
    if answer.url.path.startswith("/api/v1/storage"):
        assert body["error"] == "validation_error"
    else:
        assert body["success"] is False and body["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("body", [
    b'{"name": NaN}', b'{"name": Infinity}', b'{"name": -Infinity}',
    b'{"name": 1' + b"0" * 5000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"name": "a\\u0000b"}', b'{"a\\u0000": 1}', b'{"name": ["x", {"y": "\\u0000"}]}',
])
def test_bad_json_bodies_are_refused(api: httpx.Client, body: bytes) -> None:
    for path in ("/customers", "/conversations", "/bots"):
        refused(api.post(path, content=body, headers={"Content-Type": "application/json"}))
    # Nothing was stored: the customer, if any, has no attribute from a refused body.
    listed = api.get("/conversations").json()["data"]
    assert listed == []


def test_nul_in_paths_and_queries_is_never_a_server_error(api: httpx.Client,
                                                          on_postgresql: bool) -> None:
    """SQLite stores a NUL like any character (nothing matches: 404, or an empty list);
    PostgreSQL cannot, and the gateway says so (400) instead of failing."""
    for method, path in (("GET", "/bots/a%00b"), ("GET", "/customers/a%00b"),
                         ("GET", "/conversations/a%00b"), ("DELETE", "/tokens/a%00b")):
        answer = api.request(method, path)
        if on_postgresql:
            refused(answer)
        else:
            assert answer.status_code == 404, answer.text
    for path, params, found in (("/bots", {"filter[name]": "a\x00b"}, 200),
                                ("/users", {"botId": "a\x00b"}, 404),
                                ("/storage/changes", {"prefix": "a\x00"}, 200)):
        answer = api.get(path, params=params)
        if on_postgresql:
            refused(answer)
        else:
            assert answer.status_code == found, answer.text


def test_change_feed_edges(api: httpx.Client) -> None:
    answer = api.get("/storage/changes", params={"prefix": "\ud7ff"})
    assert answer.status_code == 200, answer.text
    huge = base64.urlsafe_b64encode(b"c1:" + b"9" * 27).decode().rstrip("=")
    answer = api.get("/storage/changes", params={"since": huge})
    assert answer.status_code == 400 and answer.json()["error"] == "validation_error"
