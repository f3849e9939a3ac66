"""The management lists' keyset pages (``cursor``, ``where``, ``order_by``, ``total``) against
a real gateway process: ``/api/v1/bots``, ``/users?botId=``, ``/bot/admin`` and
``/conversations``. Every page walked forwards and backwards must be a brute-force sort and
filter of the endpoint's own offset list, item for item; cursors must hold while rows are
added; callers see only what they may; the two paging languages do not mix."""

from __future__ import annotations

import functools
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests._server import ROOT_ACCESS_KEY, ROOT_SECRET_KEY, GatewayProcess

API = "/api/v1"
ALL = ["storage:read", "storage:write", "bots:read", "bots:write"]
#: fieldPaths whose values are ISO 8601 date-times in the answers.
DATETIMES = {"createdAt"}

Item = dict[str, Any]
Order = list[tuple[str, bool]]  # (fieldPath, descending)


def client(server: GatewayProcess, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url + API, headers=headers, timeout=30)


def data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


def invalid(response: httpx.Response) -> dict[str, Any]:
    """A 400 VALIDATION_ERROR in the envelope's shape; its details."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["message"]
    return dict(body["error"]["details"])


@dataclass
class World:
    server: GatewayProcess
    root: httpx.Client  # an administrator's session
    alice: httpx.Client
    bob: httpx.Client
    carol: httpx.Client  # owns no bot, has no customer
    alice_bots: list[Item]
    bob_bots: list[Item]
    failing: list[Item]  # root's bots whose webhooks failed
    users_bot: Item  # alice's bot with chat users


def _session(server: GatewayProcess) -> httpx.Client:
    with client(server) as anon:
        login = anon.post("/auth/login", json={"access_key": ROOT_ACCESS_KEY,
                                               "secret_key": ROOT_SECRET_KEY})
    assert login.status_code in (200, 201), login.text
    found = login.json()["data"]
    return client(server, found.get("token") or found.get("session_token"))


def _member(server: GatewayProcess, root: httpx.Client, name: str) -> httpx.Client:
    assert root.post("/admin/users", json={"name": name}).status_code == 201
    made = data(root.post("/tokens", json={"name": "t", "user": name, "permissions": ALL}),
                201)
    return client(server, made["token"])


WORDS = ["alpha", "beta", "gamma", "delta", "omega", "zeta", "kappa", "sigma"]


def _bot_fields(n: int, tag: str) -> dict[str, Any]:
    """Varied bots: descriptions and URLs sometimes absent, every state, names that do
    not sort as they were made."""
    fields: dict[str, Any] = {
        "name": f"{random.choice(WORDS)}-{tag}-{uuid.uuid4().hex[:6]}",
        "state": ("enabled", "disabled", "no-setup")[n % 3]}
    if n % 4:
        fields["description"] = f"{random.choice(WORDS).title()} helper {n % 5}"
    if n % 5 in (1, 2):
        fields["url"] = f"https://hooks.example.com/{random.choice(WORDS)}/{n}"
    return fields


def _create_bots(api: httpx.Client, count: int, tag: str) -> list[Item]:
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda n: data(api.post("/bots", json=_bot_fields(n, tag)), 201),
                             range(count)))
    return made


def _fail_webhooks(root: httpx.Client, count: int) -> list[Item]:
    """Root's bots whose webhook refuses connections: a change in their package makes
    ``bot/admin`` show an error count and date. Disabled afterwards, so they stay put."""
    made = [data(root.post("/bots", json={"name": f"fail-{uuid.uuid4().hex[:8]}",
                                          "url": "http://127.0.0.1:1/hook"}), 201)
            for _ in range(count)]
    for bot in made:
        put = root.put(f"/storage/buckets/{bot['bucket']}/objects/.gbkb/docs/a.txt",
                       content=b"hello", headers={"Content-Type": "text/plain"})
        assert put.status_code in (200, 201), put.text
    deadline = time.monotonic() + 20
    ids = {b["id"] for b in made}
    while True:
        listed = data(root.get("/bot/admin", params={"limit": 100}))
        if all(b["error_count"] > 0 for b in listed if b["id"] in ids):
            break
        assert time.monotonic() < deadline, "the failing webhooks were never attempted"
        time.sleep(0.2)
    for bot in made:
        data(root.put(f"/bots/{bot['id']}", json={"state": "disabled"}))
    return made


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = GatewayProcess(tmp_path_factory.mktemp("botlists") / "data").start()
    clients: list[httpx.Client] = []
    try:
        root = _session(server)
        clients.append(root)
        alice, bob, carol = (_member(server, root, n) for n in ("alice", "bob", "carol"))
        clients += [alice, bob, carol]
        random.seed(7)
        alice_bots = _create_bots(alice, 24, "a")
        bob_bots = _create_bots(bob, 5, "b")
        failing = _fail_webhooks(root, 2)
        users_bot = alice_bots[0]
        statuses = ("active", "muted")
        for n in range(36):
            user: dict[str, Any] = {"botId": users_bot["id"], "botStatus": statuses[n % 3 == 0]}
            if n % 4:
                user["externalId"] = str(random.randrange(10 ** 6))
            data(alice.post("/users", json=user), 201)
        # Conversations alice owns (bob a moderator or a user in some), and bob's with her.
        for n in range(10):
            people = [] if n % 3 == 0 else [{"user": "bob",
                                            "role": ("moderator", "user")[n % 2]}]
            data(alice.post("/conversations", json={"name": f"{random.choice(WORDS)} {n}",
                                                    "participants": people}), 201)
        for n in range(4):
            data(bob.post("/conversations", json={
                "name": f"{random.choice(WORDS)} bob {n}",
                "participants": [{"user": "alice", "role": ("moderator", "user")[n % 2]}]}),
                201)
        yield World(server, root, alice, bob, carol, alice_bots, bob_bots, failing, users_bot)
    finally:
        for c in clients:
            c.close()
        server.stop()


# -- brute force -------------------------------------------------------------------------------


def offset_list(api: httpx.Client, path: str, **params: Any) -> list[Item]:
    """Everything an offset list lists, page by page."""
    items: list[Item] = []
    while True:
        body = api.get(path, params={**params, "limit": 100, "offset": len(items)}).json()
        assert body["success"] is True, body
        items += body["data"]
        if len(items) >= body["pagination"]["total"]:
            return items


def _value(item: Item, path: str) -> Any:
    value = item[path]
    if path in DATETIMES and value is not None:
        return datetime.fromisoformat(value)
    return value


def _cmp(a: Any, b: Any) -> int:
    """NULL is the smallest value."""
    if a == b:
        return 0
    if a is None:
        return -1
    if b is None:
        return 1
    return -1 if a < b else 1


def brute_sort(items: list[Item], order: Order) -> list[Item]:
    keys = list(order)
    if not any(name == "id" for name, _desc in keys):
        keys.append(("id", keys[-1][1] if keys else False))

    def compare(x: Item, y: Item) -> int:
        for name, descending in keys:
            found = _cmp(_value(x, name), _value(y, name))
            if found:
                return -found if descending else found
        return 0

    return sorted(items, key=functools.cmp_to_key(compare))


def matches(item: Item, node: dict[str, Any]) -> bool:
    p = node["predicate"]
    if p in ("and", "or"):
        results = (matches(item, child) for child in node["operands"])
        return all(results) if p == "and" else any(results)
    path = node["fieldPath"]
    v = _value(item, path)
    w = node.get("value")
    if path in DATETIMES and isinstance(w, str):
        w = datetime.fromisoformat(w)
    if p == "is_null":
        return v is None
    if p == "is_not_null":
        return v is not None
    if p == "not_eq":
        return v is None or v != w
    if v is None:
        return False
    checks: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, b: bool(a == b), "gt": lambda a, b: bool(a > b),
        "gte": lambda a, b: bool(a >= b), "lt": lambda a, b: bool(a < b),
        "lte": lambda a, b: bool(a <= b), "in": lambda a, b: a in b,
        "like": lambda a, b: b in a, "starts_with": lambda a, b: a.startswith(b)}
    return checks[p](v, w)


def expected(items: list[Item], where: dict[str, Any] | None, order: Order) -> list[Item]:
    return brute_sort([i for i in items if where is None or matches(i, where)], order)


# -- walking keyset pages ----------------------------------------------------------------------


def keyset(api: httpx.Client, path: str, params: dict[str, Any] | None = None, *,
           where: dict[str, Any] | None = None, order: Order | None = None,
           cursor: dict[str, Any] | None = None, total: bool = False) -> dict[str, Any]:
    """One keyset page's ``data``."""
    query = dict(params or {})
    if where is not None:
        query["where"] = json.dumps(where)
    if order is not None:
        query["order_by"] = json.dumps([{"fieldPath": f, "direction": "DESC" if d else "ASC"}
                                        for f, d in order])
    if cursor is not None:
        query["cursor"] = json.dumps(cursor)
    if total:
        query["total"] = "true"
    found: dict[str, Any] = data(api.get(path, params=query))
    assert set(found) == {"items", "pageInfo"}
    return found


