"""Security campaign: tenant isolation through every door, timing-safe comparisons, secrets
at rest, secrets in logs, and TLS.

1. **Isolation matrix** (:mod:`campaigns._security_matrix`, :mod:`campaigns._security_ws`):
   two tenants, a disabled key, a disabled user, revoked / expired / logged-out
   credentials, through S3, presigned URLs, POST policy forms, the JSON API, the change
   feed, the WebSocket and the web console. Every refusal cell has a positive control (the
   owner, same operation, effect checked); a refused request must not have changed
   anything either. Access lost while a WebSocket is subscribed must stop its events.
2. **Timing-safe comparisons** (:mod:`campaigns._timing_audit`): an AST scan of the
   modules that verify credentials.
3. **At rest**: the SQLite database, its WAL and shared-memory files, byte for byte: no
   password, API token, session token or S3 secret key in clear.
4. **TLS**: ``gateway serve --ssl-certfile/--ssl-keyfile`` with a self-signed certificate
   for 127.0.0.1; boto3 and httpx trusting it; plain HTTP and untrusting clients refused.
5. **Secrets in logs**: every gateway log line (at debug level, access lines included)
   searched for every secret, signature and token the campaign used, and for their shapes.
6. **Egress** (:mod:`campaigns._security_egress`): bots' webhook URLs aimed at loopback (in
   every spelling), cloud metadata and private ranges reach nothing.
"""

from __future__ import annotations

import functools
import hashlib
import re
import signal
import sqlite3
import ssl
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

import boto3
import httpx
from botocore.config import Config

from campaigns import _security_api as api_channels
from campaigns import _security_matrix as matrix_channels
from campaigns._gateway import running_gateway
from campaigns._report import Report
from campaigns._security_egress import egress
from campaigns._security_matrix import _form, _signed, post_form
from campaigns._security_world import (
    DOC,
    Matrix,
    Secrets,
    World,
    build,
    http_outcome,
    kill_credentials,
    provision,
    s3_outcome,
    sqlite_url,
)
from campaigns._security_ws import ws_channel
from campaigns._timing_audit import audit
from gateway.auth.credentials import PREFIX
from gateway.settings import Settings
from tests._secret_scan import scan
from tests._tls import TlsGateway, self_signed

T = TypeVar("T")

#: Characters of a secret that, found together in a log line, count as a leak.
FRAGMENT = 16

#: Every gateway of the campaign logs everything: access lines and debug records too.
LOG_ENV = {"GATEWAY_LOG_LEVEL": "debug"}


def run(workdir: Path, *, long: bool = False) -> Report:
    report = Report("security", long=long)
    secrets = Secrets()
    logs: list[Path] = []
    rounds: list[tuple[str, dict[str, str]]] = [("1 worker", {})]
    if long:
        rounds.append(("2 workers", {"GATEWAY_WORKERS": "2"}))
    matrix = Matrix(report)
    for label, env in rounds:
        data = workdir / f"matrix-{len(logs)}" / "data"
        isolation(report, matrix, secrets, data, label, {**LOG_ENV, **env}, logs, full=long)
    matrix.figures()
    timing(report)
    guarded(report, "tls", functools.partial(tls, report, secrets, workdir / "tls" / "data",
                                             logs, requests=40 if long else 12))
    guarded(report, "egress", functools.partial(egress, report, workdir / "egress" / "data"))
    logged(report, secrets, logs)
    report.figure("S3 requests sent by boto3", secrets.sent)
    return report


# -- 1 and 3: the matrix, then the database --------------------------------------------------


def isolation(report: Report, matrix: Matrix, secrets: Secrets, data: Path, label: str,
              env: dict[str, str], logs: list[Path], *, full: bool) -> None:
    started = time.monotonic()
    tenants = provision(data, secrets)
    workers = int(env.get("GATEWAY_WORKERS", "1"))
    with running_gateway(data, **env, GATEWAY_DATABASE_URL=sqlite_url(data)) as server:
        assert server.log_path is not None
        logs.append(server.log_path)
        world = build(server, data, report, secrets, tenants)
        world.full = full
        report.figure(f"seconds: setup ({label})", round(time.monotonic() - started, 1))
        try:
            started = time.monotonic()
            before_disable(world, matrix)
            waited = kill_credentials(world, workers=workers)
            report.figure(f"seconds until a disabled user's key was refused ({label})",
                          round(waited, 2))
            # The busiest channels side by side (each cell has victims of its own).
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(lambda channel: guarded(
                    report, f"{channel.__name__} ({label})",
                    functools.partial(channel, world, matrix)),
                    (matrix_channels.s3_channel, matrix_channels.presigned_channel,
                     api_channels.json_channel)))
            for channel in (matrix_channels.post_channel, api_channels.changes_channel,
                            api_channels.console_channel):
                guarded(report, f"{channel.__name__} ({label})",
                        functools.partial(channel, world, matrix))
            endings = guarded(report, f"ws_channel ({label})",
                              functools.partial(ws_channel, world, matrix)) or {}
            report.figure(f"matrix seconds ({label})", round(time.monotonic() - started, 1))
            for cell, ending in endings.items():
                report.figure(f"ws subscription, {cell}: ended by", ending or "(silence)")
            leaks = [name for name, value in secrets.values.items()
                     if value in world.console_page]
            report.check(not leaks, f"the console page holds secrets: {leaks}")
            at_rest(report, secrets, data, "running")
        finally:
            world.close()
    at_rest(report, secrets, data, "stopped")


