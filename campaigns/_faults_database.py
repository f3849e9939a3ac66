"""Faults of the metadata database: SQLite locked by another process; PostgreSQL
unreachable, or gone between a COMMIT and its answer."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from campaigns._faultkit import (
    KiB,
    MiB,
    Phase,
    SlowUpload,
    TcpProxy,
    answer,
    api_client,
    api_token,
    check_no_internal_errors,
    fill,
    has_setting,
    head_status,
    md5,
    outcome,
    presigned,
    timed,
    tmpfs,
    until,
)
from campaigns._gateway import running_gateway, s3_client
from campaigns._report import Report
from tests._server import GatewayProcess, free_port, run_cli_here

# -- database locked (SQLite) ----------------------------------------------------------------

#: The gateway's busy timeout in this campaign: writes wait this long for the lock.
BUSY_SECONDS = 2


def database_locked(work: Path, report: Report, long: bool) -> None:
    """SQLite: locked by another process, then its disk full (the data dir on a small
    tmpfs, blobs elsewhere)."""
    phase = Phase(report, "database locked")
    cycles = 3 if long else 1
    report.figure("database locked: busy timeout seconds", BUSY_SECONDS)
    if not has_setting("database_busy_timeout"):
        report.fail("database locked: the gateway has no GATEWAY_DATABASE_BUSY_TIMEOUT")
        return
    with tmpfs(work / "medium", "16m") as refused:
        data = work / ("data" if refused else "medium/data")
        with running_gateway(data, GATEWAY_DATABASE_URL="",
                             GATEWAY_DATABASE_BUSY_TIMEOUT=str(BUSY_SECONDS),
                             GATEWAY_BACKEND=f"fs://{work / 'objects'}") as gw:
            s3 = s3_client(gw)
            api = api_client(gw, api_token(gw.data_dir, {"GATEWAY_DATABASE_URL": ""}))
            s3.create_bucket(Bucket="locked")
            kept = os.urandom(32 * KiB)
            s3.put_object(Bucket="locked", Key="kept", Body=kept)
            for cycle in range(cycles):
                _locked_cycle(phase, report, gw, s3, api, cycle, kept)
            if refused:
                report.figure("database full: skipped", f"no tmpfs here ({refused})")
            else:
                full = Phase(report, "database full")
                for cycle in range(cycles):
                    _database_full_cycle(full, report, s3, api, work / "medium", cycle, kept)
                full.close()
            api.close()
            check_no_internal_errors(report, "database locked", gw)
    phase.close()


def _database_full_cycle(phase: Phase, report: Report, s3: Any, api: httpx.Client,
                         medium: Path, cycle: int, kept: bytes) -> None:
    """SQLite's disk fills: writes answer 507 (reads go on); space back, they succeed."""
    report.add("database full: bytes of filler", fill(medium / "filler"))
    phase.injected()
    for n in range(10 if report.long else 4):
        status, code = outcome(partial(s3.put_object, Bucket="locked",
                                       Key=f"full-{cycle}-{n}-" + "k" * 200, Body=b"v" * 100))
        phase.saw("PutObject", status, [507], code)
        report.check(status != 507 or code == "InsufficientStorage",
                     f"database full: PutObject answered {code!r}")
    phase.saw("DeleteObject", outcome(partial(s3.delete_object, Bucket="locked",
                                              Key="kept"))[0], [507, 204])
    status, code, _ = answer(api.put(f"/buckets/locked/objects/full-json-{cycle}",
                                     content=b"j" * 100))
    phase.saw("JSON API upload", status, [507], code)
    status, _ = outcome(lambda: s3.get_object(Bucket="locked", Key="kept")["Body"].read())
    phase.saw("GetObject", status, [200])
    (medium / "filler").unlink()
    freed = time.monotonic()
    recovered = until(lambda: s3.put_object(Bucket="locked", Key=f"full-after-{cycle}",
                                            Body=b"a")["ResponseMetadata"]
                      ["HTTPStatusCode"] == 200, 30)
    if not report.check(recovered is not None, "database full: writes did not recover"):
        return
    phase.recovered(time.monotonic() - freed)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="locked", Prefix="full-")
              .get("Contents", [])]
    report.check(listed == [f"full-after-{cycle}"],
                 f"database full: refused writes are listed: {listed}")
    if head_status(s3, "locked", "kept") == 404:  # the delete went through: fine, put back
        s3.put_object(Bucket="locked", Key="kept", Body=kept)
    got = s3.get_object(Bucket="locked", Key="kept")["Body"].read()
    report.check(got == kept, "database full: an object stored before the fault changed")
    s3.delete_object(Bucket="locked", Key=f"full-after-{cycle}")


