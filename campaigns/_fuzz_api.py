"""Fuzz targets on the JSON API: the ``where`` / ``order_by`` / ``cursor`` / ``total`` query
language of every keyset list, and Schemathesis over the whole served OpenAPI document."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from hypothesis import strategies as st

from campaigns._fuzz_core import Fuzzer, shown
from campaigns._fuzz_inputs import (
    EDGE_DATES,
    deep_json_texts,
    dumps,
    huge,
    json_values,
    junk_text,
    mutated,
    strip_surrogates,
)
from gateway.api.pagination import KEYSET_PARAMS
from gateway.service.bots import ADMIN_BOTS, BOT_USERS, BOTS
from gateway.service.conversations import CONVERSATIONS
from gateway.service.query import (
    BRANCH_PREDICATES,
    LEAF_PREDICATES,
    OBJECTS,
    Entity,
)
from gateway.service.tokens import PERMISSIONS
from tests._server import cli_json

#: The change feed long-polls up to ``wait`` seconds: generated waits are cut to this.
MAX_FEED_WAIT = 1


@dataclass
class KeysetList:
    name: str
    path: str
    entity: Entity
    params: dict[str, str]
    cursor: str = ""  # a real cursor of this list (its first page's endCursor)


@dataclass
class ApiFixture:
    client: httpx.Client  # base URL /api, the admin token's Authorization
    token: str
    lists: list[KeysetList]


def setup(fuzzer: Fuzzer, bucket: str) -> ApiFixture:
    made = cli_json(fuzzer.server.data_dir, "token", "create", "--user", "admin", "--name",
                    "fuzz", *(f"--permission={p}" for p in PERMISSIONS))
    token = made["token"]
    client = httpx.Client(base_url=fuzzer.server.url + "/api", timeout=30,
                          headers={"Authorization": f"Bearer {token}"})
    bot = client.post("/v1/bots", json={"name": "fuzzbot"})
    bot.raise_for_status()
    bot_id = bot.json()["data"]["id"]
    client.post("/v1/users", json={"botId": bot_id, "externalId": 1}).raise_for_status()
    client.post("/v1/conversations", json={"name": "room"}).raise_for_status()
    lists = [
        KeysetList("search", f"/v1/storage/buckets/{bucket}/search", OBJECTS, {}),
        KeysetList("bots", "/v1/bots", BOTS, {}),
        KeysetList("users", "/v1/users", BOT_USERS, {"botId": bot_id}),
        KeysetList("conversations", "/v1/conversations", CONVERSATIONS, {}),
        KeysetList("bot admin", "/v1/bot/admin", ADMIN_BOTS, {}),
    ]
    for keyset in lists:
        r = client.get(keyset.path, params={**keyset.params,
                                            "cursor": json.dumps({"first": 1})})
        r.raise_for_status()
        data = r.json()
        page = data.get("data", data) if isinstance(data, dict) else {}
        keyset.cursor = (page.get("pageInfo") or {}).get("endCursor") or ""
    return ApiFixture(client, token, lists)


# -- where / order_by / cursor / total ---------------------------------------------------------

def _values() -> st.SearchStrategy[Any]:
    return st.one_of(json_values, st.sampled_from(EDGE_DATES), st.integers(-(2**64), 2**64),
                     st.sampled_from(("9" * 30, "-9223372036854775809", "2024-01-01T00:00:00",
                                      "\x00", "%", "_", "\\", "'", "metadata.x")))


@st.composite
def where_trees(draw: st.DrawFn, entity: Entity, depth: int = 0) -> Any:
    fields = [*entity.fields, "metadata.colour", "metadata.", "metadata.A B", "nope", ""]
    if depth < 10 and draw(st.integers(0, 3)) == 0:
        node: dict[str, Any] = {
            "predicate": draw(st.sampled_from((*BRANCH_PREDICATES, "not", "AND"))),
            "operands": draw(st.lists(where_trees(entity, depth + 1), max_size=4))}
    else:
        node = {"predicate": draw(st.sampled_from((*LEAF_PREDICATES, "matches", ""))),
                "fieldPath": draw(st.one_of(st.sampled_from(fields), junk_text(20))),
                "value": draw(st.one_of(_values(), st.lists(_values(), max_size=6)))}
    if draw(st.integers(0, 6)) == 0:  # a stray member, or one missing
        if draw(st.booleans()):
            node[draw(st.sampled_from(("value", "operands", "fieldPath", "x")))] = \
                draw(json_values)
        else:
            node.pop(draw(st.sampled_from(sorted(node))))
    return node


def _text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value)


@st.composite
def keyset_params(draw: st.DrawFn, keyset: KeysetList) -> dict[str, str]:
    params = dict(keyset.params)
    entity = keyset.entity
    if draw(st.booleans()):
        params["where"] = _text(draw(st.one_of(
            where_trees(entity), json_values, junk_text(200), deep_json_texts(),
            huge(60_000, 70_000))))
    if draw(st.integers(0, 2)) == 0:
        order = st.fixed_dictionaries({
            "fieldPath": st.one_of(st.sampled_from([*entity.fields, "x"]), junk_text(16)),
            "direction": st.one_of(st.sampled_from(("ASC", "DESC", "desc", "up")),
                                   json_values)})
        params["order_by"] = _text(draw(st.one_of(order, st.lists(order, max_size=6),
                                                  json_values, junk_text(80))))
    if draw(st.booleans()):
        real = keyset.cursor
        cursor_value = st.one_of(
            st.just(real), mutated(real.encode()).map(lambda b: b.decode("latin-1")),
            st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
            json_values.map(lambda v: base64.urlsafe_b64encode(dumps(v).encode(
                "utf-8", "surrogatepass")).decode()),
            st.just(base64.urlsafe_b64encode(b'{"o":"x","v":[' + b"[" * 5000).decode()),
            json_values, huge(17_000, 20_000))
        cursor = draw(st.fixed_dictionaries({}, optional={
            "first": st.one_of(st.integers(-5, 200), json_values),
            "last": st.one_of(st.integers(-5, 200), json_values),
            "after": cursor_value, "before": cursor_value,
            "x": json_values}))
        params["cursor"] = _text(draw(st.one_of(st.just(cursor), json_values,
                                                junk_text(100))))
    if draw(st.integers(0, 3)) == 0:
        params["total"] = draw(st.one_of(st.sampled_from(("true", "false", "TRUE", "1", "")),
                                         junk_text(20)))
    if draw(st.integers(0, 8)) == 0:  # the offset language mixed in
        params[draw(st.sampled_from(("limit", "offset", "sort", "filter[name]")))] = "1"
    return {name: strip_surrogates(value) for name, value in params.items()}


def fuzz_keyset(fuzzer: Fuzzer, api: ApiFixture, examples: int) -> None:
    target = "where/order_by/cursor queries"

    def one(plan: tuple[KeysetList, dict[str, str]]) -> None:
        keyset, params = plan
        what = (keyset.name, params)
        # Raw: the query may be longer than an HTTP client agrees to send.
        r = fuzzer.raw(target, "GET", "/api" + keyset.path + "?" + urlencode(params),
                       [("Authorization", f"Bearer {api.token}")], what=what)
        if r is None:
            return
        try:
            body = json.loads(r.body)
        except ValueError:
            fuzzer.report.fail(f"{target}: {r.status} is not JSON for {shown(what)}: "
                               f"{r.body[:200]!r}")
            return
        keyset_asked = any(name in params for name in KEYSET_PARAMS)
        if r.status == 200:
            data = body.get("data", body)
            if keyset_asked and (not isinstance(data, dict) or "pageInfo" not in data):
                fuzzer.report.fail(f"{target}: 200 without a page for {shown(what)}")
        elif r.status == 400:
            if "error" not in body:
                fuzzer.report.fail(f"{target}: 400 without an error for {shown(what)}")
        elif r.status < 500:
            fuzzer.report.fail(f"{target}: {r.status} (400 expected) for {shown(what)}: "
                               f"{r.body[:200]!r}")

    plans = st.sampled_from(api.lists).flatmap(
        lambda k: st.tuples(st.just(k), keyset_params(k)))
    fuzzer.explore(target, plans, one, examples)


# -- Schemathesis ------------------------------------------------------------------------------

def _short_wait(value: Any) -> Any:
    if isinstance(value, list):
        return [_short_wait(v) for v in value]
    try:
        seconds = int(str(value))
    except ValueError:
        return value
    return MAX_FEED_WAIT if seconds > MAX_FEED_WAIT else value


def fuzz_schemathesis(fuzzer: Fuzzer, api: ApiFixture, examples: int) -> None:
    """Every operation of the served document, with positive and negative (schema-breaking)
    cases, ``examples`` of each per operation; checked: no answer is a 5xx."""
    import requests
    import schemathesis
    from schemathesis import GenerationMode

    target = "Schemathesis (JSON API)"
    base = fuzzer.server.url + "/api"
    schema = schemathesis.openapi.from_url(base + "/v1/openapi.json")
    headers = {"Authorization": f"Bearer {api.token}"}
    session = requests.Session()
    operations = 0
    def one(case: Any) -> None:
        if case.path == "/v1/storage/changes" and case.query and "wait" in case.query:
            case.query["wait"] = _short_wait(case.query["wait"])
        try:
            response = case.call(base_url=base, session=session, headers=headers, timeout=30)
        except requests.RequestException as exc:
            fuzzer.record(target, None, case.as_curl_command())
            fuzzer.report.fail(f"{target}: no answer ({exc!r}) for "
                               f"{case.as_curl_command()[:300]}")
            return
        fuzzer.record(target, response.status_code,
                      case.as_curl_command(headers=headers)
                      if response.status_code >= 500 else case.formatted_path,
                      seconds=float(response.elapsed), detail=response.text)

    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises: a broken document
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzzer.explore(target, operation.as_strategy(generation_mode=mode), one, examples,
                           salt=f"{operation.label} {mode.value}")
    fuzzer.report.figure("Schemathesis operations", operations)