def guarded(report: Report, what: str, call: Callable[[], T]) -> T | None:
    """``call()``; an exception is a failure of the campaign, which goes on."""
    started = time.monotonic()
    try:
        return call()
    except Exception as exc:
        where = traceback.format_exc().strip().splitlines()[-4:]
        report.fail(f"{what} raised {exc!r}: {' | '.join(w.strip() for w in where)}")
        return None
    finally:
        report.figure(f"seconds: {what}", round(time.monotonic() - started, 1))


def before_disable(world: World, matrix: Matrix) -> None:
    """The X key works (its later refusals mean something); URLs and forms it signs now."""
    a, x = world.a, world.x
    matrix.allow("s3", "A's second key before it is disabled", s3_outcome(
        lambda: x.s3.list_objects_v2(Bucket=a.bucket)))
    urls = {f"{v} GetObject URL": _signed(world, signer, "get_object", Bucket=a.bucket,
                                          Key=DOC) for v, signer in (("v4", x.s3),
                                                                     ("v2", x.s3v2))}
    for label, url in urls.items():
        matrix.allow("presigned", f"{label} by A's second key before it is disabled",
                     http_outcome(httpx.get(url), body=a.doc))
    forms = {f"{v} POST form": (a.bucket, _form(world, signer, a.bucket, world.fresh("x")))
             for v, signer in (("v4", x.s3), ("v2", x.s3v2))}
    for label, (bucket, form) in forms.items():
        # Used once now to show it works; the same form again once the key is disabled.
        matrix.allow("post-policy", f"{label} by A's second key before it is disabled",
                     post_form(world, bucket, form))
    world.signed_before_disable = {"urls": urls, "forms": forms}
    matrix_channels.sign_expiring(world)  # expired by the time they are tried


def at_rest(report: Report, secrets: Secrets, data: Path, when: str) -> None:
    """No secret in clear in the database's files (the WAL and its index included)."""
    files = sorted(p for p in data.glob("gateway.db*") if p.is_file())
    stored = {p.name: p.read_bytes() for p in files}
    report.add("database bytes scanned", sum(len(b) for b in stored.values()))
    report.check(any(name == "gateway.db" for name in stored),
                 f"no SQLite database in {data} ({when})")
    values = secrets.values
    report.add("plaintext secrets looked for at rest", len(values))
    found = [f"{label} in {name}" for label, value in values.items()
             for name, content in stored.items() if value.encode() in content]
    report.add("plaintext secrets found at rest", len(found))
    for where in found:
        report.fail(f"in clear at rest ({when}): {where}")
    if when == "running":
        stored_forms(report, secrets, data / "gateway.db")