def _locked_cycle(phase: Phase, report: Report, gw: GatewayProcess, s3: Any, api: httpx.Client,
                  cycle: int, kept: bytes) -> None:
    locker = sqlite3.connect(gw.data_dir / "gateway.db", timeout=30, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        phase.injected()
        locked_at = time.monotonic()
        put_url = presigned(s3, "put_object", "locked", f"refused-{cycle}")
        writes: dict[str, Callable[[], tuple[int, str, dict[str, str]]]] = {
            "PutObject": lambda: answer(httpx.put(put_url, content=b"x" * 5000, timeout=60)),
            "DeleteObject": lambda: (*outcome(lambda: s3.delete_object(
                Bucket="locked", Key="kept")), {}),
            "CreateBucket": lambda: (*outcome(lambda: s3.create_bucket(
                Bucket=f"refused-{cycle}")), {}),
            "CopyObject": lambda: (*outcome(lambda: s3.copy_object(
                Bucket="locked", Key=f"copy-{cycle}",
                CopySource={"Bucket": "locked", "Key": "kept"})), {}),
            "JSON API upload": lambda: answer(api.put(
                f"/buckets/locked/objects/json-{cycle}", content=b"y" * 5000)),
        }
        reads: dict[str, Callable[[], tuple[int, str, dict[str, str]]]] = {
            "GetObject": lambda: (*outcome(lambda: s3.get_object(
                Bucket="locked", Key="kept")["Body"].read()), {}),
            "HeadObject": lambda: (*outcome(lambda: s3.head_object(
                Bucket="locked", Key="kept")), {}),
            "ListObjectsV2": lambda: (*outcome(lambda: s3.list_objects_v2(Bucket="locked")),
                                      {}),
            "JSON API download": lambda: answer(api.get("/buckets/locked/objects/kept")),
        }
        slowest = 0.0
        with ThreadPoolExecutor(len(writes) + len(reads)) as pool:
            futures = {name: (pool.submit(timed, call), name in writes)
                       for name, call in {**writes, **reads}.items()}
            for name, (future, is_write) in futures.items():
                (status, code, headers), seconds = future.result()
                if is_write:
                    slowest = max(slowest, seconds)
                    if phase.saw(name, status, [503], code):
                        report.check(name != "PutObject" or (
                            code in ("ServiceUnavailable", "SlowDown")
                            and "retry-after" in headers),
                                     f"database locked: {name} answered {code!r} without "
                                     f"Retry-After ({headers})")
                    report.check(seconds < 3 * BUSY_SECONDS + 5,
                                 f"database locked: {name} took {seconds:.1f} s")
                else:
                    phase.saw(name, status, [200], code)
        report.figure("database locked: slowest refused write seconds", round(slowest, 2))
        report.figure("database locked: lock held seconds",
                      round(time.monotonic() - locked_at, 1))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    released = time.monotonic()
    recovered = until(lambda: s3.put_object(Bucket="locked", Key=f"after-{cycle}", Body=b"a")
                      ["ResponseMetadata"]["HTTPStatusCode"] == 200, 30)
    if not report.check(recovered is not None, "database locked: writes did not recover"):
        return
    phase.recovered(time.monotonic() - released)
    # Nothing refused happened; everything before is there.
    report.check(outcome(lambda: s3.head_object(Bucket="locked", Key=f"refused-{cycle}"))[0]
                 == 404, "database locked: a refused PutObject is visible")
    report.check(outcome(lambda: s3.head_bucket(Bucket=f"refused-{cycle}"))[0] == 404,
                 "database locked: a refused CreateBucket is visible")
    report.check(outcome(lambda: s3.head_object(Bucket="locked", Key=f"copy-{cycle}"))[0]
                 == 404, "database locked: a refused CopyObject is visible")
    got = s3.get_object(Bucket="locked", Key="kept")["Body"].read()
    report.check(got == kept, "database locked: a refused DeleteObject changed the object")
    response = api.put(f"/buckets/locked/objects/json-{cycle}", content=b"y" * 5000)
    report.check(response.status_code == 200,
                 f"database locked: JSON upload after release answered {response.status_code}")


# -- database unreachable (PostgreSQL) -------------------------------------------------------


def database_unreachable(work: Path, report: Report, long: bool) -> None:
    from tests import _postgres

    why = _postgres.unreachable()
    if why is not None:
        report.figure("database unreachable: skipped", why)
        return
    phase = Phase(report, "database unreachable")
    cycles = 3 if long else 1
    direct = _postgres.create_database()
    from sqlalchemy.engine import make_url

    url = make_url(direct)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432), free_port()).start()
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with running_gateway(work / "data", GATEWAY_DATABASE_URL=through,
                             GATEWAY_HEARTBEAT_SECONDS="1") as gw:
            s3 = s3_client(gw)
            api = api_client(gw, api_token(gw.data_dir, {"GATEWAY_DATABASE_URL": direct}))
            s3.create_bucket(Bucket="pgdb")
            # A quota, so large uploads hold room before their bytes come.
            done = run_cli_here(gw.data_dir, "quota", "set", "pgdb", "--max-bytes", "1GiB",
                                env={**os.environ, "GATEWAY_DATABASE_URL": direct})
            report.check(done.returncode == 0, f"database unreachable: quota set: {done.stderr}")
            kept = os.urandom(32 * KiB)
            s3.put_object(Bucket="pgdb", Key="kept", Body=kept)
            for cycle in range(cycles):
                _unreachable_cycle(phase, report, gw, s3, api, proxy, direct, cycle, kept)
            s3.create_bucket(Bucket="pgfree")
            for n in range(cycles):
                _lost_commit(phase, report, s3, proxy, n)
            api.close()
            check_no_internal_errors(report, "database unreachable", gw)
    finally:
        proxy.close()
        _postgres.drop_database(direct)
    phase.close()


