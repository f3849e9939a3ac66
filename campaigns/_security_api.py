"""The isolation matrix's JSON channels: the JSON API (sessions and API tokens), dead
credentials on it, the change feed, and the web console (a static page over the JSON
API: its login, what a member's session shows, the admin views it must not open)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import httpx

from campaigns._security_matrix import PART, Cell, Op, run_cells, who
from campaigns._security_world import (
    DOC,
    JSON_DENIED,
    JSON_UNAUTHORIZED,
    Matrix,
    Outcome,
    Tenant,
    World,
    http_outcome,
)

# -- the JSON API and the change feed ---------------------------------------------------------


def _objects(c: Cell) -> str:
    return f"/storage/buckets/{c.bucket}/objects"


def _presigned_works(response: httpx.Response, body: bytes | None) -> Outcome:
    """A presign answer's outcome; a URL handed out must also work."""
    out = http_outcome(response)
    if not out.ok:
        return out
    url = response.json()["url"]
    if body is None:
        return out
    if httpx.get(url).content != body:
        return Outcome(200, "MISMATCH", "the presigned URL did not fetch the object")
    return out


def json_ops(world: World, kind: str) -> list[Op]:
    def cl(a: Tenant) -> httpx.Client:
        return a.client(kind)

    def grants(c: Cell) -> Any:
        return world.admin.get(f"/admin/buckets/{c.bucket}/grants").json()["data"]

    def part_path(c: Cell) -> str:
        key, upload_id, _ = c.upload
        return f"{_objects(c)}/{key}/multipart/{upload_id}"

    def presign_part(a: Tenant, c: Cell) -> Outcome:
        key, upload_id, _ = c.upload
        return http_outcome(cl(a).post(f"{_objects(c)}/{key}/presign", json={
            "operation": "PUT", "upload_id": upload_id, "part_number": 2}))

    def sees(a: Tenant, c: Cell) -> Outcome:
        names = {b["name"] for b in cl(a).get("/storage/buckets").json()["buckets"]}
        return Outcome(200 if c.bucket in names else 403, "" if c.bucket in names
                       else "AccessDenied")

    return [
        Op("list buckets shows the bucket", sees),
        Op("list objects", lambda a, c: http_outcome(cl(a).get(_objects(c)))),
        Op("get object", lambda a, c: http_outcome(cl(a).get(f"{_objects(c)}/{DOC}"),
                                                   body=c.target.doc)),
        Op("head object", lambda a, c: http_outcome(cl(a).head(f"{_objects(c)}/{DOC}")),
           head=True),
        Op("search", lambda a, c: http_outcome(cl(a).get(
            f"/storage/buckets/{c.bucket}/search", params={"where": json.dumps(
                {"fieldPath": "key", "predicate": "eq", "value": DOC})}))),
        Op("put object", lambda a, c: http_outcome(cl(a).put(
            f"{_objects(c)}/{c.key}", content=b"json")), lambda c: c.body(c.key)),
        Op("delete object", lambda a, c: http_outcome(cl(a).delete(
            f"{_objects(c)}/{c.victim}")), lambda c: c.body(c.victim)),
        Op("copy out of the bucket", lambda a, c: http_outcome(cl(a).post(
            f"{_objects(c)}/{DOC}/copy", json={"destination_bucket": c.own,
                                               "destination_key": c.key})),
           lambda c: c.body(c.key, c.own)),
        Op("copy into the bucket", lambda a, c: http_outcome(cl(a).post(
            f"/storage/buckets/{c.own}/objects/{DOC}/copy",
            json={"destination_bucket": c.bucket, "destination_key": c.key})),
           lambda c: c.body(c.key)),
        Op("presign GET", lambda a, c: _presigned_works(cl(a).post(
            f"{_objects(c)}/{DOC}/presign", json={"operation": "GET"}), c.target.doc)),
        Op("presign PUT", lambda a, c: _presigned_works(cl(a).post(
            f"{_objects(c)}/{c.key}/presign", json={"operation": "PUT"}), None)),
        Op("presign UploadPart", presign_part),
        Op("start multipart", lambda a, c: http_outcome(cl(a).post(
            f"{_objects(c)}/{c.key}/multipart")),
           lambda c: [u for u in c.uploads() if u[0] == c.key]),
        Op("upload part", lambda a, c: http_outcome(cl(a).put(
            f"{part_path(c)}/2", content=PART)), lambda c: c.parts(c.bucket, *c.upload[:2])),
        Op("complete multipart", lambda a, c: http_outcome(cl(a).post(
            f"{part_path(c)}/complete")), lambda c: c.body(c.upload[0])),
        Op("abort multipart", lambda a, c: http_outcome(cl(a).delete(part_path(c))),
           lambda c: c.upload[1] in {u for _, u in c.uploads()}),
        Op("bucket quota", lambda a, c: http_outcome(cl(a).get(
            f"/admin/buckets/{c.bucket}/quota"))),
        Op("grant the bucket to carol", lambda a, c: http_outcome(cl(a).put(
            f"/admin/buckets/{c.bucket}/grants",
            json={"grantee_type": "user", "grantee": "carol", "permission": "read"})),
           grants, cleanup=lambda c: world.admin.request(
               "DELETE", f"/admin/buckets/{c.bucket}/grants",
               params={"grantee_type": "user", "grantee": "carol"})),
        Op("delete bucket", lambda a, c: http_outcome(cl(a).delete(
            f"/storage/buckets/{c.spare}")), lambda c: c.bucket_state(c.spare)),
    ]


