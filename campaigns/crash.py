"""Crash campaign: kill -9 the gateway at random moments under a mixed workload, and after
every restart check that nothing acknowledged was lost and nothing unacknowledged shows.

Several client threads (boto3, no retries) run PUTs of new keys, overwrites of their own and
of shared keys, conditional writes (``If-None-Match: *`` creates, ``If-Match`` overwrites),
completed multipart uploads, CopyObject, DeleteObject, and writes into a bucket with a small
quota (set with ``gateway quota set``) that refuses some of them with QuotaExceeded. The
gateway's own garbage collector runs throughout (a short housekeeping period and grace).

Every body names the version it belongs to (a header, then bytes derived from it), so a
torn or mixed body cannot pass for a whole one. For every key the campaign knows which
states it may be in after a crash: the result of every write acknowledged and not
superseded by a later acknowledged one (one that started after it was answered), the
results of the writes whose outcome the kill hid, and the state before them unless an
acknowledged write replaced it. After each restart:

- every listed object is readable by HEAD and GET with the listing's size and ETag, its
  body whole, its ETag its MD5 (or the multipart form), and its state one of the possible
  ones; every key not listed is absent to HEAD and may be absent;
- multipart uploads left open are ones the clients opened and did not complete or abort;
- every bucket's quota usage (``gateway quota list --json``) equals the sum of its objects'
  sizes plus its open uploads' parts, and its object count; a dead instance's reservations
  are released;
- ``gateway fsck --checksums`` finds no missing or damaged blob; after the garbage collector
  runs it finds nothing at all, and the blob store holds no bytes no object accounts for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from campaigns._gateway import s3_client
from campaigns._report import Report
from tests._server import GatewayProcess, database_for, run_cli, run_cli_here

T = TypeVar("T")
MiB = 1024 * 1024
BUCKET = "crash"
QUOTA_BUCKET = "crash-quota"
QUOTA_BYTES = 8 * MiB
QUOTA_OBJECTS = 5
SHARED_KEYS = [f"shared/{i}" for i in range(6)]
QUOTA_KEYS = [f"q/{i}" for i in range(8)]
OWN_SLOTS = 3
#: Keys a worker keeps of its own (new/, mpu/, copy/) before it deletes some: the data set
#: stays small enough to be read back whole after every restart.
MINE_KEPT = 8
SIZES = [24, 1_000, 30_000, 200_000, 1_100_000, 2_500_000]
SIZE_WEIGHTS = [2, 3, 3, 3, 2, 1]
QUOTA_SIZES = [24, 50_000, 300_000, 900_000, 1_500_000, 2_500_000]
#: The gateway's garbage collector runs every HOUSEKEEPING seconds during the workload and
#: collects unreferenced blobs older than GRACE seconds.
GATEWAY_ENV = {"GATEWAY_HEARTBEAT_SECONDS": "1", "GATEWAY_HOUSEKEEPING_SECONDS": "2",
               "GATEWAY_GC_GRACE_SECONDS": "10"}

#: (kind, weight) of the operations a worker picks from.
OPERATIONS = [
    ("put-new", 12), ("put-new-if-none-match", 6), ("overwrite-own", 8),
    ("overwrite-own-if-match", 6), ("overwrite-shared", 8),
    ("shared-if-none-match", 4), ("shared-if-match", 5), ("multipart", 3), ("copy", 6),
    ("delete-own", 6), ("delete-shared", 3),
    ("quota-put", 12), ("quota-delete", 5), ("quota-copy", 4), ("quota-multipart", 1),
]


#: The refusals (error codes) each kind of write may meet; any other is a failure. A
#: conditional write loses races; a write into the small quota finds it full (answered
#: "403" alone when the gateway refused before taking the body and the connection went
#: with it); If-Match on a key deleted meanwhile finds none.
_CONDITIONAL = {"PreconditionFailed", "ConditionalRequestConflict"}
_QUOTA = {"QuotaExceeded", "403"}
EXPECTED_REFUSALS: dict[str, set[str]] = {
    "shared-if-none-match": _CONDITIONAL, "shared-if-match": _CONDITIONAL | {"NoSuchKey"},
    "put-new-if-none-match": set(), "overwrite-own-if-match": set(),
    "quota-put": _QUOTA, "quota-copy": _QUOTA, "quota-multipart": _QUOTA,
}


# -- bodies --------------------------------------------------------------------------------

HEADER_LEN = 24


def piece(vid: int, part: int, size: int) -> bytes:
    """``size`` bytes naming version ``vid``'s part ``part`` in a header, then bytes
    derived from the header."""
    header = f"{vid:09d}:{part:02d}:{size:010d}\n".encode()
    assert len(header) == HEADER_LEN and size >= HEADER_LEN
    pattern = hashlib.sha256(header).digest()
    rest = size - HEADER_LEN
    return header + (pattern * (rest // len(pattern) + 1))[:rest]


@dataclass(frozen=True)
class Version:
    """One written body: a single PUT's (one part, multipart False) or the parts of a
    multipart upload."""

    vid: int
    part_sizes: tuple[int, ...]
    multipart: bool = False

    @property
    def size(self) -> int:
        return sum(self.part_sizes)

    def parts(self) -> list[bytes]:
        return [piece(self.vid, n, size) for n, size in enumerate(self.part_sizes, start=1)]

    def body(self) -> bytes:
        return b"".join(self.parts())

    @cached_property
    def etag(self) -> str:
        if not self.multipart:
            return f'"{hashlib.md5(self.body()).hexdigest()}"'
        digests = b"".join(hashlib.md5(p).digest() for p in self.parts())
        return f'"{hashlib.md5(digests).hexdigest()}-{len(self.part_sizes)}"'


def vid_of(data: bytes) -> int | None:
    """The version a body claims to be, from its header (None: no header)."""
    try:
        vid, part, _size = data[:HEADER_LEN].decode().rstrip("\n").split(":")
        return int(vid) if int(part) == 1 else None
    except (UnicodeDecodeError, ValueError):
        return None


# -- what each key may hold ----------------------------------------------------------------

ACKED, REFUSED, MAYBE = "acked", "refused", "maybe"
#: The state of a key found torn or unreadable (reported; not a version anyone wrote).
DAMAGED = -1
BKey = tuple[str, str]


@dataclass
class Op:
    kind: str
    bkey: BKey
    result: int | None  # the version written; None: the key deleted
    start: int
    end: int | None = None  # None while in flight, and for an outcome the kill hid
    outcome: str = "pending"


@dataclass
class Upload:
    bkey: BKey
    vid: int
    #: open, completed, aborted; completing / aborting: the kill hid the answer
    state: str = "open"


def _declared_length(answer: dict[str, Any]) -> int:
    """The Content-Length the gateway declared for ``answer`` (botocore's parsed form)."""
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    try:
        return int(headers.get("content-length", "0"))
    except ValueError:
        return 0


@dataclass
class Model:
    """Every key's possible states, shared by the workers; see the module."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    clock: int = 0
    next_id: int = 0
    versions: dict[int, Version] = field(default_factory=dict)
    #: The state of each key at the start of the epoch (observed by the last check).
    base: dict[BKey, int | None] = field(default_factory=dict)
    ops: dict[BKey, list[Op]] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    #: Multipart uploads whose creation the kill hid: (bucket, key) each.
    maybe_created: list[BKey] = field(default_factory=list)
    inflight: Counter[str] = field(default_factory=Counter)
    acked: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0
    transport_errors_before_kill: int = 0
    #: Requests the kill left unanswered (writes, parts, creates, aborts).
    requests_in_doubt: int = 0
    #: 200 answers whose XML body the kill cut off (their head was sent after the commit).
    bodies_cut_by_kill: int = 0
    wrong_answers: list[str] = field(default_factory=list)
    killed: threading.Event = field(default_factory=threading.Event)

    def new_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def new_version(self, part_sizes: tuple[int, ...], *, multipart: bool = False) -> Version:
        version = Version(self.new_id(), part_sizes, multipart)
        with self.lock:
            self.versions[version.vid] = version
        return version

    def begin(self, kind: str, bkey: BKey, result: int | None) -> Op:
        with self.lock:
            self.clock += 1
            op = Op(kind, bkey, result, self.clock)
            self.ops.setdefault(bkey, []).append(op)
            self.inflight[kind] += 1
            return op

    def finish(self, op: Op, outcome: str, *, answered: bool = True) -> None:
        with self.lock:
            self.clock += 1
            op.outcome = outcome
            op.end = self.clock if answered else None
            self.inflight[op.kind] -= 1
            if outcome == ACKED:
                self.acked[op.kind] += 1

    def candidates(self, bkey: BKey) -> set[int | None]:
        ops = [op for op in self.ops.get(bkey, []) if op.outcome in (ACKED, MAYBE)]
        acked = [op for op in ops if op.outcome == ACKED]
        states: set[int | None] = set()
        if not acked:
            states.add(self.base.get(bkey))
        for op in ops:
            if op.end is not None and any(later.start > op.end for later in acked):
                continue  # a write acknowledged after this one was answered replaced it
            states.add(op.result)
        return states

    def in_doubt(self) -> int:
        return sum(1 for ops in self.ops.values() for op in ops
                   if op.outcome == MAYBE and op.end is None)

    def known_keys(self, bucket: str) -> set[str]:
        return {k for b, k in (*self.base, *self.ops) if b == bucket}

    def resolve(self, observed: dict[BKey, int | None]) -> None:
        """The check saw these states: the next epoch starts from them."""
        self.base = {bkey: state for bkey, state in observed.items() if state is not None
                     or bkey[1] in SHARED_KEYS or bkey[1] in QUOTA_KEYS}
        self.ops = {}
        self.maybe_created = []
        self.inflight = Counter()


# -- the workload --------------------------------------------------------------------------


class Halt(Exception):
    """The gateway stopped answering (or answered 5xx): this worker stops for the epoch."""


class Worker(threading.Thread):
    def __init__(self, n: int, model: Model, client: Any, seed: int,
                 stop: threading.Event) -> None:
        super().__init__(name=f"crash-worker-{n}", daemon=True)
        self.n = n
        self.model = model
        self.s3 = client
        self.rng = random.Random(seed)
        self.stop = stop
        prefixes = (f"own/{n}/", f"new/{n}/", f"mpu/{n}/", f"copy/{n}/")
        #: This worker's keys (only it writes them): their states are always known to it.
        self.mine: dict[str, int] = {
            key: vid for (bucket, key), vid in model.base.items()
            if bucket == BUCKET and vid is not None and vid in model.versions
            and key.startswith(prefixes)}

    def run(self) -> None:
        kinds = [k for k, _ in OPERATIONS]
        weights = [w for _, w in OPERATIONS]
        try:
            while not self.stop.is_set():
                kind = self.rng.choices(kinds, weights)[0]
                if kind in ("put-new", "put-new-if-none-match", "multipart", "copy") and \
                        len(self.extra_keys()) >= MINE_KEPT:
                    kind = "delete-own"
                getattr(self, "op_" + kind.replace("-", "_"))(kind)
        except Halt:
            return

    # -- plumbing ---------------------------------------------------------------------------

    def extra_keys(self) -> list[str]:
        return [k for k in self.mine if not k.startswith("own/")]

    def body_size(self, sizes: list[int] = SIZES) -> int:
        weights = SIZE_WEIGHTS if sizes is SIZES else [1] * len(sizes)
        return self.rng.choices(sizes, weights)[0]

    def call(self, op: Op | None, fn: Callable[[], Any], kind: str = "") -> Any:
        """``fn()``'s answer, or None when the gateway refused it (4xx: no effect);
        raises Halt when the outcome is unknown (no answer, or a 5xx). ``kind``: of the
        write a request without an ``op`` belongs to."""
        model = self.model
        kind = op.kind if op is not None else kind
        try:
            answer = fn()
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = exc.response.get("Error", {}).get("Code", "?")
            if 400 <= status < 500:
                if op is not None:
                    model.finish(op, REFUSED)
                with model.lock:
                    model.refused[code] += 1
                    if code not in EXPECTED_REFUSALS.get(kind, set()):
                        model.wrong_answers.append(
                            f"{kind} refused: {status} {code} "
                            f"{exc.response.get('Error', {}).get('Message', '')}")
                return None
            if op is not None:
                model.finish(op, MAYBE)
            with model.lock:
                model.server_errors += 1
            raise Halt from exc
        except EndpointConnectionError as exc:  # nothing was sent: no effect
            if op is not None:
                model.finish(op, REFUSED)
            raise Halt from exc
        except Exception as exc:
            if op is not None:
                model.finish(op, MAYBE, answered=False)
            with model.lock:
                if model.killed.is_set():
                    model.requests_in_doubt += 1
                else:
                    model.transport_errors_before_kill += 1
            raise Halt from exc
        if op is not None:
            model.finish(op, ACKED)
        return answer

    def expect_etag(self, what: str, got: str | None, version: Version,
                    answer: dict[str, Any] | None = None) -> None:
        if got is None and answer is not None and self.model.killed.is_set() \
                and _declared_length(answer) > 0:
            # The kill fell between the answer's head and its body: botocore does not check
            # Content-Length, so the cut XML parses as an empty result. The head went out
            # after the commit, so the write stays acknowledged: the checks after the
            # restart read it back like any other.
            with self.model.lock:
                self.model.bodies_cut_by_kill += 1
            return
        if got != version.etag:
            with self.model.lock:
                self.model.wrong_answers.append(
                    f"{what} of version {version.vid} answered ETag {got}, not "
                    f"{version.etag}")

    def put(self, kind: str, bucket: str, key: str, version: Version,
            **conditions: str) -> bool:
        op = self.model.begin(kind, (bucket, key), version.vid)
        answer = self.call(op, lambda: self.s3.put_object(
            Bucket=bucket, Key=key, Body=version.body(), **conditions))
        if answer is None:
            return False
        self.expect_etag(kind, answer.get("ETag"), version)
        return True

    def delete(self, kind: str, bucket: str, key: str) -> bool:
        op = self.model.begin(kind, (bucket, key), None)
        return self.call(op, lambda: self.s3.delete_object(Bucket=bucket, Key=key)) \
            is not None

    def copy(self, kind: str, source: str, bucket: str, key: str) -> bool:
        version = self.model.versions[self.mine[source]]
        op = self.model.begin(kind, (bucket, key), version.vid)
        answer = self.call(op, lambda: self.s3.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": BUCKET, "Key": source}))
        if answer is None:
            return False
        self.expect_etag(kind, answer.get("CopyObjectResult", {}).get("ETag"), version,
                         answer)
        return True

    def multipart(self, kind: str, bucket: str, key: str) -> int | None:
        """Create, upload the parts, complete: the version written, or None when the
        gateway refused a step (the upload is then aborted)."""
        count = 3 if self.rng.random() < 0.15 else 2
        sizes = tuple([5 * MiB + self.rng.randrange(64 * 1024) for _ in range(count - 1)]
                      + [self.rng.randrange(HEADER_LEN, 256 * 1024)])
        version = self.model.new_version(sizes, multipart=True)
        bkey = (bucket, key)
        with self.model.lock:
            self.model.maybe_created.append(bkey)
        created = self.call(None, lambda: self.s3.create_multipart_upload(
            Bucket=bucket, Key=key), kind)
        with self.model.lock:  # answered: not in doubt
            self.model.maybe_created.remove(bkey)
        if created is None:
            return None
        upload_id = created["UploadId"]
        upload = Upload(bkey, version.vid)
        with self.model.lock:
            self.model.uploads[upload_id] = upload
        listed = []
        for number, body in enumerate(version.parts(), start=1):
            part = self.call(None, partial(self.s3.upload_part, Bucket=bucket, Key=key,
                                           UploadId=upload_id, PartNumber=number, Body=body),
                             kind)
            if part is None:  # refused (the quota): give the upload up
                self.abort(kind, upload_id, upload)
                return None
            if part.get("ETag") != f'"{hashlib.md5(body).hexdigest()}"':
                with self.model.lock:
                    self.model.wrong_answers.append(
                        f"part {number} of version {version.vid}: ETag {part.get('ETag')}")
            listed.append({"PartNumber": number, "ETag": part["ETag"]})
        op = self.model.begin(kind, bkey, version.vid)
        upload.state = "completing"
        done = self.call(op, lambda: self.s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}))
        if done is None:
            upload.state = "open"
            self.abort(kind, upload_id, upload)
            return None
        upload.state = "completed"
        self.expect_etag(kind, done.get("ETag"), version, done)
        return version.vid

    def abort(self, kind: str, upload_id: str, upload: Upload) -> None:
        upload.state = "aborting"  # until answered: it may or may not be gone
        self.call(None, lambda: self.s3.abort_multipart_upload(
            Bucket=upload.bkey[0], Key=upload.bkey[1], UploadId=upload_id), f"{kind}-abort")
        upload.state = "aborted"

    def new_key(self, prefix: str) -> str:
        return f"{prefix}/{self.n}/{self.model.new_id()}"

    def own_slot(self) -> str:
        return f"own/{self.n}/{self.rng.randrange(OWN_SLOTS)}"

    def a_source(self) -> str | None:
        sources = [k for k, vid in self.mine.items()
                   if not self.model.versions[vid].multipart or self.rng.random() < 0.3]
        return self.rng.choice(sorted(sources)) if sources else None

    # -- operations -------------------------------------------------------------------------

    def op_put_new(self, kind: str, **conditions: str) -> None:
        key = self.new_key("new")
        version = self.model.new_version((self.body_size(),))
        if self.put(kind, BUCKET, key, version, **conditions):
            self.mine[key] = version.vid

    def op_put_new_if_none_match(self, kind: str) -> None:
        self.op_put_new(kind, IfNoneMatch="*")

    def op_overwrite_own(self, kind: str) -> None:
        key = self.own_slot()
        version = self.model.new_version((self.body_size(),))
        if self.put(kind, BUCKET, key, version):
            self.mine[key] = version.vid

    def op_overwrite_own_if_match(self, kind: str) -> None:
        key = self.own_slot()
        current = self.mine.get(key)
        conditions = ({"IfNoneMatch": "*"} if current is None
                      else {"IfMatch": self.model.versions[current].etag})
        version = self.model.new_version((self.body_size(),))
        if self.put(kind, BUCKET, key, version, **conditions):
            self.mine[key] = version.vid

    def op_overwrite_shared(self, kind: str) -> None:
        version = self.model.new_version((self.body_size(),))
        self.put(kind, BUCKET, self.rng.choice(SHARED_KEYS), version)

    def op_shared_if_none_match(self, kind: str) -> None:
        version = self.model.new_version((self.body_size(),))
        self.put(kind, BUCKET, self.rng.choice(SHARED_KEYS), version, IfNoneMatch="*")

    def op_shared_if_match(self, kind: str) -> None:
        key = self.rng.choice(SHARED_KEYS)
        head = self.call(None, lambda: self._head(BUCKET, key), kind)
        if head is None or head is False:
            return
        version = self.model.new_version((self.body_size(),))
        self.put(kind, BUCKET, key, version, IfMatch=head["ETag"])

    def _head(self, bucket: str, key: str) -> Any:
        try:
            return self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def op_multipart(self, kind: str) -> None:
        if self.rng.random() < 0.5:
            self.multipart(kind, BUCKET, self.rng.choice(SHARED_KEYS))
            return
        key = self.new_key("mpu")
        vid = self.multipart(kind, BUCKET, key)
        if vid is not None:
            self.mine[key] = vid

    def op_copy(self, kind: str) -> None:
        source = self.a_source()
        if source is None:
            return self.op_put_new("put-new")
        if self.rng.random() < 0.5:
            self.copy(kind, source, BUCKET, self.rng.choice(SHARED_KEYS))
            return None
        key = self.new_key("copy")
        if self.copy(kind, source, BUCKET, key):
            self.mine[key] = self.mine[source]
        return None

    def op_delete_own(self, kind: str) -> None:
        keys = sorted(self.extra_keys())
        if not keys:
            return
        key = self.rng.choice(keys)
        if self.delete(kind, BUCKET, key):
            del self.mine[key]

    def op_delete_shared(self, kind: str) -> None:
        self.delete(kind, BUCKET, self.rng.choice(SHARED_KEYS))

    def op_quota_put(self, kind: str) -> None:
        version = self.model.new_version((self.body_size(QUOTA_SIZES),))
        self.put(kind, QUOTA_BUCKET, self.rng.choice(QUOTA_KEYS), version)

    def op_quota_delete(self, kind: str) -> None:
        self.delete(kind, QUOTA_BUCKET, self.rng.choice(QUOTA_KEYS))

    def op_quota_copy(self, kind: str) -> None:
        source = self.a_source()
        if source is not None:
            self.copy(kind, source, QUOTA_BUCKET, self.rng.choice(QUOTA_KEYS))

    def op_quota_multipart(self, kind: str) -> None:
        self.multipart(kind, QUOTA_BUCKET, self.rng.choice(QUOTA_KEYS))


# -- after a restart -----------------------------------------------------------------------


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


async def _offline(data_dir: Path, job: Callable[[Any], Awaitable[T]]) -> T:
    """``job(ctx)`` with a service context of the gateway's data dir, in this process."""
    from gateway.metadata.db import Database
    from gateway.service.context import Context
    from gateway.settings import Settings
    from storage_backends.registry import open_backend

    settings = Settings.from_env(data_dir=str(data_dir),
                                 database_url=database_for(data_dir) or None)
    backend = open_backend(settings.backend, data_dir=settings.data_dir,
                           s3=settings.s3_options())
    db = Database(settings.effective_database_url)
    await db.start()
    try:
        return await job(Context(settings, db, backend))
    finally:
        await db.aclose()
        await backend.aclose()


def collect_garbage(data_dir: Path) -> int:
    """The gateway's garbage collector over ``data_dir`` with no grace period (the workload
    is stopped: no write is in flight); the blobs it removed."""
    from gateway.service.gc import collect_garbage as collect

    return asyncio.run(_offline(data_dir, lambda ctx: collect(ctx, grace_seconds=0)))


def housekeeping_runs(data_dir: Path) -> int:
    """How often the gateways' own housekeeping (with its garbage collection) ran."""
    from sqlalchemy import select

    from gateway.metadata.models import job_leases

    async def runs(ctx: Any) -> int:
        return int(await ctx.db.read(lambda conn: conn.execute(
            select(job_leases.c.runs).where(job_leases.c.name == "housekeeping"))
            .scalar() or 0))

    return asyncio.run(_offline(data_dir, runs))


class Checker:
    """One check after a restart; see the module. Records into ``report``."""

    def __init__(self, server: GatewayProcess, model: Model, report: Report,
                 label: str) -> None:
        self.server = server
        self.model = model
        self.report = report
        self.label = label
        self.s3 = s3_client(server)

    def fail(self, message: str, figure: str = "mismatches") -> None:
        self.report.add(figure)
        self.report.fail(f"{self.label}: {message}")

    def run(self) -> None:
        model = self.model
        observed: dict[BKey, int | None] = {}
        usage: dict[str, list[int]] = {}
        for bucket in (BUCKET, QUOTA_BUCKET):
            listed = self.list_objects(bucket)
            for key in sorted(set(listed) - model.known_keys(bucket)):
                self.fail(f"{bucket}/{key} is listed but was never written")
            for key in sorted(model.known_keys(bucket) | set(listed)):
                observed[(bucket, key)] = self.check_key(bucket, key, listed.get(key))
            usage[bucket] = [sum(size for size, _ in listed.values()), len(listed)]
        parts = self.check_uploads(observed)
        self.check_quota({b: (used + parts[b], count) for b, (used, count) in usage.items()},
                         "with the open uploads' parts")
        self.abort_leftovers()
        model.resolve(observed)
        self.check_fsck(usage)
        self.check_quota({b: (used, count) for b, (used, count) in usage.items()},
                         "after aborting the uploads", wait_reserved=True)

    # -- objects ----------------------------------------------------------------------------

    def list_objects(self, bucket: str) -> dict[str, tuple[int, str]]:
        listed: dict[str, tuple[int, str]] = {}
        kwargs: dict[str, Any] = {}
        while True:
            page = self.s3.list_objects_v2(Bucket=bucket, **kwargs)
            for entry in page.get("Contents", []):
                if entry["Key"] in listed:
                    self.fail(f"{bucket}/{entry['Key']} is listed twice")
                listed[entry["Key"]] = (entry["Size"], entry["ETag"])
            if not page.get("IsTruncated"):
                return listed
            kwargs = {"ContinuationToken": page["NextContinuationToken"]}

    def head(self, bucket: str, key: str) -> tuple[int, str] | None:
        try:
            got = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        return int(got["ContentLength"]), str(got["ETag"])

    def check_key(self, bucket: str, key: str, entry: tuple[int, str] | None) -> int | None:
        """The version ``bucket/key`` holds (None: absent; DAMAGED: torn or unreadable),
        checked against what it may hold."""
        possible = self.model.candidates((bucket, key))
        shown = sorted(possible, key=lambda v: -1 if v is None else v)
        try:
            head = self.head(bucket, key)
        except (ClientError, BotoCoreError) as exc:
            self.fail(f"HEAD {bucket}/{key} failed: {exc}")
            return DAMAGED
        if entry is None:
            if head is not None:
                self.fail(f"HEAD finds {bucket}/{key} ({head}), the listing does not")
            if None not in possible:
                self.fail(f"acknowledged write lost: {bucket}/{key} is gone, it should "
                          f"hold one of versions {shown}")
            return None
        if head != entry:
            self.fail(f"{bucket}/{key}: the listing says {entry}, HEAD {head}")
        try:
            got = self.s3.get_object(Bucket=bucket, Key=key)
            data = got["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            self.fail(f"{bucket}/{key} is listed but cannot be read: {exc}")
            return DAMAGED
        self.report.add("objects checked")
        self.report.add("bytes checked", len(data))
        vid = vid_of(data)
        version = self.model.versions.get(vid) if vid is not None else None
        if version is None or data != version.body():
            self.fail(f"{bucket}/{key} holds a torn body ({len(data)} bytes, header "
                      f"{data[:HEADER_LEN]!r}); it should hold one of versions {shown}")
            return DAMAGED
        if vid not in possible:
            self.fail(f"{bucket}/{key} holds version {vid}, not one of {shown}"
                      + (" (an acknowledged write lost)" if None not in possible else ""))
        etags = {got["ETag"], entry[1]}
        if etags != {version.etag} or len(data) != entry[0]:
            self.fail(f"{bucket}/{key} version {vid}: ETags {sorted(etags)} and size "
                      f"{entry[0]} listed, expected {version.etag} and {len(data)}")
        return vid

    # -- multipart uploads ------------------------------------------------------------------

    def list_uploads(self, bucket: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = self.s3.list_multipart_uploads(Bucket=bucket, **kwargs)
            found += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
            if not page.get("IsTruncated"):
                return found
            kwargs = {"KeyMarker": page["NextKeyMarker"],
                      "UploadIdMarker": page["NextUploadIdMarker"]}

    def check_uploads(self, observed: dict[BKey, int | None]) -> dict[str, int]:
        """Every upload left open is one a client opened and did not finish; the bytes of
        their parts, per bucket."""
        model = self.model
        parts: dict[str, int] = {}
        self.leftovers: list[tuple[str, str, str]] = []
        listed_ids = set()
        maybe_created = list(model.maybe_created)
        for bucket in (BUCKET, QUOTA_BUCKET):
            parts[bucket] = 0
            for key, upload_id in self.list_uploads(bucket):
                listed_ids.add(upload_id)
                self.leftovers.append((bucket, key, upload_id))
                sizes = [p["Size"] for p in self.s3.list_parts(
                    Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])]
                parts[bucket] += sum(sizes)
                upload = model.uploads.get(upload_id)
                if upload is None:
                    if (bucket, key) in maybe_created and not sizes:
                        maybe_created.remove((bucket, key))
                    else:
                        self.fail(f"upload {upload_id} of {bucket}/{key} is listed, with "
                                  f"{len(sizes)} part(s), but no client opened it")
                elif upload.state in ("completed", "aborted"):
                    self.fail(f"upload {upload_id} of {bucket}/{key} was {upload.state} "
                              "(acknowledged) but is still listed")
                elif upload.state == "completing" and observed.get(upload.bkey) == upload.vid:
                    self.fail(f"upload {upload_id} of {bucket}/{key} completed (the key "
                              "holds its object) but is still listed")
        for upload_id, upload in model.uploads.items():
            if upload.state == "open" and upload_id not in listed_ids:
                self.fail(f"upload {upload_id} of {upload.bkey} was opened and never "
                          "completed or aborted, but is gone")
        self.report.add("open uploads left by kills", len(self.leftovers))
        return parts

    def abort_leftovers(self) -> None:
        for bucket, key, upload_id in self.leftovers:
            self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        self.model.uploads = {}

    # -- quota, fsck, garbage ---------------------------------------------------------------

    def quota_usage(self) -> dict[str, dict[str, Any]]:
        result = run_cli_here(self.server.data_dir, "quota", "list", "--json")
        if result.returncode:
            raise RuntimeError(f"gateway quota list failed: {result.stderr}")
        return {u["bucket"]: u for u in json.loads(result.stdout)}

    def check_quota(self, expected: dict[str, tuple[int, int]], when: str, *,
                    wait_reserved: bool = False) -> None:
        usage = self.quota_usage()
        for bucket, (used, count) in expected.items():
            got = usage[bucket]
            if (got["used_bytes"], got["used_objects"]) != (used, count):
                self.fail(f"quota of {bucket} {when}: usage {got['used_bytes']} bytes, "
                          f"{got['used_objects']} objects; stored {used} bytes, {count} "
                          "objects", "quota mismatches")
        if not wait_reserved:
            return
        # The dead instance's reservations go once it has missed three heartbeats.
        deadline = time.monotonic() + 15
        while True:
            held = {b: (u["reserved_bytes"], u["reserved_objects"]) for b, u in usage.items()
                    if u["reserved_bytes"] or u["reserved_objects"]}
            if not held:
                return
            if time.monotonic() > deadline:
                self.fail(f"quota reservations of the killed instance stayed: {held}",
                          "quota mismatches")
                return
            time.sleep(0.25)
            usage = self.quota_usage()

    def fsck(self, *options: str) -> dict[str, Any]:
        env = {**os.environ, "GATEWAY_GC_GRACE_SECONDS": "0"}
        result = run_cli_here(self.server.data_dir, "fsck", "--json", *options, env=env)
        if result.returncode not in (0, 1):
            raise RuntimeError(f"gateway fsck failed: {result.stderr}")
        return dict(json.loads(result.stdout))

    def check_fsck(self, usage: dict[str, list[int]]) -> None:
        before = self.fsck()
        self.report.add("orphan blobs found after kills", before["orphans"]["count"])
        damage = {name: before[name] for name in ("missing", "size_mismatches",
                                                  "checksum_mismatches", "errors")
                  if before[name]["count"]}
        if damage:
            self.fail(f"gateway fsck finds damage: {json.dumps(damage)[:600]}",
                      "fsck findings after GC")
        self.report.add("orphan blobs collected",
                        collect_garbage(self.server.data_dir))
        after = self.fsck("--checksums")
        if after["problems"]:
            self.fail(f"gateway fsck after garbage collection: {after['problems']} "
                      f"problem(s): {json.dumps(after)[:800]}", "fsck findings after GC")
        self.report.add("bytes checked by fsck", after["bytes_read"])
        self.check_disk(sum(used for used, _ in usage.values()))

    def check_disk(self, stored: int) -> None:
        """The blob store holds the objects' bytes and nothing else (segments of
        multipart objects and hard links of copies count once per object), and no staging
        file outlived the killed instance."""
        root = self.server.data_dir / "objects"
        # Besides blobs and segments: manifests, and the segments' note of their upload's
        # key.
        on_disk = sum(p.stat().st_size for p in (root / "blobs").rglob("*")
                      if p.is_file() and not p.name.endswith("@manifest")
                      and not (p.name == "key" and "@seg-" in p.parent.name))
        if on_disk != stored:
            self.fail(f"the blob store holds {on_disk} bytes, the objects {stored}",
                      "bytes unaccounted on disk")
        stray = [p for p in (root / "tmp").rglob("*")
                 if p.is_file() and not p.name.endswith(".lock")]
        # Every upload is completed or aborted by now. A kill between the backend opening
        # an upload and the commit of its row leaves the backend's upload, empty but for
        # the note of its key, with no row to abort it by: counted (a known leak of a few
        # bytes per such kill, which nothing collects); parts left there are a failure.
        uploads = [p for p in (root / "uploads").iterdir() if p.is_dir()]
        empty = {p.name for p in uploads if [c.name for c in p.iterdir()] == ["key"]}
        self.report.figure("empty backend uploads left by kills (no row)", len(empty))
        stray += [p for p in uploads if p.name not in empty]
        if stray:
            self.fail(f"{len(stray)} staging file(s) or upload(s) with parts left after "
                      f"the restart, e.g. {stray[:3]}", "bytes unaccounted on disk")


# -- the campaign --------------------------------------------------------------------------


def _kill_moment(model: Model, rng: random.Random, budget: float) -> str:
    """Wait for the moment to kill: a random time, or (one time in three) the moment a
    multipart completion or a copy is in flight. Which it was."""
    targeted = rng.random() < 1 / 3
    deadline = time.monotonic() + budget
    time.sleep(min(budget, rng.uniform(0.4, 1.0)))
    if not targeted:
        time.sleep(max(0.0, deadline - time.monotonic()))
        return "random"
    while time.monotonic() < deadline:
        with model.lock:
            busy = model.inflight["multipart"] + model.inflight["quota-multipart"] + \
                model.inflight["copy"] + model.inflight["quota-copy"]
        if busy:
            time.sleep(rng.uniform(0, 0.03))
            return "targeted"
        time.sleep(0.005)
    return "random"


def run(workdir: Path, *, long: bool = False) -> Report:
    report = Report("crash", long=long)
    kills = 50 if long else 6
    workers = 8 if long else 6
    epoch = (1.0, 5.0) if long else (0.8, 2.5)
    rng = random.Random(1212 if long else 12)
    for name in ("kills survived", "mismatches", "quota mismatches",
                 "fsck findings after GC", "bytes unaccounted on disk"):
        report.figure(name, 0)
    model = Model()
    server = GatewayProcess(workdir / "data", env_extra=dict(GATEWAY_ENV))
    restarts: list[float] = []
    checking = 0.0
    try:
        server.start()
        setup = s3_client(server)
        setup.create_bucket(Bucket=BUCKET)
        setup.create_bucket(Bucket=QUOTA_BUCKET)
        quota = run_cli(server.data_dir, "quota", "set", QUOTA_BUCKET, "--max-bytes",
                        str(QUOTA_BYTES), "--max-objects", str(QUOTA_OBJECTS), "--json")
        if quota.returncode:
            raise RuntimeError(f"gateway quota set failed: {quota.stderr}")
        report.figure("workers", workers)
        report.figure("quota of the limited bucket",
                      f"{QUOTA_BYTES // MiB} MiB, {QUOTA_OBJECTS} objects")
        moments: Counter[str] = Counter()
        for cycle in range(kills):
            stop = threading.Event()
            model.killed.clear()
            clients = [s3_client(server, timeout=20) for _ in range(workers)]
            threads = [Worker(n, model, clients[n], rng.randrange(2**32), stop)
                       for n in range(workers)]
            for thread in threads:
                thread.start()
            moments[_kill_moment(model, rng, rng.uniform(*epoch))] += 1
            model.killed.set()
            server.kill()
            stop.set()
            for thread in threads:
                thread.join(60)
                if thread.is_alive():
                    raise RuntimeError(f"{thread.name} did not stop")
            report.add("writes in doubt at kills", model.in_doubt())
            started = time.monotonic()
            server.start()
            restarts.append(time.monotonic() - started)
            started = time.monotonic()
            Checker(server, model, report, f"after kill {cycle + 1}").run()
            checking += time.monotonic() - started
            report.add("kills survived")
            if long:
                print(f"   kill {cycle + 1}/{kills}: {report.failure_count} failure(s)",
                      file=sys.stderr, flush=True)
        report.figure("kills at a random moment", moments["random"])
        report.figure("kills with a completion or copy in flight", moments["targeted"])
    finally:
        server.stop()
    report.figure("housekeeping runs of the gateways (live GC)",
                  housekeeping_runs(server.data_dir))
    for kind, _ in OPERATIONS:
        report.figure(f"acknowledged {kind}", model.acked[kind])
    report.figure("acknowledged in all", sum(model.acked.values()))
    for code, count in sorted(model.refused.items()):
        report.figure(f"refused {code}", count)
    report.figure("requests in doubt at kills", model.requests_in_doubt)
    report.figure("5xx answers", model.server_errors)
    report.figure("transport errors before a kill", model.transport_errors_before_kill)
    report.figure("200 answers whose body the kill cut off", model.bodies_cut_by_kill)
    for message in model.wrong_answers:
        report.fail(f"wrong answer: {message}")
    report.figure("wrong answers", len(model.wrong_answers))
    if restarts:
        report.figure("restart seconds p50", round(statistics.median(restarts), 2))
        report.figure("restart seconds max", round(max(restarts), 2))
    report.figure("seconds checking", round(checking, 1))
    return report
