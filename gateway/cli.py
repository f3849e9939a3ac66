"""The ``gateway`` command."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from gateway import admin_cli, encryption_cli, lifecycle_cli, logs, maintenance_cli, quota_cli
from gateway.settings import Settings

_HELP = {
    "host": "address to listen on",
    "port": "port to listen on",
    "data_dir": "where the database and objects live",
    "database_url": "SQLAlchemy URL (default: SQLite in the data dir)",
    "backend": "'fs' (default), 'memory', 'null' (benchmarks), or an upstream such as s3://bucket/prefix",
    "s3_endpoint": "URL of the upstream S3 server of an s3:// backend (default: AWS)",
    "s3_access_key": "access key for the upstream S3 server",
    "s3_secret_key": "secret key for the upstream S3 server",
    "s3_region": "region to sign upstream requests for (us-east-1)",
    "s3_placement": "'opaque' (default) or 'keys': objects at <prefix><bucket>/<key> upstream",
    "region": "the region the gateway reports",
    "domain": "enables virtual-host-style requests to <bucket>.<domain>",
    "workers": "uvicorn worker processes",
    "ssl_certfile": "serve HTTPS with this PEM certificate (chain)",
    "ssl_keyfile": "the certificate's PEM private key",
    "request_header_timeout": "seconds a connection has to send a request head (10)",
    "idle_timeout": "seconds a body may stall or a response go unread (60)",
    "database_busy_timeout": "seconds a SQLite write waits for a lock held elsewhere "
                             "before answering 503 (30)",
    "keep_alive_timeout": "seconds an idle keep-alive connection stays open (75)",
    "shutdown_grace_seconds": "on SIGTERM, seconds requests in flight get to finish (30)",
    "max_concurrent_uploads": "uploads one process streams at once; more get SlowDown "
                              "(256; 0: no limit)",
    "root_access_key": "the first admin's access key",
    "root_secret_key": "the first admin's secret key",
    "log_level": "debug, info, warning, error",
    "log_format": "'text' (default) or 'json': one JSON object per log line",
    "metrics": "'on' (default): GET /metrics for Prometheus, without credentials; 'off'",
    "secret_key": "encrypts S3 secrets at rest (default: <data dir>/secret.key)",
    "master_key": "SSE-S3 master key(s), base64 of 32 bytes, comma-separated, the first "
                  "encrypting (default: <data dir>/master.keys)",
    "gc_grace_seconds": "age before an unreferenced blob may be collected",
    "housekeeping_seconds": "how often upload expiry and garbage collection run (3600)",
    "cors_origins": "origins allowed cross-origin on every bucket (comma-separated)",
    "multipart_expiry": "age after which unfinished multipart uploads are aborted (7d)",
    "quota_bucket_bytes": "default bucket quota in bytes, e.g. 10GiB, or 'unlimited'",
    "quota_bucket_objects": "default bucket quota in objects, or 'unlimited'",
    "quota_max_object_size": "default largest object a bucket accepts, e.g. 100MiB",
    "heartbeat_seconds": "instance heartbeat; silent for 3 beats = presumed dead (10)",
    "session_ttl": "lifetime of a JSON API login session (12h)",
    "rate_limits": "JSON API requests per hour: 'anonymous,authenticated,admin' or 'off'",
    "rate_limit_s3": "'on': S3 requests count against the same limits (SlowDown)",
    "redis_url": "shares rate-limit counters between gateway processes",
    "clamav": "scan uploads with clamd: unix:///run/clamav/clamd.ctl or tcp://host:3310",
    "package_rules": "JSON file overriding the bot-package folder rules",
    "temp_expiry": "age after which a package's .gbdrive/temp/ objects expire (1d)",
    "change_retention": "how long the change log keeps changes (30d)",
    "webhook_timeout": "seconds a webhook receiver has to answer (10)",
    "webhook_max_backoff": "longest wait between retries to a failing webhook (1h)",
    "webhook_allowed_networks": "non-public networks webhooks may reach, e.g. 10.0.0.0/8",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="An S3-compatible object gateway for bot platforms.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the gateway")
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = f"GATEWAY_{f.name.upper()}"
        serve.add_argument(flag, dest=f.name, default=None,
                           help=f"{_HELP.get(f.name, '')} (env {env})")
    admin_cli.add_parsers(sub)
    quota_cli.add_parsers(sub)
    maintenance_cli.add_parsers(sub)
    encryption_cli.add_parsers(sub)
    lifecycle_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "quota":
        return quota_cli.run(args)
    if args.command in ("migrate", "fsck"):
        return maintenance_cli.run(args)
    if args.command == "encryption":
        return encryption_cli.run(args)
    if args.command == "lifecycle":
        return lifecycle_cli.run(args)
    return admin_cli.run(args.command, args)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.server import GuardedHttpProtocol

    # Flags win over the environment; they are passed on through it so that every uvicorn
    # worker process builds the same settings.
    for f in fields(Settings):
        value = getattr(args, f.name)
        if value is not None:
            os.environ[f"GATEWAY_{f.name.upper()}"] = str(value)
    settings = Settings.from_env()
    settings.metrics_enabled  # noqa: B018 - a bad value stops the start here
    if settings.ssl_keyfile and not settings.ssl_certfile:
        raise SystemExit("gateway serve: --ssl-keyfile needs --ssl-certfile")
    log_config = logs.logging_config(settings)
    logs.configure(settings)
    # Before any worker starts (they inherit the directory through the environment).
    metrics_dir = _prepare_metrics(settings)
    if metrics_dir is not None:
        logging.getLogger("gateway").info("worker metrics are collected in %s", metrics_dir)
    _limit_malloc_arenas()
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        log_level=settings.log_level,
        # uvicorn applies this in every worker process; the gateway writes its own access
        # lines (``gateway.access``), with the request id and without credentials.
        log_config=log_config,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=True,
        http=GuardedHttpProtocol,
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        ssl_certfile=settings.ssl_certfile or None,
        ssl_keyfile=settings.ssl_keyfile or None,
    )
    return 0


#: glibc's ``M_ARENA_MAX`` (``mallopt``), and the arenas a serving process keeps.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def _limit_malloc_arenas() -> None:
    """Two malloc arenas, unless the operator set ``MALLOC_ARENA_MAX``.

    glibc gives every thread that allocates an arena of its own, up to eight per core, and
    keeps what is freed in each: the threads that move request bodies to and from disk
    grow the process by tens of MB under sustained load (more with more cores) to hold no
    data at all. This process is limited here (before its threads start); uvicorn's worker
    processes read the variable when they start."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    os.environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)
    with contextlib.suppress(OSError, AttributeError):  # a C library without mallopt
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def _prepare_metrics(settings: Settings) -> Path | None:
    """Multiprocess metrics for several workers; imported here, where the gateway serves,
    so that other commands need not load the metrics client."""
    from gateway.metrics import prepare_multiprocess

    return prepare_multiprocess(settings)