def walk(api: httpx.Client, path: str, params: dict[str, Any] | None = None, *,
         where: dict[str, Any] | None = None, order: Order | None = None, size: int = 7,
         backwards: bool = False) -> list[Item]:
    """Every item, page by page (from the end with ``last``/``before`` when
    ``backwards``), checking each page's size, flags and cursors on the way."""
    pages: list[list[Item]] = []
    cursor: dict[str, Any] = {"last" if backwards else "first": size}
    while True:
        page = keyset(api, path, params, where=where, order=order, cursor=cursor)
        info, items = page["pageInfo"], page["items"]
        assert info["total"] == -1
        more = info["hasPreviousPage"] if backwards else info["hasNextPage"]
        behind = info["hasNextPage"] if backwards else info["hasPreviousPage"]
        assert behind == bool(pages), info
        assert len(items) == size or not more, (len(items), info)
        if items:
            assert info["startCursor"] and info["endCursor"]
        else:
            assert info["startCursor"] is None and info["endCursor"] is None
        pages.append(items)
        if not more:
            break
        cursor = {"last": size, "before": info["startCursor"]} if backwards else \
            {"first": size, "after": info["endCursor"]}
    if backwards:
        pages.reverse()
    return [item for page in pages for item in page]


def check(api: httpx.Client, path: str, everything: list[Item],
          params: dict[str, Any] | None = None, *, where: dict[str, Any] | None = None,
          order: Order | None = None, default: Order | None = None, size: int = 7) -> None:
    """Forwards, backwards and the total agree with the brute force of ``everything``."""
    want = expected(everything, where, order if order is not None else (default or []))
    ids = [i["id"] for i in want]
    forwards = walk(api, path, params, where=where, order=order, size=size)
    assert [i["id"] for i in forwards] == ids, (where, order)
    assert forwards == want  # the offset list's items, field for field
    backwards = walk(api, path, params, where=where, order=order, size=size,
                     backwards=True)
    assert [i["id"] for i in backwards] == ids, (where, order)
    counted = keyset(api, path, params, where=where, order=order, total=True)["pageInfo"]
    assert counted["total"] == len(want)