#: The operations an API token tries in the short version (a session tries them all).
TOKEN_SHORT = frozenset({"list buckets shows the bucket", "list objects", "get object",
                         "put object", "delete object", "presign GET", "upload part"})


def json_channel(world: World, matrix: Matrix) -> None:
    a, b = world.a, world.b
    refusals = [(a, b, JSON_DENIED)] + ([(b, a, JSON_DENIED)] if world.full else [])
    for kind in ("session", "token"):
        ops = [op for op in json_ops(world, kind)
               if world.full or kind == "session" or op.name in TOKEN_SHORT]
        run_cells(world, matrix, "json", ops, lambda op, actor, cell: op.act(actor, cell),
                  refusals)
    dead_credentials(world, matrix)


def dead_credentials(world: World, matrix: Matrix) -> None:
    """Revoked, expired, logged-out and disabled users' credentials: 401 everywhere, where
    a live credential of the same user gets through."""
    a = world.a
    objects = f"/storage/buckets/{a.bucket}/objects"
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/auth/me", {}),
        ("GET", "/storage/buckets", {}),
        ("GET", objects, {}),
        ("GET", f"{objects}/{DOC}", {}),
        ("PUT", f"{objects}/{world.fresh('dead')}", {"content": b"x"}),
        ("POST", f"{objects}/{DOC}/presign", {"json": {"operation": "GET"}}),
        ("GET", "/tokens", {}),
        ("POST", "/tokens", {"json": {"name": "more", "permissions": ["storage:read"]}}),
        ("GET", "/storage/changes", {"params": {"bucket": a.bucket}}),
    ]
    channel = {"/storage/changes": "changes"}
    for method, path, extra in requests:
        ch = channel.get(path, "json")
        matrix.allow(ch, f"{method} {path}: A's live session",
                     http_outcome(a.client("session").request(method, path, **extra)))
        for label, bearer in world.dead_bearers.items():
            headers = [{"Authorization": f"Bearer {bearer}"}]
            if "token" in label:
                headers.append({"X-Api-Key": base64.b64encode(bearer.encode()).decode()})
            for header in headers:
                how = "X-Api-Key" if "X-Api-Key" in header else "Bearer"
                answer = httpx.request(method, world.server.url + "/api/v1" + path,
                                       headers=header, timeout=30, **extra)
                matrix.deny(ch, f"{method} {path}: {label} ({how})", http_outcome(answer),
                            JSON_UNAUTHORIZED)