def _unreachable_cycle(phase: Phase, report: Report, gw: GatewayProcess, s3: Any,
                       api: httpx.Client, proxy: TcpProxy, direct: str, cycle: int,
                       kept: bytes) -> None:
    from tests import _postgres

    # An upload in flight when the database goes: it held quota before its body came.
    uploader = SlowUpload(presigned(s3, "put_object", "pgdb", f"in-flight-{cycle}"),
                          4 * MiB, after=1).start()
    proxy.cut()
    phase.injected()
    cut_at = time.monotonic()
    attempts: dict[str, Callable[[], tuple[int, str]]] = {
        "PutObject": lambda: outcome(lambda: s3.put_object(Bucket="pgdb", Key=f"refused-{cycle}",
                                                           Body=b"x" * 1000)),
        "GetObject": lambda: outcome(lambda: s3.get_object(Bucket="pgdb", Key="kept")
                                     ["Body"].read()),
        "HeadObject": lambda: outcome(lambda: s3.head_object(Bucket="pgdb", Key="kept")),
        "ListObjectsV2": lambda: outcome(lambda: s3.list_objects_v2(Bucket="pgdb")),
        "DeleteObject": lambda: outcome(lambda: s3.delete_object(Bucket="pgdb", Key="kept")),
        "CreateMultipartUpload": lambda: outcome(lambda: s3.create_multipart_upload(
            Bucket="pgdb", Key=f"mp-{cycle}")),
        "ListBuckets": lambda: outcome(s3.list_buckets),
        "JSON API upload": lambda: answer(api.put(f"/buckets/pgdb/objects/json-{cycle}",
                                                content=b"y" * 1000))[:2],
        "JSON API download": lambda: answer(api.get("/buckets/pgdb/objects/kept"))[:2],
    }
    rounds = 3 if report.long else 1
    slowest = 0.0
    for _ in range(rounds):
        for name, call in attempts.items():
            (status, code), seconds = timed(call)
            phase.saw(name, status, [503], code)
            report.check(seconds < 15, f"database unreachable: {name} took {seconds:.1f} s")
            slowest = max(slowest, seconds)
        ready = httpx.get(gw.url + "/readyz", timeout=30).status_code
        phase.saw("/readyz", ready, [503])
        phase.saw("/healthz", httpx.get(gw.url + "/healthz", timeout=30).status_code, [200])
        scrape = httpx.get(gw.url + "/metrics", timeout=30)
        if phase.saw("/metrics", scrape.status_code, [200]):
            report.check("gateway_metadata_up 0.0" in scrape.text,
                         "database unreachable: /metrics does not report the database down")
    report.figure("database unreachable: slowest refused request seconds", round(slowest, 2))
    phase.saw("PutObject in flight", uploader.join(60), [503, 0])
    if report.long:
        time.sleep(5)  # a longer outage: pooled connections, heartbeats and retries age
    report.figure("database unreachable: outage seconds", round(time.monotonic() - cut_at, 1))
    proxy.restore()
    restored = time.monotonic()
    recovered = until(lambda: s3.put_object(Bucket="pgdb", Key=f"after-{cycle}", Body=b"a")
                      ["ResponseMetadata"]["HTTPStatusCode"] == 200, 60, interval=0.2)
    if not report.check(recovered is not None, "database unreachable: writes did not recover"):
        return
    phase.recovered(time.monotonic() - restored)
    report.check(until(lambda: httpx.get(gw.url + "/readyz").status_code == 200, 30)
                 is not None, "database unreachable: /readyz stayed not ready")
    got = s3.get_object(Bucket="pgdb", Key="kept")["Body"].read()
    report.check(got == kept, "database unreachable: an object stored before the outage changed")
    for key in (f"refused-{cycle}", f"in-flight-{cycle}", f"json-{cycle}"):
        report.check(head_status(s3, "pgdb", key) == 404,
                     f"database unreachable: {key} is visible after a refusal")
    report.check(not s3.list_multipart_uploads(Bucket="pgdb").get("Uploads"),
                 "database unreachable: a refused CreateMultipartUpload is visible")
    # What the interrupted upload held is given back.
    held = until(lambda: _postgres.query(
        direct, "SELECT reserved_bytes FROM buckets WHERE name = 'pgdb'")[0][0] == 0, 15)
    report.check(held is not None, "database unreachable: quota held by the upload cut by the "
                 "outage was never released: " + repr(_postgres.query(
                     direct, "SELECT reserved_bytes, used_bytes FROM buckets WHERE name = 'pgdb'")))
    s3.delete_object(Bucket="pgdb", Key=f"after-{cycle}")


