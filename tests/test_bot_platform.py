"""The bot platform's management API against a real gateway process: customers, bots with
their package buckets, a bot's users, conversations and the bots enabled in them, the
``bot/admin`` list, and bucket-scoped package keys (boto3, presigned URLs)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests._server import ROOT_ACCESS_KEY, ROOT_SECRET_KEY, GatewayProcess

API = "/api/v1"
LAYOUT = {".gbkb/", ".gbkb/docs/", ".gbkb/data/", ".gbdialog/", ".gbdialog/scripts/",
          ".gbdialog/tools/", ".gbtheme/", ".gbtheme/css/", ".gbtheme/images/", ".gbdrive/",
          ".gbdrive/attachments/", ".gbdrive/temp/"}
ALL = ["storage:read", "storage:write", "bots:read", "bots:write"]


def s3_client(url: str, access: str, secret: str) -> Any:
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}))


def client(server: GatewayProcess, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url + API, headers=headers, timeout=30)


def root_session(server: GatewayProcess) -> httpx.Client:
    with client(server) as anon:
        login = anon.post("/auth/login", json={"access_key": ROOT_ACCESS_KEY,
                                               "secret_key": ROOT_SECRET_KEY})
    assert login.status_code in (200, 201), login.text
    data = login.json()["data"]
    return client(server, data.get("token") or data.get("session_token"))


def add_user(root: httpx.Client, name: str, *permissions: str) -> str:
    """A new member and an API token of theirs."""
    assert root.post("/admin/users", json={"name": name}).status_code == 201
    return token_for(root, name, *permissions)


def token_for(root: httpx.Client, name: str, *permissions: str) -> str:
    made = root.post("/tokens", json={"name": uuid.uuid4().hex[:8], "user": name,
                                      "permissions": list(permissions)})
    assert made.status_code == 201, made.text
    return str(made.json()["data"]["token"])


def data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True and "data" in body
    return body["data"]


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return dict(body["error"])


@dataclass
class World:
    server: GatewayProcess
    root: httpx.Client  # an admin session (every permission)
    alice: httpx.Client
    bob: httpx.Client
    carol: httpx.Client
    alice_read: httpx.Client  # bots:read only
    admin_plain: httpx.Client  # the admin user, without the admin permission
    alice_keys: tuple[str, str]
    bot: dict[str, Any]  # alice's bot, made with a package key

    def s3(self, keys: tuple[str, str] = (ROOT_ACCESS_KEY, ROOT_SECRET_KEY)) -> Any:
        return s3_client(self.server.url, *keys)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = GatewayProcess(tmp_path_factory.mktemp("bots") / "data").start()
    clients: list[httpx.Client] = []
    try:
        root = root_session(server)
        tokens = {name: add_user(root, name, *ALL) for name in ("alice", "bob", "carol")}
        keys = data(root.post("/admin/users/alice/keys", json={}), 201)
        alice, bob, carol = (client(server, tokens[n]) for n in ("alice", "bob", "carol"))
        alice_read = client(server, token_for(root, "alice", "bots:read"))
        admin_plain = client(server, token_for(root, "admin", *ALL))
        clients = [root, alice, bob, carol, alice_read, admin_plain]
        bot = data(alice.post("/bots", json={
            "name": f"helpdesk-{uuid.uuid4().hex[:8]}", "description": "Answers tickets",
            "url": "https://bots.example.com/hook", "quota": {"bytes": 50_000_000,
                                                             "objects": 500},
            "s3Key": True, "team": "support"}), 201)
        yield World(server, root, alice, bob, carol, alice_read, admin_plain,
                    alice_keys=(keys["access_key"], keys["secret_key"]), bot=bot)
    finally:
        for c in clients:
            c.close()
        server.stop()


def new_bot(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": f"b-{uuid.uuid4().hex[:10]}", **fields}
    return dict(data(api.post("/bots", json=body), 201))


# -- envelope, authentication, permissions ------------------------------------------------------


def test_envelope_and_permissions(world: World) -> None:
    with client(world.server) as anon:
        body = error(anon.get("/bots"), 401, "UNAUTHORIZED")
    assert body["message"]
    error(world.alice_read.post("/bots", json={"name": "nope"}), 403, "FORBIDDEN")
    error(world.alice.post("/bots", content=b"{", headers={"content-type":
                                                            "application/json"}),
          400, "VALIDATION_ERROR")
    listed = world.alice_read.get("/bots")
    assert listed.json()["success"] is True and "pagination" in listed.json()


# -- customers -------------------------------------------------------------------------------


def test_customers(world: World) -> None:
    made = world.carol.post("/customers", json={"facebookId": "10154544223979636",
                                                "plan": "free"})
    first = data(made, 201)
    assert first["name"] == "carol" and first["bots"] == []
    assert first["externalId"] == first["facebookId"] == "10154544223979636"
    assert first["plan"] == "free"
    again = data(world.carol.post("/customers"), 200)  # create-or-return
    assert again["id"] == first["id"] and again["plan"] == "free"

    changed = data(world.carol.put(f"/customers/{first['id']}", json={
        "name": "James Morgan McGill", "email": "jimmy@example.com", "plan": "pro",
        "city": "Albuquerque"}))
    assert changed["name"] == "James Morgan McGill" and changed["email"] == "jimmy@example.com"
    assert changed["plan"] == "pro" and changed["city"] == "Albuquerque"
    assert changed["facebookId"] == "10154544223979636"
    dropped = data(world.carol.put(f"/customers/{first['id']}", json={"city": None}))
    assert "city" not in dropped and dropped["plan"] == "pro"
    assert data(world.carol.get(f"/customers/{first['id']}")) == dropped

    error(world.bob.get(f"/customers/{first['id']}"), 403, "FORBIDDEN")
    error(world.bob.put(f"/customers/{first['id']}", json={"name": "x"}), 403, "FORBIDDEN")
    error(world.carol.get(f"/customers/{uuid.uuid4()}"), 404, "NOT_FOUND")
    error(world.carol.put(f"/customers/{first['id']}", json={"bots": ["x"]}), 400,
          "VALIDATION_ERROR")
    error(world.carol.put(f"/customers/{first['id']}", json={"email": 5}), 400,
          "VALIDATION_ERROR")
    assert data(world.root.get(f"/customers/{first['id']}"))["id"] == first["id"]

    alice = data(world.alice.post("/customers"), 200)  # made with her first bot
    assert world.bot["id"] in alice["bots"] and world.bot["customerId"] == alice["id"]


# -- bots ----------------------------------------------------------------------------------------


def test_bot_creation_answer_package_and_quota(world: World) -> None:
    bot = world.bot
    assert bot["bucket"] == bot["name"] + ".gbai"
    assert bot["description"] == "Answers tickets" and bot["url"] == "https://bots.example.com/hook"
    assert bot["state"] == "enabled" and bot["admins"] == [] and bot["users"] == []
    assert len(bot["inviteCode"]) == 8 and bot["inviteCode"].isalnum()
    assert len(bot["secret"]) >= 40 and bot["team"] == "support"
    assert set(bot["s3Key"]) == {"accessKey", "secretKey"}
    assert bot["quota"]["bytes"] == 50_000_000 and bot["quota"]["objects"] == 500
    uuid.UUID(bot["id"])

    listing = world.s3().list_objects_v2(Bucket=bot["bucket"])
    assert {o["Key"] for o in listing["Contents"]} == LAYOUT
    assert all(o["Size"] == 0 for o in listing["Contents"])
    quota = data(world.alice.get(f"/admin/buckets/{bot['bucket']}/quota"))
    assert quota["max_bytes"] == 50_000_000 and quota["max_objects"] == 500
    assert quota["used_objects"] == 12
    owner = world.s3().get_bucket_acl(Bucket=bot["bucket"])["Owner"]
    assert owner["DisplayName"] == "alice"

    fetched = data(world.alice.get(f"/bots/{bot['id']}"))
    assert "secret" not in fetched and "s3Key" not in fetched
    assert fetched["inviteCode"] == bot["inviteCode"] and fetched["team"] == "support"


def test_bot_creation_errors(world: World) -> None:
    alice = world.alice
    error(alice.post("/bots", json={"name": world.bot["name"]}), 409, "CONFLICT")
    for bad in ("Bad_Name", "-lead", "trail-", "a" * 59, "", "dots.here"):
        error(alice.post("/bots", json={"name": bad}), 400, "VALIDATION_ERROR")
    error(alice.post("/bots", json={"description": "no name"}), 400, "VALIDATION_ERROR")
    error(alice.post("/bots", json={"name": "x1", "url": "ftp://example.com/"}), 400,
          "VALIDATION_ERROR")
    error(alice.post("/bots", json={"name": "x1", "quota": {"objects": 3}}), 400,
          "VALIDATION_ERROR")
    error(alice.post("/bots", json={"name": "x1", "s3Key": "yes"}), 400, "VALIDATION_ERROR")
    bob_customer = data(world.bob.post("/customers"), 201)
    error(alice.post("/bots", json={"name": "x1", "customerId": bob_customer["id"]}), 403,
          "FORBIDDEN")
    error(alice.post("/bots", json={"name": "x1", "customerId": str(uuid.uuid4())}), 404,
          "NOT_FOUND")

    # The bucket is somebody's already: 409, and no bot row is left behind.
    taken = f"taken-{uuid.uuid4().hex[:8]}"
    world.s3().create_bucket(Bucket=taken + ".gbai")
    error(alice.post("/bots", json={"name": taken}), 409, "CONFLICT")
    page = alice.get("/bots", params={"filter[name]": taken}).json()
    assert page["data"] == [] and page["pagination"]["total"] == 0

    # An administrator creates a bot for another customer; its bucket is that user's.
    made = new_bot(world.root, customerId=bob_customer["id"])
    assert made["customerId"] == bob_customer["id"]
    owner = world.s3().get_bucket_acl(Bucket=made["bucket"])["Owner"]
    assert owner["DisplayName"] == "bob"


def test_bot_read_update_and_special_cases(world: World) -> None:
    alice = world.alice
    bot = new_bot(alice, description="d", url="http://hooks.example.com/a")
    path = f"/bots/{bot['id']}"
    error(alice.get(path, params={"customerId": str(uuid.uuid4())}), 400, "VALIDATION_ERROR")
    assert data(alice.get(path, params={"customerId": bot["customerId"]}))["id"] == bot["id"]
    error(world.carol.get(path), 403, "FORBIDDEN")
    error(alice.get(f"/bots/{uuid.uuid4()}"), 404, "NOT_FOUND")

    merged = data(alice.put(path, json={"foo": "bar", "bar": "foo"}))
    assert merged["foo"] == "bar" and merged["bar"] == "foo"
    assert merged["customerId"] == bot["customerId"] and "secret" not in merged
    merged = data(alice.put(path, json={"foo": None, "description": "new",
                                        "state": "disabled"}))
    assert "foo" not in merged and merged["bar"] == "foo"
    assert merged["description"] == "new" and merged["state"] == "disabled"
    assert data(alice.put(path, json=merged))["id"] == bot["id"]  # what GET gave, sent back

    error(alice.put(path, json={"name": "renamed"}), 400, "VALIDATION_ERROR")
    error(alice.put(path, json={"bucket": "other.gbai"}), 400, "VALIDATION_ERROR")
    error(alice.put(path, json={"url": "not a url"}), 400, "VALIDATION_ERROR")
    error(alice.put(path, json={"state": "sleepy"}), 400, "VALIDATION_ERROR")
    error(alice.put(path, json={"inviteCode": "mine1234"}), 400, "VALIDATION_ERROR")
    error(alice.put(path, json={"secret": "guessable"}), 400, "VALIDATION_ERROR")
    error(world.carol.put(path, json={"foo": "x"}), 403, "FORBIDDEN")

    code = data(alice.put(path, json={"inviteCode": "new"}))["inviteCode"]
    assert code != bot["inviteCode"] and len(code) == 8
    renewed = alice.put(path, json={"secret": "new"})
    assert renewed.headers["cache-control"] == "no-store"
    assert data(renewed)["secret"] not in (None, bot["secret"])
    quota = data(alice.put(path, json={"quota": {"bytes": 1234567}}))["quota"]
    assert quota["bytes"] == 1234567


def test_bot_list_pagination(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    made = [new_bot(world.bob, name=f"p{tag}-{n}", kind=tag) for n in range(3)]
    data(world.bob.put(f"/bots/{made[1]['id']}", json={"state": "no-setup"}))
    page = world.bob.get("/bots", params={"limit": 2, "sort": "name", "order": "desc"})
    body = page.json()
    assert body["success"] is True and len(body["data"]) == 2
    assert body["pagination"]["limit"] == 2 and body["pagination"]["offset"] == 0
    assert body["pagination"]["order"] == "desc" and body["pagination"]["sort"] == "name"
    total = body["pagination"]["total"]
    assert total >= 3 and page.headers["x-total-count"] == str(total)
    names = [b["name"] for b in body["data"]]
    assert names == sorted(names, reverse=True)
    rest = world.bob.get("/bots", params={"limit": 2, "offset": 2, "sort": "name",
                                          "order": "desc"}).json()["data"]
    assert not {b["id"] for b in rest} & {b["id"] for b in body["data"]}

    only = world.bob.get("/bots", params={"filter[state]": "no-setup"}).json()
    assert [b["id"] for b in only["data"]] == [made[1]["id"]]
    assert world.bob.get("/bots", params={"filter[state]": "2"}).json() == only
    assert world.bob.get("/bots", params={"limit": 1000}).json()["pagination"]["limit"] == 100
    error(world.bob.get("/bots", params={"limit": 0}), 400, "VALIDATION_ERROR")
    error(world.bob.get("/bots", params={"sort": "colour"}), 400, "VALIDATION_ERROR")
    error(world.bob.get("/bots", params={"order": "up"}), 400, "VALIDATION_ERROR")
    error(world.bob.get("/bots", params={"filter[colour]": "red"}), 400, "VALIDATION_ERROR")
    # Each caller sees their own; an administrator sees all.
    mine = {b["id"] for b in world.carol.get("/bots", params={"limit": 100}).json()["data"]}
    assert not mine & {b["id"] for b in made}
    everything = world.root.get("/bots", params={"limit": 100}).json()["data"]
    assert {b["id"] for b in made} <= {b["id"] for b in everything}


def test_invite_code_makes_an_admin(world: World) -> None:
    alice, carol = world.alice, world.carol
    bot = new_bot(alice)
    path = f"/bots/{bot['id']}"
    owner = bot["customerId"]
    error(carol.put(path, json={"admins": "me", "inviteCode": "wrong123", "customerId": owner}),
          403, "FORBIDDEN")
    error(carol.put(path, json={"admins": "me", "inviteCode": bot["inviteCode"],
                                "customerId": str(uuid.uuid4())}), 400, "VALIDATION_ERROR")
    error(carol.put(path, json={"admins": "me", "inviteCode": bot["inviteCode"]}), 400,
          "VALIDATION_ERROR")
    error(carol.get(path), 403, "FORBIDDEN")

    joined = data(carol.put(path, json={"admins": "me", "inviteCode": bot["inviteCode"],
                                        "customerId": owner}))
    carol_customer = data(carol.post("/customers"))
    assert joined["admins"] == [carol_customer["id"]]
    assert data(carol.get(path))["id"] == bot["id"]
    assert data(carol.put(path, json={"description": "by an admin"}))["description"] == \
        "by an admin"
    assert bot["id"] in {b["id"] for b in carol.get("/bots").json()["data"]}
    error(carol.delete(path), 403, "FORBIDDEN")
    error(carol.put(path, json={"s3Key": True}), 403, "FORBIDDEN")

    # A new code invalidates the old one.
    data(alice.put(path, json={"inviteCode": "new"}))
    error(world.bob.put(path, json={"admins": "me", "inviteCode": bot["inviteCode"],
                                    "customerId": owner}), 403, "FORBIDDEN")


def test_delete_bot_keeps_bucket(world: World) -> None:
    bot = new_bot(world.alice)
    error(world.bob.delete(f"/bots/{bot['id']}"), 403, "FORBIDDEN")
    gone = world.alice.delete(f"/bots/{bot['id']}")
    assert data(gone) == {"id": bot["id"], "deleted": True, "bucket": bot["bucket"]}
    assert bot["bucket"] in gone.json()["message"] and "remains" in gone.json()["message"]
    world.s3().head_bucket(Bucket=bot["bucket"])
    error(world.alice.get(f"/bots/{bot['id']}"), 404, "NOT_FOUND")
    error(world.alice.delete(f"/bots/{bot['id']}"), 404, "NOT_FOUND")


# -- a bot's users ---------------------------------------------------------------------------


def test_bot_users(world: World) -> None:
    alice = world.alice
    bot = new_bot(alice)
    bot_id = bot["id"]
    made = alice.post("/users", json={"botId": bot_id, "customerId": bot["customerId"],
                                      "facebookId": "10154544223979636", "lang": "pt"})
    ann = data(made, 201)
    assert ann["botId"] == bot_id and ann["botStatus"] == "active"
    assert ann["facebookId"] == ann["externalId"] == "10154544223979636"
    assert ann["attributes"] == {"lang": "pt"}
    assert data(alice.post("/users", json={"botId": bot_id,
                                           "externalId": "10154544223979636"}))["id"] == ann["id"]
    others = [data(alice.post("/users", json={"botId": bot_id, "externalId": f"u{n}"}), 201)
              for n in range(3)]

    error(alice.post("/users", json={"externalId": "x"}), 400, "VALIDATION_ERROR")
    error(alice.post("/users", json={"botId": bot_id, "customerId": str(uuid.uuid4())}), 400,
          "VALIDATION_ERROR")
    error(alice.post("/users", json={"botId": bot_id, "botStatus": "asleep"}), 400,
          "VALIDATION_ERROR")
    error(alice.post("/users", json={"botId": str(uuid.uuid4())}), 404, "NOT_FOUND")
    error(world.carol.post("/users", json={"botId": bot_id}), 403, "FORBIDDEN")

    assert data(alice.get(f"/users/{ann['id']}", params={"botId": bot_id})) == ann
    error(alice.get(f"/users/{ann['id']}"), 400, "VALIDATION_ERROR")
    error(alice.get(f"/users/{ann['id']}", params={"botId": world.bot["id"]}), 404,
          "NOT_FOUND")
    error(world.carol.get(f"/users/{ann['id']}", params={"botId": bot_id}), 403, "FORBIDDEN")

    muted = data(alice.put("/users", json={"ids": [ann["id"], others[0]["id"]],
                                           "botId": bot_id,
                                           "update": {"botStatus": "muted"}}))
    assert [u["id"] for u in muted] == [ann["id"], others[0]["id"]]
    assert {u["botStatus"] for u in muted} == {"muted"}
    assert muted[0]["attributes"] == {"lang": "pt"}

    query = alice.get("/users", params={"botId": bot_id, "botStatus": "muted"}).json()
    assert {u["id"] for u in query["data"]} == {ann["id"], others[0]["id"]}
    assert query["pagination"]["total"] == 2
    active = alice.get("/users", params={"botId": bot_id, "filter[botStatus]": "active"})
    assert active.json()["pagination"]["total"] == 2
    one = alice.get("/users", params={"botId": bot_id, "limit": 1, "sort": "externalId",
                                      "order": "desc"}).json()
    assert len(one["data"]) == 1 and one["pagination"]["total"] == 4
    assert one["data"][0]["externalId"] == "u2"
    error(alice.get("/users"), 400, "VALIDATION_ERROR")
    error(alice.get("/users", params={"botId": bot_id, "botStatus": "sleepy"}), 400,
          "VALIDATION_ERROR")

    # All or nothing: one id that is not the bot's changes nobody.
    error(alice.put("/users", json={"ids": [others[1]["id"], str(uuid.uuid4())],
                                    "botId": bot_id, "update": {"botStatus": "muted"}}),
          404, "NOT_FOUND")
    assert data(alice.get(f"/users/{others[1]['id']}",
                          params={"botId": bot_id}))["botStatus"] == "active"
    error(alice.put("/users", json={"ids": [], "botId": bot_id, "update": {}}), 400,
          "VALIDATION_ERROR")

    single = data(alice.put(f"/users/{ann['id']}", json={"botId": bot_id,
                                                        "botStatus": "active",
                                                        "tier": "gold"}))
    assert single["botStatus"] == "active" and single["attributes"] == {"lang": "pt",
                                                                       "tier": "gold"}
    error(alice.put(f"/users/{ann['id']}", json={"tier": "x"}), 400, "VALIDATION_ERROR")
    assert set(data(alice.get(f"/bots/{bot_id}"))["users"]) == \
        {ann["id"], *(u["id"] for u in others)}


# -- conversations and the Talk bots API ------------------------------------------------------


def test_conversations_and_bots_in_them(world: World) -> None:
    alice, bob, carol, outsider = world.alice, world.bob, world.carol, world.admin_plain
    room = data(alice.post("/conversations", json={
        "name": "Support", "participants": [{"user": "bob", "role": "moderator"},
                                            {"user": "carol", "role": "user"}]}), 201)
    assert room["owner"] == "alice" and room["role"] == "owner" and room["bots"] == []
    assert {(p["user"], p["role"]) for p in room["participants"]} == {
        ("alice", "owner"), ("bob", "moderator"), ("carol", "user")}
    token = room["id"]
    assert data(carol.get(f"/conversations/{token}"))["role"] == "user"
    assert token in {c["id"] for c in carol.get("/conversations").json()["data"]}
    error(outsider.get(f"/conversations/{token}"), 404, "NOT_FOUND")
    error(alice.post("/conversations", json={"name": ""}), 400, "VALIDATION_ERROR")
    error(alice.post("/conversations", json={"name": "x", "participants": [
        {"user": "nobody-here", "role": "user"}]}), 400, "VALIDATION_ERROR")
    error(alice.post("/conversations", json={"name": "x", "participants": [
        {"user": "bob", "role": "owner"}]}), 400, "VALIDATION_ERROR")

    enabled_bot = new_bot(alice, description="helps")
    disabled_bot = new_bot(alice, state="disabled")
    hidden_bot = new_bot(alice, state="no-setup")
    base = f"/bot/{token}"

    listed = {b["id"]: b for b in data(bob.get(base, params={"limit": 100}))}
    assert listed[enabled_bot["id"]] == {"id": enabled_bot["id"], "name": enabled_bot["name"],
                                         "description": "helps", "state": 0}
    assert disabled_bot["id"] in listed and hidden_bot["id"] not in listed
    error(carol.get(base), 403, "FORBIDDEN")
    error(outsider.get(base), 404, "NOT_FOUND")
    error(bob.get("/bot/nosuchroom1"), 404, "NOT_FOUND")

    target = f"{base}/{enabled_bot['id']}"
    assert data(bob.post(target), 201)["state"] == 1
    assert data(bob.post(target), 200)["id"] == enabled_bot["id"]
    listed = {b["id"]: b for b in data(alice.get(base, params={"limit": 100}))}
    assert listed[enabled_bot["id"]]["state"] == 1
    assert enabled_bot["id"] in data(alice.get(f"/conversations/{token}"))["bots"]
    error(bob.post(f"{base}/{uuid.uuid4()}"), 400, "VALIDATION_ERROR")
    error(bob.post(f"{base}/{disabled_bot['id']}"), 400, "VALIDATION_ERROR")
    error(bob.post(f"{base}/{hidden_bot['id']}"), 400, "VALIDATION_ERROR")
    error(carol.post(target), 403, "FORBIDDEN")
    error(outsider.post(target), 404, "NOT_FOUND")
    error(bob.post(f"/bot/nosuchroom1/{enabled_bot['id']}"), 404, "NOT_FOUND")

    error(carol.delete(target), 403, "FORBIDDEN")
    error(outsider.delete(target), 404, "NOT_FOUND")
    error(bob.delete(f"{base}/{uuid.uuid4()}"), 400, "VALIDATION_ERROR")
    error(bob.delete(f"{base}/{hidden_bot['id']}"), 400, "VALIDATION_ERROR")
    assert data(bob.delete(target))["state"] == 0
    assert data(bob.delete(target))["state"] == 0  # not enabled: still 200
    assert data(alice.get(f"/conversations/{token}"))["bots"] == []

    # Participants: moderators manage them; users may only leave.
    error(carol.post(f"/conversations/{token}/participants", json={"user": "admin"}), 403,
          "FORBIDDEN")
    added = bob.post(f"/conversations/{token}/participants", json={"user": "admin"})
    assert ("admin", "user") in {(p["user"], p["role"]) for p in data(added, 201)
                                 ["participants"]}
    promoted = bob.post(f"/conversations/{token}/participants",
                        json={"user": "admin", "role": "moderator"})
    assert ("admin", "moderator") in {(p["user"], p["role"])
                                      for p in data(promoted, 200)["participants"]}
    assert data(outsider.get(base))  # a moderator now
    error(bob.post(f"/conversations/{token}/participants", json={"user": "alice",
                                                                 "role": "user"}),
          400, "VALIDATION_ERROR")
    error(bob.post(f"/conversations/{token}/participants", json={"user": "ghost"}), 400,
          "VALIDATION_ERROR")
    error(bob.post(f"/conversations/{token}/participants", json={"user": "carol",
                                                                 "role": "boss"}),
          400, "VALIDATION_ERROR")
    error(bob.delete(f"/conversations/{token}/participants/alice"), 400, "VALIDATION_ERROR")
    error(carol.delete(f"/conversations/{token}/participants/bob"), 403, "FORBIDDEN")
    removed = data(bob.delete(f"/conversations/{token}/participants/carol"))
    assert "carol" not in {p["user"] for p in removed["participants"]}
    error(carol.get(f"/conversations/{token}"), 404, "NOT_FOUND")
    error(bob.delete(f"/conversations/{token}/participants/carol"), 404, "NOT_FOUND")
    left = outsider.delete(f"/conversations/{token}/participants/admin")
    assert data(left) is None
    error(outsider.get(f"/conversations/{token}"), 404, "NOT_FOUND")


def test_bot_admin_list(world: World) -> None:
    error(world.alice.get("/bot/admin"), 403, "FORBIDDEN")
    error(world.admin_plain.get("/bot/admin"), 403, "FORBIDDEN")
    no_url = new_bot(world.alice)
    listed = {b["id"]: b for b in data(world.root.get("/bot/admin", params={"limit": 100}))}
    mine = listed[world.bot["id"]]
    url = world.bot["url"]
    assert mine == {"id": world.bot["id"], "name": world.bot["name"],
                    "description": "Answers tickets", "url": url,
                    "url_hash": "bot-" + hashlib.sha1(url.encode()).hexdigest(),
                    "state": 1, "error_count": 0, "last_error_date": None,
                    "last_error_message": None}
    assert listed[no_url["id"]]["url"] is None and listed[no_url["id"]]["url_hash"] is None
    page = world.root.get("/bot/admin", params={"limit": 1, "filter[state]": "1"}).json()
    assert len(page["data"]) == 1 and page["data"][0]["state"] == 1


# -- the package key ---------------------------------------------------------------------------


def test_scoped_key_reaches_its_package_alone(world: World) -> None:
    key = world.bot["s3Key"]
    package = world.bot["bucket"]
    scoped = world.s3((key["accessKey"], key["secretKey"]))
    alices = world.s3(world.alice_keys)
    other = f"plain-{uuid.uuid4().hex[:8]}"
    alices.create_bucket(Bucket=other)
    alices.put_object(Bucket=other, Key="secret.txt", Body=b"private")
    public = f"open-{uuid.uuid4().hex[:8]}"
    world.s3().create_bucket(Bucket=public, ACL="public-read")
    world.s3().put_object(Bucket=public, Key="hello.txt", Body=b"hi", ACL="public-read")

    scoped.put_object(Bucket=package, Key=".gbkb/docs/faq.txt", Body=b"Q&A")
    assert scoped.get_object(Bucket=package, Key=".gbkb/docs/faq.txt")["Body"].read() == b"Q&A"
    keys = {o["Key"] for o in scoped.list_objects_v2(Bucket=package)["Contents"]}
    assert ".gbkb/docs/faq.txt" in keys and keys >= LAYOUT
    assert [b["Name"] for b in scoped.list_buckets()["Buckets"]] == [package]
    # Alice's own key still reaches both buckets.
    assert alices.get_object(Bucket=package, Key=".gbkb/docs/faq.txt")["Body"].read() == b"Q&A"

    def denied(call: Any, **params: Any) -> None:
        with pytest.raises(ClientError) as caught:
            call(**params)
        assert caught.value.response["Error"]["Code"] == "AccessDenied", params

    denied(scoped.get_object, Bucket=other, Key="secret.txt")
    denied(scoped.put_object, Bucket=other, Key="x", Body=b"x")
    denied(scoped.list_objects_v2, Bucket=other)
    denied(scoped.get_object, Bucket=public, Key="hello.txt")
    denied(scoped.create_bucket, Bucket=f"new-{uuid.uuid4().hex[:8]}")
    denied(scoped.put_bucket_acl, Bucket=package, ACL="public-read")
    denied(scoped.delete_bucket, Bucket=package)
    denied(scoped.copy_object, Bucket=package, Key="stolen.txt",
           CopySource={"Bucket": other, "Key": "secret.txt"})

    inside = scoped.generate_presigned_url("get_object", Params={
        "Bucket": package, "Key": ".gbkb/docs/faq.txt"})
    assert httpx.get(inside).content == b"Q&A"
    outside = scoped.generate_presigned_url("get_object", Params={
        "Bucket": other, "Key": "secret.txt"})
    refused = httpx.get(outside)
    assert refused.status_code == 403 and b"AccessDenied" in refused.content
    upload = scoped.generate_presigned_url("put_object", Params={"Bucket": other, "Key": "y"})
    assert httpx.put(upload, content=b"y").status_code == 403
    # Browser form uploads (POST policy) too.
    for bucket, expected in ((other, 403), (package, 204)):
        form = scoped.generate_presigned_post(bucket, ".gbdrive/temp/form.txt")
        posted = httpx.post(form["url"], data=form["fields"],
                            files={"file": ("form.txt", b"from a form")})
        assert posted.status_code == expected, posted.text

    # The key cannot open a session that would reach everything.
    with client(world.server) as anon:
        login = anon.post("/auth/login", json={"access_key": key["accessKey"],
                                               "secret_key": key["secretKey"]})
    assert login.status_code == 401

    # A key minted later for the same package is scoped too.
    later = data(world.alice.put(f"/bots/{world.bot['id']}", json={"s3Key": True}))["s3Key"]
    second = world.s3((later["accessKey"], later["secretKey"]))
    assert [b["Name"] for b in second.list_buckets()["Buckets"]] == [package]
    denied(second.get_object, Bucket=other, Key="secret.txt")


# -- a package that cannot be made leaves nothing behind ---------------------------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway whose buckets hold 5 objects by default: fewer than the layout needs."""
    server = GatewayProcess(tmp_path_factory.mktemp("tight") / "data",
                            env_extra={"GATEWAY_QUOTA_BUCKET_OBJECTS": "5"}).start()
    try:
        yield server
    finally:
        server.stop()


def test_failed_creation_rolls_back(tight: GatewayProcess) -> None:
    with root_session(tight) as root, client(tight, add_user(root, "dana", *ALL)) as dana:
        s3 = s3_client(tight.url, ROOT_ACCESS_KEY, ROOT_SECRET_KEY)
        # A member may not lift the default; an administrator may.
        error(dana.post("/bots", json={"name": "roomy", "quota": {"objects": 100}}), 403,
              "FORBIDDEN")
        roomy = new_bot(root, quota={"objects": 100})
        assert len(s3.list_objects_v2(Bucket=roomy["bucket"])["Contents"]) == 12

        # The sixth folder marker exceeds the default quota: everything made is undone.
        failed = dana.post("/bots", json={"name": "cramped"})
        assert failed.status_code == 507 and failed.json()["success"] is False
        with pytest.raises(ClientError) as caught:
            s3.head_bucket(Bucket="cramped.gbai")
        assert caught.value.response["Error"]["Code"] == "404"
        assert data(root.get("/bots", params={"filter[name]": "cramped"})) == []
        # The name is free again.
        error(dana.post("/bots", json={"name": "cramped"}), 507, "INSUFFICIENT_STORAGE")
