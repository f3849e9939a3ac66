"""The isolation matrix's S3 channels: S3 requests, presigned URLs and POST policy forms
(the JSON ones are in :mod:`campaigns._security_api`, the WebSocket's in
:mod:`campaigns._security_ws`).

Every cell is one operation, by one actor, on one tenant's bucket. Refusal cells: tenant A
on tenant B's bucket (403 AccessDenied), A's disabled key X on A's bucket and the disabled
user carol on her own (403 InvalidAccessKeyId) — the long version adds B on A's bucket and
X on B's; each refused request must also leave the victim's state as it was (root's probe,
before and after). Positive controls: each owner on their own bucket, by the same
operation, with its effect checked, so a refusal means the door is shut, not that the
operation is broken. Every cell has victims of its own (objects, uploads, buckets), so
channels can run side by side.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from campaigns._security_world import (
    DOC,
    S3_BAD_KEY,
    S3_BAD_SIGNATURE,
    S3_DENIED,
    Matrix,
    Mismatch,
    Outcome,
    Tenant,
    World,
    s3_outcome,
    transport_outcome,
)

PART = b"p" * 1024


class Cell:
    """One cell's victims, made fresh by the bucket's owner (root for carol's bucket, as
    carol is disabled), and probed by root, who sees everything."""

    def __init__(self, world: World, actor: Tenant, target: Tenant) -> None:
        self.world, self.actor, self.target = world, actor, target
        self.bucket = target.bucket
        self.root = world.root_s3
        self.owner = world.root_s3 if target is world.carol else target.s3
        own = world.a if actor is world.x else actor
        self.own = own.bucket
        self.own_owner = world.root_s3 if own is world.carol else own.s3
        self.key = world.fresh("new")

    @functools.cached_property
    def victim(self) -> str:
        key = self.world.fresh("victim")
        self.owner.put_object(Bucket=self.bucket, Key=key, Body=b"victim " + key.encode(),
                              Tagging="kept=yes")
        return key

    @functools.cached_property
    def upload(self) -> tuple[str, str, str]:
        """(key, upload id, the ETag of its part 1) of an upload the owner started."""
        key = self.world.fresh("mpu")
        upload_id = self.owner.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        etag = self.owner.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                      PartNumber=1, Body=PART)["ETag"]
        return key, upload_id, etag

    @functools.cached_property
    def own_upload(self) -> tuple[str, str]:
        key = self.world.fresh("own-mpu")
        made = self.own_owner.create_multipart_upload(Bucket=self.own, Key=key)
        return key, made["UploadId"]

    @functools.cached_property
    def spare(self) -> str:
        """An empty bucket of the target's owner with every bucket setting in place."""
        name = f"{self.bucket}-{self.world.fresh('s')}"
        o = self.owner
        o.create_bucket(Bucket=name, ACL="public-read")
        o.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": "kept", "Value": "y"}]})
        o.put_bucket_cors(Bucket=name, CORSConfiguration=CORS)
        o.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration=LIFECYCLE)
        return name

    # -- probes (root's view) ------------------------------------------------------------

    def body(self, key: str, bucket: str | None = None) -> bytes | None:
        try:
            got: bytes = self.root.get_object(Bucket=bucket or self.bucket, Key=key)[
                "Body"].read()
        except Exception:
            return None
        return got

    def uploads(self, bucket: str | None = None) -> list[tuple[str, str]]:
        found = self.root.list_multipart_uploads(Bucket=bucket or self.bucket)
        return sorted((u["Key"], u["UploadId"]) for u in found.get("Uploads", []))

    def parts(self, bucket: str, key: str, upload_id: str) -> list[tuple[int, str]]:
        found = self.root.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
        return [(p["PartNumber"], p["ETag"]) for p in found.get("Parts", [])]

    def bucket_state(self, name: str) -> Any:
        """A bucket's settings, or None when it is gone."""
        r = self.root
        out: list[Any] = []
        reads: list[tuple[str, str | None]] = [
            ("get_bucket_acl", "Grants"), ("get_bucket_tagging", "TagSet"),
            ("get_bucket_cors", "CORSRules"), ("get_bucket_lifecycle_configuration", "Rules"),
            ("get_bucket_versioning", None),
            ("get_bucket_encryption", "ServerSideEncryptionConfiguration")]
        for method, field in reads:
            try:
                answer = getattr(r, method)(Bucket=name)
                out.append(answer[field] if field else answer.get("Status"))
            except Exception as exc:  # NoSuchBucket, NoSuchTagSet, …
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", str(exc))
                if code == "NoSuchBucket":
                    return None
                out.append(code)
        return out