def _lost_commit(phase: Phase, report: Report, s3: Any, proxy: TcpProxy, n: int) -> None:
    """The connection drops after an object's COMMIT reached PostgreSQL and before its
    answer came back: the client hears 503; if the row committed, the object must be
    whole (its blob kept), else absent."""
    key = f"ambiguous-{n}-{os.urandom(6).hex()}"
    body = os.urandom(64 * KiB)
    proxy.lose_commit_ack(key.encode())
    phase.injected()
    status, code = outcome(partial(s3.put_object, Bucket="pgfree", Key=key, Body=body))
    report.check(proxy.commit_lost.is_set(),
                 "database unreachable: the commit of a PUT was never intercepted")
    phase.saw("PutObject whose COMMIT answer was lost", status, [503], code)
    report.add("database unreachable: commits with a lost answer", proxy.commit_lost.is_set())
    state = until(lambda: head_status(s3, "pgfree", key) in (200, 404), 30)
    report.check(state is not None, "database unreachable: no recovery after a lost COMMIT")
    if head_status(s3, "pgfree", key) == 200:
        report.add("database unreachable: lost-answer commits that had committed")
        status, _ = outcome(lambda: s3.get_object(Bucket="pgfree", Key=key)["Body"].read())
        got = s3.get_object(Bucket="pgfree", Key=key)["Body"].read() if status == 200 else b""
        report.check(status == 200 and md5(got) == md5(body),
                     f"database unreachable: an object committed while its client heard 503 "
                     f"is listed but unreadable (GET answered {status})")
    # The same for a part: if it was recorded, the upload completes with it.
    upload = s3.create_multipart_upload(Bucket="pgfree", Key=key)["UploadId"]
    proxy.lose_commit_ack(upload.encode())
    phase.injected()
    part = os.urandom(64 * KiB)
    status, code = outcome(partial(s3.upload_part, Bucket="pgfree", Key=key, UploadId=upload,
                                   PartNumber=1, Body=part))
    report.check(proxy.commit_lost.is_set(),
                 "database unreachable: the commit of an UploadPart was never intercepted")
    phase.saw("UploadPart whose COMMIT answer was lost", status, [503], code)
    report.add("database unreachable: commits with a lost answer", proxy.commit_lost.is_set())
    listed = s3.list_parts(Bucket="pgfree", Key=key, UploadId=upload).get("Parts", [])
    if listed:
        report.add("database unreachable: lost-answer commits that had committed")
        status, code = outcome(partial(
            s3.complete_multipart_upload, Bucket="pgfree", Key=key, UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": listed[0]["ETag"]}]}))
        got = s3.get_object(Bucket="pgfree", Key=key)["Body"].read() if status == 200 else b""
        report.check(status == 200 and md5(got) == md5(part),
                     f"database unreachable: a part recorded while its client heard 503 cannot "
                     f"be completed ({status} {code})")
    else:
        s3.abort_multipart_upload(Bucket="pgfree", Key=key, UploadId=upload)