def leaf(path: str, predicate: str, value: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = {"fieldPath": path, "predicate": predicate}
    if value is not None:
        node["value"] = value
    return node


def branch(predicate: str, *operands: dict[str, Any]) -> dict[str, Any]:
    return {"predicate": predicate, "operands": list(operands)}


# -- the tests ---------------------------------------------------------------------------------


def test_bots_keyset_matches_brute_force(world: World) -> None:
    api = world.alice
    everything = offset_list(api, "/bots")
    assert {b["id"] for b in everything} == {b["id"] for b in world.alice_bots}
    created = sorted(datetime.fromisoformat(b["createdAt"]) for b in everything)
    middle = created[len(created) // 2].isoformat()
    a_name = everything[3]["name"]
    cases: list[tuple[dict[str, Any] | None, Order | None]] = [
        (None, None),
        (None, [("name", True)]),
        (branch("and", leaf("state", "eq", "enabled"), leaf("description", "is_not_null")),
         [("description", False), ("name", True)]),
        (branch("or", leaf("name", "starts_with", a_name.split("-")[0]),
                leaf("description", "like", "elper 3"), leaf("url", "is_null")),
         [("url", True)]),
        (leaf("state", "in", ["disabled", "no-setup"]), [("state", False), ("createdAt", True)]),
        (branch("and", leaf("createdAt", "gte", middle), leaf("name", "not_eq", a_name)),
         [("createdAt", True)]),
        (leaf("description", "not_eq", everything[1]["description"] or "x"),
         [("description", True), ("id", False)]),
        (branch("or", leaf("url", "like", "gamma"),
                branch("and", leaf("name", "lt", a_name), leaf("bucket", "gt", "d"))),
         [("bucket", False)]),
        (leaf("customerId", "eq", everything[0]["customerId"]), [("customerId", False)]),
        (leaf("name", "eq", "nothing-like-it"), None),
    ]
    for where, order in cases:
        check(api, "/bots", everything, where=where, order=order,
              default=[("createdAt", False)])
    # errorCount: not shown by /bots, but it filters and sorts.
    assert keyset(api, "/bots", where=leaf("errorCount", "gt", 0))["items"] == []
    assert len(walk(api, "/bots", where=leaf("errorCount", "eq", "0"),
                    order=[("errorCount", True)])) == len(everything)


def test_page_flags_and_total(world: World) -> None:
    api = world.alice
    count = len(world.alice_bots)
    first = keyset(api, "/bots", cursor={"first": 5}, total=True)
    info = first["pageInfo"]
    assert len(first["items"]) == 5 and info["total"] == count
    assert info["hasNextPage"] is True and info["hasPreviousPage"] is False
    # total=false is a keyset page too, with total -1.
    assert keyset(api, "/bots", params={"total": "false"})["pageInfo"]["total"] == -1
    assert len(keyset(api, "/bots", params={"total": "false"})["items"]) == 20  # default
    last = keyset(api, "/bots", cursor={"last": 5})
    assert last["pageInfo"]["hasNextPage"] is False
    assert last["pageInfo"]["hasPreviousPage"] is True
    everything = brute_sort(offset_list(api, "/bots"), [("createdAt", False)])
    assert last["items"] == everything[-5:]
    # After the last row: nothing, but something before it.
    after = keyset(api, "/bots", cursor={"after": last["pageInfo"]["endCursor"]})
    assert after["items"] == [] and after["pageInfo"]["hasPreviousPage"] is True
    assert after["pageInfo"]["hasNextPage"] is False
    # A page in the middle has both neighbours.
    middle = keyset(api, "/bots", cursor={"first": 5, "after": first["pageInfo"]["endCursor"]})
    assert middle["items"] == everything[5:10]
    assert middle["pageInfo"]["hasNextPage"] and middle["pageInfo"]["hasPreviousPage"]
    back = keyset(api, "/bots", cursor={"last": 5,
                                        "before": middle["pageInfo"]["startCursor"]})
    assert back["items"] == everything[:5] and back["pageInfo"]["hasPreviousPage"] is False
    assert back["pageInfo"]["hasNextPage"] is True
    # The where narrows the total, not the paging.
    narrowed = keyset(api, "/bots", where=leaf("state", "eq", "no-setup"), total=True)
    assert narrowed["pageInfo"]["total"] == sum(
        1 for b in everything if b["state"] == "no-setup") > 0


def test_members_see_only_their_bots(world: World) -> None:
    bob = keyset(world.bob, "/bots", cursor={"first": 100}, total=True)
    assert {b["id"] for b in bob["items"]} == {b["id"] for b in world.bob_bots}
    assert bob["pageInfo"]["total"] == len(world.bob_bots)
    alice = walk(world.alice, "/bots", size=10)
    assert not {b["id"] for b in alice} & {b["id"] for b in world.bob_bots}
    carol = keyset(world.carol, "/bots", total=True)
    assert carol["items"] == [] and carol["pageInfo"]["total"] == 0
    assert carol["pageInfo"]["hasNextPage"] is False
    assert carol["pageInfo"]["startCursor"] is None
    # An administrator sees every bot.
    everyone = walk(world.root, "/bots", size=25)
    assert {b["id"] for b in everyone} == {
        b["id"] for b in world.alice_bots + world.bob_bots + world.failing}
    failing = walk(world.root, "/bots", where=leaf("errorCount", "gt", 0))
    assert {b["id"] for b in failing} == {b["id"] for b in world.failing}
    # bot/admin stays an administrator's list, keyset or not.
    assert world.alice.get("/bot/admin", params={"total": "true"}).status_code == 403
    # A bot's users are its owner's and admins' only.
    assert world.bob.get("/users", params={"botId": world.users_bot["id"],
                                           "total": "true"}).status_code == 403


def test_bot_admin_keyset(world: World) -> None:
    api = world.root
    everything = offset_list(api, "/bot/admin")
    assert len(everything) == len(world.alice_bots) + len(world.bob_bots) + len(world.failing)
    failing = {b["id"] for b in world.failing}
    assert {b["id"] for b in everything if b["error_count"] > 0} == failing
    cases: list[tuple[dict[str, Any] | None, Order | None]] = [
        (None, None),
        (leaf("state", "eq", 1), [("error_count", True), ("name", False)]),
        (leaf("state", "in", [0, 2]), [("state", True), ("url", False)]),
        (leaf("error_count", "gte", 1), [("last_error_date", True)]),
        (leaf("last_error_date", "is_null"), [("description", True)]),
        (branch("or", leaf("last_error_date", "gt", 0), leaf("url", "starts_with", "https")),
         [("last_error_date", False), ("url", True)]),
        (leaf("last_error_message", "is_not_null"), [("last_error_message", False)]),
    ]
    for where, order in cases:
        check(api, "/bot/admin", everything, where=where, order=order,
              default=[("name", False)])
    # Numbers may come as decimal strings; the Talk shape's state is a number, not a word.
    assert walk(api, "/bot/admin", where=leaf("state", "in", ["0", "2"])) == walk(
        api, "/bot/admin", where=leaf("state", "in", [0, 2]))
    details = invalid(api.get("/bot/admin", params={
        "where": json.dumps(leaf("state", "eq", "enabled"))}))
    assert details["field"] == "where.value"


def test_bot_users_keyset(world: World) -> None:
    api, bot_id = world.alice, world.users_bot["id"]
    params = {"botId": bot_id}
    everything = offset_list(api, "/users", **params)
    assert len(everything) == 36
    some = next(u["externalId"] for u in everything if u["externalId"])
    cases: list[tuple[dict[str, Any] | None, Order | None]] = [
        (None, None),
        (leaf("botStatus", "eq", "muted"), [("externalId", True)]),
        (leaf("externalId", "is_null"), [("createdAt", True)]),
        (branch("or", leaf("externalId", "starts_with", "1"), leaf("externalId", "gt", "5")),
         [("externalId", False)]),
        (branch("and", leaf("facebookId", "not_eq", some), leaf("botStatus", "not_eq", "x")),
         [("botStatus", False), ("facebookId", True)]),
        (leaf("customerId", "eq", world.users_bot["customerId"]), [("id", True)]),
    ]
    for where, order in cases:
        check(api, "/users", everything, params, where=where, order=order,
              default=[("createdAt", False)], size=8)
    # The scope parameters still apply: botId is required, customerId checked.
    assert invalid(api.get("/users", params={"total": "true"}))["field"] == "botId"
    assert invalid(api.get("/users", params={**params, "customerId": "someone-else",
                                             "total": "true"}))["field"] == "customerId"


def test_conversations_keyset_and_offset(world: World) -> None:
    api = world.alice
    everything = offset_list(api, "/conversations")
    assert len(everything) == 14
    assert {c["role"] for c in everything} == {"owner", "moderator", "user"}
    cases: list[tuple[dict[str, Any] | None, Order | None]] = [
        (None, None),
        (None, [("name", False)]),
        (leaf("role", "in", ["moderator", "user"]), [("owner", True), ("createdAt", False)]),
        (branch("and", leaf("owner", "eq", "alice"), leaf("name", "like", "a")),
         [("role", False), ("name", True)]),
    ]
    for where, order in cases:
        check(api, "/conversations", everything, where=where, order=order,
              default=[("createdAt", False)], size=3)
    # The offset list, now paged by SQL, sorts and filters as it always did.
    users = [c for c in everything if c["role"] == "user"]
    want = brute_sort(users, [("owner", True)])
    got = api.get("/conversations", params={"sort": "owner", "order": "desc",
                                            "filter[role]": "user", "limit": 2, "offset": 1})
    body = got.json()
    assert body["data"] == want[1:3]
    assert body["pagination"] == {"limit": 2, "offset": 1, "total": len(users),
                                  "sort": "owner", "order": "desc"}
    assert got.headers["x-total-count"] == str(len(users))
    by_name = offset_list(api, "/conversations", sort="name")
    assert by_name == brute_sort(everything, [("name", False)])
    assert offset_list(world.carol, "/conversations") == []


def test_parameters_do_not_mix(world: World) -> None:
    api = world.alice
    where = json.dumps(leaf("state", "eq", "enabled"))
    details = invalid(api.get("/bots", params={"where": where, "limit": 5}))
    assert details["field"] == "limit"
    for path, params in [
        ("/bots", {"cursor": json.dumps({"first": 2}), "filter[state]": "enabled"}),
        ("/bots", {"order_by": "[]", "sort": "name"}),
        ("/bot/admin", {"total": "true", "offset": "0"}),
        ("/conversations", {"total": "true", "order": "desc"}),
        ("/users", {"botId": world.users_bot["id"], "where": where, "botStatus": "muted"}),
    ]:
        response = (world.root if path == "/bot/admin" else api).get(path, params=params)
        details = invalid(response)
        message = response.json()["error"]["message"]
        assert "cursor/where/order_by/total" in message and "limit/offset" in message
        assert details["field"] in params and details["field"] not in (
            "where", "cursor", "order_by", "total")


def test_bad_queries_name_their_part(world: World) -> None:
    api = world.alice

    def part(**params: str) -> str:
        return str(invalid(api.get("/bots", params=params))["field"])

    ok = leaf("name", "eq", "x")
    assert part(where=json.dumps(branch("and", ok, leaf("colour", "eq", "red")))) == \
        "where.operands[1].fieldPath"
    assert part(where=json.dumps({**branch("and", ok), "value": "25"})) == "where.value"
    assert part(where=json.dumps(leaf("name", "sounds_like", "x"))) == "where.predicate"
    assert part(where=json.dumps(leaf("createdAt", "gt", "yesterday"))) == "where.value"
    assert part(where=json.dumps(leaf("createdAt", "like", "2024"))) == "where.predicate"
    assert part(where=json.dumps(leaf("name", "in", []))) == "where.value"
    assert part(where="{not json") == "where"
    assert part(order_by=json.dumps([{"fieldPath": "colour"}])) == "order_by[0].fieldPath"
    assert part(order_by=json.dumps([{"fieldPath": "name", "direction": "UP"}])) == \
        "order_by[0].direction"
    assert part(cursor=json.dumps({"first": 101})) == "cursor.first"
    assert part(cursor=json.dumps({"first": 2, "after": "bm9wZQ"})) == "cursor.after"
    assert part(total="maybe") == "total"
    details = invalid(api.get("/bots", params={"where": json.dumps(leaf("x", "eq", "y"))}))
    assert "reason" in details and "unknown fieldPath" in details["reason"]
    # A cursor belongs to its endpoint and its order.
    end = keyset(api, "/bots", cursor={"first": 2})["pageInfo"]["endCursor"]
    assert part(cursor=json.dumps({"after": end}), order_by=json.dumps(
        [{"fieldPath": "name"}])) == "cursor.after"
    elsewhere = world.root.get("/bot/admin", params={"cursor": json.dumps({"after": end})})
    assert invalid(elsewhere)["field"] == "cursor.after"


def test_cursors_hold_while_rows_are_added(world: World) -> None:
    """Walking a bot's users by externalId while more arrive on both sides of the cursor:
    every user present at the start is met exactly once, in order, and the rows added
    behind the cursor never show up."""
    api = world.alice
    bot = data(api.post("/bots", json={"name": f"stable-{uuid.uuid4().hex[:8]}"}), 201)
    params = {"botId": bot["id"]}

    def add(external: str) -> str:
        return str(data(api.post("/users", json={**params, "externalId": external}),
                        201)["id"])

    start = {add(f"{n:04d}") for n in range(0, 400, 10)}
    order: Order = [("externalId", False)]
    seen: list[Item] = []
    added_behind: set[str] = set()
    cursor: dict[str, Any] = {"first": 6}
    while True:
        page = keyset(api, "/users", params, order=order, cursor=cursor)
        seen += page["items"]
        info = page["pageInfo"]
        if not info["hasNextPage"]:
            break
        boundary = page["items"][-1]["externalId"]
        tail = uuid.uuid4().hex[:6]
        added_behind.add(add(f"{int(boundary[:4]) - 1:04d}~{tail}"))
        add(f"{boundary}-{tail}")  # just ahead: the next page starts with it
        cursor = {"first": 6, "after": info["endCursor"]}
    ids = [u["id"] for u in seen]
    assert len(ids) == len(set(ids))
    assert start <= set(ids)
    assert not added_behind & set(ids)
    assert seen == brute_sort(seen, order)
    assert len(seen) > len(start)


def test_cursors_hold_among_ties(world: World) -> None:
    """Conversations that share a name are told apart by id: new ones with that name land
    on either side of the cursor, and none present at the start is skipped or repeated."""
    api = world.bob
    name = f"standup {uuid.uuid4().hex[:6]}"

    def add() -> str:
        return str(data(api.post("/conversations", json={"name": name}), 201)["id"])

    start = {add() for _ in range(12)}
    where, order = leaf("name", "eq", name), [("name", True)]
    seen: list[Item] = []
    cursor: dict[str, Any] = {"first": 4}
    while True:
        page = keyset(api, "/conversations", where=where, order=order, cursor=cursor)
        seen += page["items"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        add()
        add()
        cursor = {"first": 4, "after": page["pageInfo"]["endCursor"]}
    ids = [c["id"] for c in seen]
    assert len(ids) == len(set(ids)) and start <= set(ids)
    assert ids == sorted(ids, reverse=True)  # the tie-breaker follows the last direction