CORS = {"CORSRules": [{"AllowedOrigins": ["https://tenant.example"],
                       "AllowedMethods": ["GET"]}]}
LIFECYCLE = {"Rules": [{"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
                        "Expiration": {"Days": 30}}]}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


@dataclass(frozen=True)
class Op:
    name: str
    #: The call, by the actor; raises (ClientError, Mismatch) or returns an Outcome.
    act: Callable[[Tenant, Cell], Any]
    #: The owner's view of what the call would change (None: a read).
    probe: Callable[[Cell], Any] | None = None
    head: bool = False
    #: Undo what a granted call did that would open access for later cells.
    cleanup: Callable[[Cell], Any] | None = None


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise Mismatch(what)


def _keys(listing: dict[str, Any], field: str = "Contents") -> list[str]:
    return [o["Key"] for o in listing.get(field, [])]


def _delete_objects(a: Tenant, c: Cell) -> Outcome | None:
    answer = a.s3.delete_objects(Bucket=c.bucket, Delete={"Objects": [{"Key": c.victim}]})
    errors = answer.get("Errors", [])
    if errors:  # refused key by key (as S3 does for objects one may not delete)
        codes = {e.get("Code", "") for e in errors}
        return Outcome(403, codes.pop() if len(codes) == 1 else ",".join(sorted(codes)),
                       "per-key errors")
    return None