def stored_forms(report: Report, secrets: Secrets, database: Path) -> None:
    """What is there instead: S3 secrets sealed (Fernet, ``enc1:``), passwords as scrypt
    hashes, API tokens and sessions as the SHA-256 of the token."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        keys = [row[0] for row in db.execute("SELECT secret FROM access_keys")]
        passwords = [row[0] for row in db.execute(
            "SELECT password_hash FROM users WHERE password_hash IS NOT NULL")]
        hashes = {row[0] for table in ("api_tokens", "sessions")
                  for row in db.execute(f"SELECT token_hash FROM {table}")}
    report.check(all(k.startswith(PREFIX) for k in keys) and len(keys) >= 5,
                 f"S3 secrets not all sealed: {sum(not k.startswith(PREFIX) for k in keys)}")
    report.check(all(p.startswith("scrypt$") for p in passwords) and len(passwords) >= 4,
                 "passwords not all stored as scrypt hashes")
    report.check(all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes),
                 "token hashes of another shape")
    tokens = [v for label, v in secrets.values.items()
              if label.startswith(("token ", "session ")) and "(base64)" not in label]
    hashed = sum(hashlib.sha256(t.encode()).hexdigest() in hashes for t in tokens)
    report.add("S3 secrets stored sealed", len(keys))
    report.add("passwords stored as scrypt hashes", len(passwords))
    # Logged-out sessions and every row of a deleted user are gone; the rest are there.
    report.add("API tokens and sessions found stored as SHA-256", hashed)
    report.check(hashed >= len(tokens) // 2, f"only {hashed} of {len(tokens)} tokens and "
                                            "sessions found by their SHA-256")


# -- 2 ---------------------------------------------------------------------------------------


def timing(report: Report) -> None:
    result = audit()
    report.figure("timing audit: modules", result.files)
    report.figure("timing audit: comparisons audited", result.comparisons)
    report.figure("timing audit: compare_digest calls", result.timing_safe)
    report.figure("timing audit: secrets compared with ==/!=", len(result.flagged))
    for where in result.flagged:
        report.fail(f"not timing-safe: {where}")


# -- 4 ---------------------------------------------------------------------------------------


def tls(report: Report, secrets: Secrets, data: Path, logs: list[Path], *,
        requests: int) -> None:
    if "ssl_certfile" not in {f.name for f in fields(Settings)}:
        report.fail("gateway serve has no ssl_certfile setting")
        return
    cert, key = self_signed(data.parent / "pki")
    server = TlsGateway.serving(data, cert, key, LOG_ENV)
    served = 0
    try:
        server.start()
        assert server.log_path is not None
        logs.append(server.log_path)
        trusting = ssl.create_default_context(cafile=str(cert))
        s3 = secrets.watch(boto3.client(
            "s3", endpoint_url=server.url, region_name="us-east-1",
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
            verify=str(cert), config=Config(retries={"total_max_attempts": 1})))
        bucket = "tls-bucket"
        s3.create_bucket(Bucket=bucket)
        served += 1
        bodies = {f"k{i:03d}": f"over tls {i}".encode() * (i + 1) for i in range(requests)}
        for k, body in bodies.items():
            s3.put_object(Bucket=bucket, Key=k, Body=body)
            report.check(s3.get_object(Bucket=bucket, Key=k)["Body"].read() == body,
                         f"TLS: {k} came back different")
            served += 2
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        served += 1
        report.check(listed == sorted(bodies), f"TLS: listing {listed[:3]}…")
        for version in ("s3v4", "s3"):
            signer = boto3.client(
                "s3", endpoint_url=server.url, region_name="us-east-1", verify=str(cert),
                aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
                config=Config(signature_version=version))
            url = secrets.add_url(signer.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": "k000"}, ExpiresIn=300))
            report.check(url.startswith("https://127.0.0.1:"), f"TLS presigned URL: {url[:40]}")
            answer = httpx.get(url, verify=trusting)
            served += 1
            report.check(answer.status_code == 200 and answer.content == bodies["k000"],
                         f"TLS: presigned {version} GET {answer.status_code}")
        refusals = 0
        plain = server.url.replace("https://", "http://")
        try:
            answer = httpx.get(plain + "/healthz", timeout=5)
            report.check(answer.status_code >= 400,
                         f"plain HTTP to the TLS port was served: {answer.status_code}")
        except httpx.HTTPError:
            pass
        refusals += 1
        try:
            httpx.get(server.url + "/healthz", timeout=5)  # the system's trust store
            report.fail("a client that does not trust the certificate was served")
        except httpx.ConnectError as exc:
            report.check("CERTIFICATE_VERIFY_FAILED" in str(exc),
                         f"untrusting httpx: {exc}")
        refusals += 1
        untrusting = boto3.client(
            "s3", endpoint_url=server.url, region_name="us-east-1",
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
            config=Config(retries={"total_max_attempts": 1}))
        try:
            untrusting.list_buckets()
            report.fail("boto3 without the certificate was served")
        except Exception as exc:  # botocore's SSLError
            report.check("CERTIFICATE_VERIFY_FAILED" in str(exc), f"untrusting boto3: {exc}")
        refusals += 1
        report.figure("TLS requests served", served)
        report.figure("TLS connections refused (plain HTTP, untrusted)", refusals)
    finally:
        # Graceful, and prompt although the clients above keep idle connections open.
        stopping = time.monotonic()
        server.stop()
        report.figure("seconds to stop the TLS gateway", round(time.monotonic() - stopping, 1))
        code = server.proc.returncode if server.proc else None
        # uvicorn re-raises the SIGTERM it handled; SIGKILL means the stop gave up on it.
        report.check(code == -signal.SIGTERM,
                     f"the TLS gateway did not stop cleanly: exit status {code}")


# -- 5 ---------------------------------------------------------------------------------------


def logged(report: Report, secrets: Secrets, logs: list[Path]) -> None:
    values = secrets.all()
    result = scan(logs, values, fragment=FRAGMENT)
    report.figure("log files scanned", result.files)
    report.figure("log lines scanned", result.lines)
    report.figure("secret values looked for in logs", len(values))
    report.figure("secrets found in logs", len(result.hits))
    for hit in result.hits:
        report.fail(f"secret in a log: {hit}")
    # The access log did run (so the scan looked at request lines).
    report.check(result.lines > 0 and any("op=" in p.read_text(errors="replace")
                                          for p in logs), "no access lines were logged")