def changes_channel(world: World, matrix: Matrix) -> None:
    a, b = world.a, world.b
    for kind in ("session", "token"):
        for actor, target in ((a, b), (b, a)):
            answer = actor.client(kind).get("/storage/changes", params={"bucket": target.bucket})
            matrix.deny("changes", f"{kind}: {who(world, actor)} reads "
                        f"{who(world, target)}'s change feed", http_outcome(answer), JSON_DENIED)
            # Without a bucket a member gets nothing (only admins read every bucket's).
            everything = actor.client(kind).get("/storage/changes")
            leaked = everything.status_code == 200 and target.bucket in everything.text
            matrix.deny("changes", f"{kind}: {who(world, actor)} reads the whole feed",
                        Outcome(200 if leaked else 403, "AccessDenied", everything.text[:80]),
                        JSON_DENIED)
        for owner in (a, b):
            answer = owner.client(kind).get("/storage/changes", params={"bucket": owner.bucket})
            out = http_outcome(answer)
            if out.ok and not any(ch.get("key") == DOC for ch in answer.json()["changes"]):
                out = Outcome(200, "MISMATCH", "the owner's feed lacks its own write")
            matrix.allow("changes", f"{kind}: {who(world, owner)} reads its own feed", out)


# -- the web console ---------------------------------------------------------------------------


def console_channel(world: World, matrix: Matrix) -> None:
    """The console is a static page over the JSON API: its login, what a member's session
    shows, and the admin views it must not open."""
    a, b, x, carol = world.a, world.b, world.x, world.carol
    page = httpx.get(world.server.url + "/console")
    matrix.allow("console", "the page loads", http_outcome(page))
    world.report.check("frame-ancestors 'none'" in page.headers.get(
        "content-security-policy", ""), "the console page lacks its CSP")
    world.console_page = page.text
    logins: list[tuple[str, dict[str, str], bool]] = [
        ("A's password", {"username": "alice", "password": a.password}, True),
        ("A's name with B's password", {"username": "alice", "password": b.password}, False),
        ("the disabled user's password", {"username": "carol", "password": carol.password},
         False),
        ("A's enabled key pair", {"access_key": a.access_key, "secret_key": a.secret_key},
         True),
        ("A's disabled key pair", {"access_key": x.access_key, "secret_key": x.secret_key},
         False),
        ("A's access key with B's secret", {"access_key": a.access_key,
                                             "secret_key": b.secret_key}, False),
    ]
    session = ""
    for label, credentials, good in logins:
        answer = world.login(**credentials)
        if good:
            matrix.allow("console", f"login with {label}", http_outcome(answer))
            if answer.status_code == 200:
                session = world.secrets.add_token(f"console session {label}",
                                                  answer.json()["data"]["token"])
        else:
            matrix.deny("console", f"login with {label}", http_outcome(answer),
                        JSON_UNAUTHORIZED)
    if not session:
        return
    with world.api(bearer=session) as c:
        me = c.get("/auth/me")
        matrix.allow("console", "who am I", http_outcome(me))
        world.report.check(me.status_code == 200 and me.json()["data"]["username"] == "alice",
                           f"the console's session is not alice's: {me.text[:120]}")
        names = {x["name"] for x in c.get("/storage/buckets").json()["buckets"]}
        matrix.allow("console", "bucket list shows A's bucket",
                     Outcome(200 if a.bucket in names else 404))
        matrix.deny("console", "bucket list shows B's bucket",
                    Outcome(200 if b.bucket in names else 403, "AccessDenied"), JSON_DENIED)
        for method, path, body in (
            ("GET", "/admin/quotas", None), ("GET", "/admin/users", None),
            ("GET", "/admin/users/bob/keys", None),
            ("POST", "/admin/users/bob/keys", {}),
            ("PATCH", f"/admin/keys/{quote(b.access_key)}", {"enabled": False}),
            ("PATCH", "/admin/users/bob", {"disabled": True}),
            ("GET", f"/admin/buckets/{b.bucket}/quota", None),
            ("PUT", f"/admin/buckets/{b.bucket}/quota", {"max_objects": 1}),
            ("GET", "/bot/admin", None),
        ):
            matrix.deny("console", f"A's session: {method} {path}",
                        http_outcome(c.request(method, path, json=body)), JSON_DENIED)
        world.report.check(b.s3.list_objects_v2(Bucket=b.bucket)["KeyCount"] >= 1,
                           "B's key stopped working after A's refused admin calls")
        matrix.allow("console", "logout", http_outcome(c.post("/auth/logout")))
        matrix.deny("console", "the session after logout", http_outcome(c.get("/auth/me")),
                    JSON_UNAUTHORIZED)