def s3_ops() -> list[Op]:
    def get(a: Tenant, c: Cell) -> None:
        _need(a.s3.get_object(Bucket=c.bucket, Key=DOC)["Body"].read() == c.target.doc,
              "GetObject returned other bytes")

    def get_range(a: Tenant, c: Cell) -> None:
        got = a.s3.get_object(Bucket=c.bucket, Key=DOC, Range="bytes=0-3")["Body"].read()
        _need(got == c.target.doc[:4], "a ranged GetObject returned other bytes")

    def complete(a: Tenant, c: Cell) -> None:
        key, upload_id, etag = c.upload
        a.s3.complete_multipart_upload(Bucket=c.bucket, Key=key, UploadId=upload_id,
                                       MultipartUpload={"Parts": [{"PartNumber": 1,
                                                                   "ETag": etag}]})

    def part_copy(a: Tenant, c: Cell) -> None:
        key, upload_id = c.own_upload
        a.s3.upload_part_copy(Bucket=c.own, Key=key, UploadId=upload_id, PartNumber=1,
                              CopySource={"Bucket": c.bucket, "Key": DOC})

    spare = lambda c: c.bucket_state(c.spare)  # noqa: E731
    return [
        Op("ListObjectsV2", lambda a, c: _need(
            DOC in _keys(a.s3.list_objects_v2(Bucket=c.bucket)), "listing lacks the doc")),
        Op("ListObjects", lambda a, c: _need(
            DOC in _keys(a.s3.list_objects(Bucket=c.bucket)), "listing lacks the doc")),
        Op("ListObjectVersions", lambda a, c: _need(
            DOC in _keys(a.s3.list_object_versions(Bucket=c.bucket), "Versions"),
            "listing lacks the doc")),
        Op("ListMultipartUploads", lambda a, c: a.s3.list_multipart_uploads(Bucket=c.bucket)),
        Op("HeadBucket", lambda a, c: a.s3.head_bucket(Bucket=c.bucket), head=True),
        Op("GetBucketLocation", lambda a, c: a.s3.get_bucket_location(Bucket=c.bucket)),
        Op("GetObject", get),
        Op("GetObject Range", get_range),
        Op("HeadObject", lambda a, c: a.s3.head_object(Bucket=c.bucket, Key=DOC), head=True),
        Op("PutObject", lambda a, c: a.s3.put_object(Bucket=c.bucket, Key=c.key, Body=b"x"),
           lambda c: c.body(c.key)),
        Op("DeleteObject", lambda a, c: a.s3.delete_object(Bucket=c.bucket, Key=c.victim),
           lambda c: c.body(c.victim)),
        Op("DeleteObjects", _delete_objects, lambda c: c.body(c.victim)),
        Op("CopyObject out of the bucket", lambda a, c: a.s3.copy_object(
            Bucket=c.own, Key=c.key, CopySource={"Bucket": c.bucket, "Key": DOC}),
           lambda c: c.body(c.key, c.own)),
        Op("CopyObject into the bucket", lambda a, c: a.s3.copy_object(
            Bucket=c.bucket, Key=c.key, CopySource={"Bucket": c.own, "Key": DOC}),
           lambda c: c.body(c.key)),
        Op("UploadPartCopy out of the bucket", part_copy,
           lambda c: c.parts(c.own, *c.own_upload)),
        Op("CreateMultipartUpload", lambda a, c: a.s3.create_multipart_upload(
            Bucket=c.bucket, Key=c.key), lambda c: [u for u in c.uploads() if u[0] == c.key]),
        Op("UploadPart", lambda a, c: a.s3.upload_part(
            Bucket=c.bucket, Key=c.upload[0], UploadId=c.upload[1], PartNumber=2, Body=PART),
           lambda c: c.parts(c.bucket, *c.upload[:2])),
        Op("ListParts", lambda a, c: _need(len(a.s3.list_parts(
            Bucket=c.bucket, Key=c.upload[0], UploadId=c.upload[1]).get("Parts", [])) == 1,
            "ListParts lacks the part")),
        Op("CompleteMultipartUpload", complete, lambda c: c.body(c.upload[0])),
        Op("AbortMultipartUpload", lambda a, c: a.s3.abort_multipart_upload(
            Bucket=c.bucket, Key=c.upload[0], UploadId=c.upload[1]),
           lambda c: c.upload[1] in {u for _, u in c.uploads()}),
        Op("GetObjectTagging", lambda a, c: a.s3.get_object_tagging(Bucket=c.bucket,
                                                                    Key=c.victim)),
        Op("PutObjectTagging", lambda a, c: a.s3.put_object_tagging(
            Bucket=c.bucket, Key=c.victim,
            Tagging={"TagSet": [{"Key": "owned", "Value": "by-me"}]}),
           lambda c: c.root.get_object_tagging(Bucket=c.bucket, Key=c.victim)["TagSet"]),
        Op("DeleteObjectTagging", lambda a, c: a.s3.delete_object_tagging(
            Bucket=c.bucket, Key=c.victim),
           lambda c: c.root.get_object_tagging(Bucket=c.bucket, Key=c.victim)["TagSet"]),
        Op("GetObjectAcl", lambda a, c: a.s3.get_object_acl(Bucket=c.bucket, Key=DOC)),
        Op("PutObjectAcl", lambda a, c: a.s3.put_object_acl(
            Bucket=c.bucket, Key=c.victim, ACL="public-read"),
           lambda c: c.root.get_object_acl(Bucket=c.bucket, Key=c.victim)["Grants"]),
        Op("GetBucketAcl", lambda a, c: a.s3.get_bucket_acl(Bucket=c.bucket)),
        Op("PutBucketAcl", lambda a, c: a.s3.put_bucket_acl(Bucket=c.spare, ACL="private"),
           spare),
        Op("GetBucketTagging", lambda a, c: a.s3.get_bucket_tagging(Bucket=c.bucket)),
        Op("PutBucketTagging", lambda a, c: a.s3.put_bucket_tagging(
            Bucket=c.spare, Tagging={"TagSet": [{"Key": "owned", "Value": "by-me"}]}), spare),
        Op("DeleteBucketTagging", lambda a, c: a.s3.delete_bucket_tagging(Bucket=c.spare),
           spare),
        Op("GetBucketCors", lambda a, c: a.s3.get_bucket_cors(Bucket=c.bucket)),
        Op("PutBucketCors", lambda a, c: a.s3.put_bucket_cors(
            Bucket=c.spare, CORSConfiguration={"CORSRules": [
                {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT"]}]}), spare),
        Op("DeleteBucketCors", lambda a, c: a.s3.delete_bucket_cors(Bucket=c.spare), spare),
        Op("GetBucketVersioning", lambda a, c: a.s3.get_bucket_versioning(Bucket=c.bucket)),
        Op("PutBucketVersioning", lambda a, c: a.s3.put_bucket_versioning(
            Bucket=c.spare, VersioningConfiguration={"Status": "Enabled"}), spare),
        Op("GetBucketLifecycleConfiguration",
           lambda a, c: a.s3.get_bucket_lifecycle_configuration(Bucket=c.bucket)),
        Op("PutBucketLifecycleConfiguration",
           lambda a, c: a.s3.put_bucket_lifecycle_configuration(
               Bucket=c.spare, LifecycleConfiguration={"Rules": [
                   {"ID": "all", "Status": "Enabled", "Filter": {"Prefix": ""},
                    "Expiration": {"Days": 1}}]}), spare),
        Op("DeleteBucketLifecycle", lambda a, c: a.s3.delete_bucket_lifecycle(Bucket=c.spare),
           spare),
        Op("GetBucketEncryption", lambda a, c: a.s3.get_bucket_encryption(Bucket=c.bucket)),
        Op("PutBucketEncryption", lambda a, c: a.s3.put_bucket_encryption(
            Bucket=c.spare, ServerSideEncryptionConfiguration=ENCRYPTION), spare),
        Op("DeleteBucket", lambda a, c: a.s3.delete_bucket(Bucket=c.spare), spare),
    ]


def run_cells(world: World, matrix: Matrix, channel: str, ops: list[Op],
              attempt: Callable[[Op, Tenant, Cell], Outcome],
              refusals: list[tuple[Tenant, Tenant, str]]) -> None:
    """Each operation: every refusal pair, then each owner on their own bucket."""
    for op in ops:
        for actor, target, kind in refusals:
            cell = Cell(world, actor, target)
            before = op.probe(cell) if op.probe else None
            outcome = attempt(op, actor, cell)
            after = op.probe(cell) if op.probe else None
            if op.cleanup:
                op.cleanup(cell)
            matrix.deny(channel, f"{op.name}: {who(world, actor)} on {who(world, target)}",
                        outcome, kind, changed=before != after, head=op.head)
        for owner in (world.a, world.b):
            cell = Cell(world, owner, owner)
            before = op.probe(cell) if op.probe else None
            outcome = attempt(op, owner, cell)
            changed = None if op.probe is None else op.probe(cell) != before
            if op.cleanup:
                op.cleanup(cell)
            matrix.allow(channel, f"{op.name}: {who(world, owner)} on its own bucket",
                         outcome, changed=changed)


def who(world: World, t: Tenant) -> str:
    if t is world.x:
        return "A's disabled key"
    if t is world.carol:
        return "disabled user"
    return "A" if t is world.a else "B"


def key_refusals(world: World, tenant_kind: str, key_kind: str
                 ) -> list[tuple[Tenant, Tenant, str]]:
    """A on B's bucket, the X key on A's, the disabled user on their own; the long version
    adds B on A's bucket and the X key on B's."""
    a, b, x, carol = world.a, world.b, world.x, world.carol
    pairs = [(a, b, tenant_kind), (x, a, key_kind), (carol, carol, key_kind)]
    if world.full:
        pairs += [(b, a, tenant_kind), (x, b, key_kind)]
    return pairs


def s3_channel(world: World, matrix: Matrix) -> None:
    def attempt(op: Op, actor: Tenant, cell: Cell) -> Outcome:
        returned: list[Any] = []
        outcome = s3_outcome(lambda: returned.append(op.act(actor, cell)))
        if outcome.ok and returned and isinstance(returned[0], Outcome):
            return returned[0]
        return outcome

    run_cells(world, matrix, "s3", s3_ops(), attempt,
              key_refusals(world, S3_DENIED, S3_BAD_KEY))
    # What ListBuckets shows: nobody else's bucket.
    for actor, target in ((world.a, world.b), (world.b, world.a)):
        names = {b["Name"] for b in actor.s3.list_buckets()["Buckets"]}
        matrix.deny("s3", f"ListBuckets: {who(world, actor)} sees {who(world, target)}'s "
                    "bucket", Outcome(200 if target.bucket in names else 403, "AccessDenied"),
                    S3_DENIED)
        matrix.allow("s3", f"ListBuckets: {who(world, actor)} sees its own bucket",
                     Outcome(200 if actor.bucket in names else 404))


# -- presigned URLs ----------------------------------------------------------------------------


def _signed(world: World, signer: Any, operation: str, expires: int = 300,
            **params: Any) -> str:
    return world.secrets.add_url(signer.generate_presigned_url(
        operation, Params=params, ExpiresIn=expires))


def presigned_ops(world: World) -> list[Op]:
    def fetch(method: str, url: str, body: bytes | None = None, **kwargs: Any) -> Outcome:
        return transport_outcome(lambda: httpx.request(method, url, timeout=30, **kwargs),
                                 body=body)

    ops: list[Op] = []
    for version in ("v4", "v2"):
        ops += [op for op in _presigned_version(world, version, fetch)
                if world.full or version == "v4" or op.name.split()[1] in V2_SHORT]
    ops.append(Op("v4 CopyObject into the bucket", lambda a, c: fetch(
        "PUT", _signed(world, a.s3, "copy_object", Bucket=c.bucket, Key=c.key,
                       CopySource=f"{c.own}/{DOC}"),
        headers={"x-amz-copy-source": f"{c.own}/{DOC}"}), lambda c: c.body(c.key)))
    return ops


#: The SigV2 operations of the short version (the long one has them all).
V2_SHORT = frozenset({"GetObject", "PutObject", "DeleteObject"})


def _presigned_version(world: World, version: str,
                       fetch: Callable[..., Outcome]) -> list[Op]:
    def signer(a: Tenant) -> Any:
        return a.s3 if version == "v4" else a.s3v2

    def get(a: Tenant, c: Cell) -> Outcome:
        return fetch("GET", _signed(world, signer(a), "get_object", Bucket=c.bucket, Key=DOC),
                     c.target.doc)

    def head(a: Tenant, c: Cell) -> Outcome:
        return fetch("HEAD", _signed(world, signer(a), "head_object", Bucket=c.bucket,
                                     Key=DOC))

    def listing(a: Tenant, c: Cell) -> Outcome:
        url = _signed(world, signer(a), "list_objects", Bucket=c.bucket)
        out = fetch("GET", url)
        if out.ok and f"<Key>{DOC}</Key>" not in httpx.get(url).text:
            return Outcome(200, "MISMATCH", "the listing lacks the doc")
        return out

    def put(a: Tenant, c: Cell) -> Outcome:
        return fetch("PUT", _signed(world, signer(a), "put_object", Bucket=c.bucket,
                                    Key=c.key), content=b"url")

    def delete(a: Tenant, c: Cell) -> Outcome:
        return fetch("DELETE", _signed(world, signer(a), "delete_object", Bucket=c.bucket,
                                       Key=c.victim))

    def create(a: Tenant, c: Cell) -> Outcome:
        return fetch("POST", _signed(world, signer(a), "create_multipart_upload",
                                     Bucket=c.bucket, Key=c.key))

    def part(a: Tenant, c: Cell) -> Outcome:
        return fetch("PUT", _signed(world, signer(a), "upload_part", Bucket=c.bucket,
                                    Key=c.upload[0], UploadId=c.upload[1], PartNumber=2),
                     content=PART)

    return [
        Op(f"{version} GetObject", get),
        Op(f"{version} HeadObject", head, head=True),
        Op(f"{version} ListObjects", listing),
        Op(f"{version} PutObject", put, lambda c: c.body(c.key)),
        Op(f"{version} DeleteObject", delete, lambda c: c.body(c.victim)),
        Op(f"{version} CreateMultipartUpload", create,
           lambda c: [u for u in c.uploads() if u[0] == c.key]),
        Op(f"{version} UploadPart", part, lambda c: c.parts(c.bucket, *c.upload[:2])),
    ]


def presigned_channel(world: World, matrix: Matrix) -> None:
    run_cells(world, matrix, "presigned", presigned_ops(world),
              lambda op, actor, cell: op.act(actor, cell),
              key_refusals(world, S3_DENIED, S3_BAD_KEY))
    b = world.b
    # URLs signed by the X key while it was enabled (they worked then), and after.
    for label, url in world.signed_before_disable.get("urls", {}).items():
        matrix.deny("presigned", f"{label}, signed by A's key before it was disabled",
                    transport_outcome(functools.partial(httpx.get, url)), S3_BAD_KEY)
    # Tampering with a URL the owner signed.
    good = _signed(world, b.s3, "get_object", Bucket=b.bucket, Key=DOC)
    matrix.allow("presigned", "B's untampered URL",
                 transport_outcome(lambda: httpx.get(good), body=b.doc))
    sig = good.rsplit("X-Amz-Signature=", 1)[1][:64]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    victim = Cell(world, b, b).victim
    for label, url, method in (
        ("signature altered", good.replace(sig, flipped), "GET"),
        ("signature of another key's URL", good.replace(f"/{DOC}?", f"/{victim}?"), "GET"),
        ("X-Amz-Expires extended", good.replace("X-Amz-Expires=300", "X-Amz-Expires=604800"),
         "GET"),
        ("GET URL used to DELETE", _signed(world, b.s3, "get_object", Bucket=b.bucket,
                                           Key=victim), "DELETE"),
    ):
        matrix.deny("presigned", f"B's URL, {label}",
                    transport_outcome(functools.partial(httpx.request, method, url)),
                    S3_BAD_SIGNATURE)
    v2 = _signed(world, b.s3v2, "get_object", Bucket=b.bucket, Key=DOC)
    matrix.allow("presigned", "B's untampered SigV2 URL",
                 transport_outcome(lambda: httpx.get(v2), body=b.doc))
    v2sig = v2.split("Signature=", 1)[1].split("&", 1)[0]
    altered = ("B" if v2sig[0] != "B" else "C") + v2sig[1:]
    matrix.deny("presigned", "B's SigV2 URL, signature altered",
                transport_outcome(lambda: httpx.get(v2.replace(v2sig, altered))),
                S3_BAD_SIGNATURE)
    world.report.check(Cell(world, b, b).body(victim) is not None,
                       "a refused presigned DELETE removed the object")
    # Expired: signed for one second (before the credentials were killed), fetched after.
    for version, url in expired(world)["urls"].items():
        matrix.deny("presigned", f"B's {version} URL after it expired",
                    transport_outcome(functools.partial(httpx.get, url)), S3_DENIED)


def sign_expiring(world: World) -> dict[str, Any]:
    """B's presigned URLs and POST form valid for one second, signed once."""
    made = world.expiring
    if not made:
        b = world.b
        key = world.fresh("expired")
        made.update(at=time.monotonic(), urls={
            "v4": _signed(world, b.s3, "get_object", expires=1, Bucket=b.bucket, Key=DOC),
            "v2": _signed(world, b.s3v2, "get_object", expires=1, Bucket=b.bucket, Key=DOC)},
            form=(key, _form(world, b.s3, b.bucket, key, expires=1)))
    return made


def expired(world: World) -> dict[str, Any]:
    """:func:`sign_expiring`'s URLs and form, once they have expired (signed early, they
    have by the time the channels run)."""
    made = sign_expiring(world)
    time.sleep(max(0.0, made["at"] + EXPIRY_WAIT - time.monotonic()))
    return made


#: How long after signing a one-second URL or form it is sure to have expired (the
#: gateway's clock reads whole seconds).
EXPIRY_WAIT = 2.1


# -- POST policy forms -------------------------------------------------------------------------


def _form(world: World, signer: Any, bucket: str, key: str, *, expires: int = 300,
          conditions: list[Any] | None = None) -> dict[str, str]:
    made = signer.generate_presigned_post(bucket, key, Conditions=conditions or [],
                                          ExpiresIn=expires)
    fields = dict(made["fields"])
    world.secrets.signatures.add(fields.get("x-amz-signature") or fields["signature"])
    return fields


def post_form(world: World, bucket: str, fields: dict[str, str], body: bytes = b"posted"
              ) -> Outcome:
    return transport_outcome(lambda: httpx.post(
        f"{world.server.url}/{bucket}", data=fields,
        files={"file": ("upload.txt", body, "text/plain")}, timeout=30))


def post_channel(world: World, matrix: Matrix) -> None:
    def posting(version: str) -> Callable[[Tenant, Cell], Outcome]:
        def act(a: Tenant, c: Cell) -> Outcome:
            signer = a.s3 if version == "v4" else a.s3v2
            return post_form(world, c.bucket, _form(world, signer, c.bucket, c.key))
        return act

    ops = [Op(f"{version} POST form", posting(version), lambda c: c.body(c.key))
           for version in ("v4", "v2")]
    run_cells(world, matrix, "post-policy", ops, lambda op, actor, cell: op.act(actor, cell),
              key_refusals(world, S3_DENIED, S3_BAD_KEY))
    a, b = world.a, world.b
    for label, (bucket, fields) in world.signed_before_disable.get("forms", {}).items():
        matrix.deny("post-policy", f"{label}, signed by A's key before it was disabled",
                    post_form(world, bucket, fields), S3_BAD_KEY)
    # A's own, valid form, sent to B's bucket: the policy names A's bucket.
    mine = _form(world, a.s3, a.bucket, "redirected")
    matrix.deny("post-policy", "A's valid form for its bucket, posted to B's bucket",
                post_form(world, b.bucket, mine), S3_DENIED)
    cell = Cell(world, b, b)
    matrix.deny("post-policy", "B's form, posted for a key outside its starts-with",
                post_form(world, b.bucket, {**_form(
                    world, b.s3, b.bucket, "uploads/${filename}",
                    conditions=[["starts-with", "$key", "uploads/"]]), "key": cell.key}),
                S3_DENIED)
    tampered = _form(world, b.s3, b.bucket, cell.key)
    policy = json.loads(base64.b64decode(tampered["policy"]))
    policy["conditions"].append(["content-length-range", 0, 1 << 40])
    tampered["policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
    matrix.deny("post-policy", "B's form, policy altered after signing",
                post_form(world, b.bucket, tampered), S3_BAD_SIGNATURE)
    world.report.check(cell.body(cell.key) is None, "a refused POST form stored an object")
    key, expiring = expired(world)["form"]
    matrix.deny("post-policy", "B's form after its policy expired",
                post_form(world, b.bucket, expiring), S3_DENIED)
    world.report.check(cell.body(key) is None, "an expired POST form stored an object")
