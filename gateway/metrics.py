"""Prometheus metrics, served at ``GET /metrics`` (``GATEWAY_METRICS=off`` removes it).

Two kinds:

- **Counted per request** by the S3 endpoint and the JSON API (:func:`observe`): requests by
  API, operation and status, latency histograms, body bytes in and out, and the backend
  errors that reached a client. S3 operations are named as S3 names them (``PutObject``);
  JSON API requests by method and route template (``GET /api/v1/storage/buckets/{bucket}``),
  so the label sets stay bounded whatever the paths. Requests to the gateway's own
  endpoints (``/metrics``, ``/healthz``, ``/readyz``) are not counted: a scrape does not
  change what it reads.
- **Read from the database at scrape time** (:func:`read_snapshot`): multipart uploads in
  progress, each bucket's usage against its quota (the :data:`BUCKET_SERIES_LIMIT` largest
  buckets, with the total number of buckets beside them), and the webhook deliveries
  waiting (the job queue), with the bots whose receiver is failing. These are the same
  for every process, so they are read once per scrape rather than kept per process.

With several worker processes (``GATEWAY_WORKERS`` > 1) each worker counts in files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, set up by
:func:`prepare_multiprocess` before the workers start), and a scrape, answered by any
worker, adds up every worker's counts, those of workers that have exited included.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from gateway.logs import RequestRecord
from gateway.metadata.models import bots, buckets, changes, multipart_uploads
from gateway.service.quota import _effective
from gateway.service.webhooks import STATE_ENABLED
from storage_backends.errors import StorageError

if TYPE_CHECKING:
    from gateway.core import Gateway
    from gateway.settings import Settings

log = logging.getLogger("gateway.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Buckets reported one by one, the largest first (a series per bucket and measure).
BUCKET_SERIES_LIMIT = 1000
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LABELS = ("api", "operation")
REQUESTS = Counter("gateway_requests", "HTTP requests answered, by API (s3 or json), "
                   "operation and status.", [*_LABELS, "status"])
LATENCY = Histogram("gateway_request_duration_seconds",
                    "Time from a request's arrival to the end of its response.", _LABELS,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                             30.0, 60.0, 300.0))
BYTES_IN = Counter("gateway_request_body_bytes", "Request body bytes received.", _LABELS)
BYTES_OUT = Counter("gateway_response_body_bytes", "Response body bytes sent.", _LABELS)
BACKEND_ERRORS = Counter("gateway_backend_errors",
                         "Requests that failed on an error of the blob backend, by error.",
                         ["error"])


def observe(record: RequestRecord) -> None:
    """Count one finished request (``record.duration_ms`` set)."""
    labels = (record.api, record.operation)
    REQUESTS.labels(*labels, str(record.status)).inc()
    LATENCY.labels(*labels).observe(record.duration_ms / 1000)
    if record.bytes_in:
        BYTES_IN.labels(*labels).inc(record.bytes_in)
    if record.bytes_out:
        BYTES_OUT.labels(*labels).inc(record.bytes_out)


def count_backend_error(exc: BaseException) -> None:
    """Count ``exc`` if a backend error caused it (services turn those into gateway errors,
    such as ServiceUnavailable, keeping the original as the cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, StorageError):
            BACKEND_ERRORS.labels(type(current).__name__).inc()
            return
        seen.add(id(current))
        current = current.__cause__ or current.__context__


# -- multiprocess mode -----------------------------------------------------------------------


def prepare_multiprocess(settings: Settings) -> Path | None:
    """Before worker processes start: a fresh directory for their counts, in
    ``PROMETHEUS_MULTIPROC_DIR`` (inherited by the workers, which must see it before they
    import this module). One directory per server process, under the data dir; those of
    servers no longer running are removed. A directory the operator set is used as it is.
    """
    if not settings.metrics_enabled or settings.workers <= 1:
        return None
    if os.environ.get(MULTIPROC_ENV):
        return Path(os.environ[MULTIPROC_ENV])
    root = settings.data_dir / ".metrics"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.name.isdigit() and not _running(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    path = root / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


# -- scrape-time gauges ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BucketRow:
    name: str
    used_bytes: int
    used_objects: int
    quota_bytes: int | None
    quota_objects: int | None


@dataclass(slots=True)
class Snapshot:
    """What the database says at scrape time."""

    uploads: int = 0
    bucket_count: int = 0
    buckets: list[BucketRow] = field(default_factory=list)
    webhook_pending: int = 0
    webhook_failing_bots: int = 0
    webhook_failures: int = 0


_DELIVERING = and_(bots.c.state == STATE_ENABLED, bots.c.url.is_not(None), bots.c.url != "",
                   bots.c.bucket.is_not(None))


def read_snapshot(conn: Connection, settings: Settings,
                  limit: int = BUCKET_SERIES_LIMIT) -> Snapshot:
    snap = Snapshot()
    snap.uploads = int(conn.execute(select(func.count()).select_from(multipart_uploads))
                       .scalar_one())
    snap.bucket_count = int(conn.execute(select(func.count()).select_from(buckets))
                            .scalar_one())
    rows = conn.execute(
        select(buckets.c.name, buckets.c.used_bytes, buckets.c.used_objects,
               buckets.c.quota_bytes, buckets.c.quota_objects)
        .order_by(buckets.c.used_bytes.desc(), buckets.c.name).limit(limit)).all()
    snap.buckets = [
        BucketRow(r.name, int(r.used_bytes), int(r.used_objects),
                  _effective(r.quota_bytes, settings.default_quota_bytes),
                  _effective(r.quota_objects, settings.default_quota_objects))
        for r in rows]
    snap.webhook_pending = int(conn.execute(
        select(func.count()).select_from(changes.join(bots, changes.c.bucket == bots.c.bucket))
        .where(_DELIVERING, changes.c.seq > bots.c.delivered_seq)).scalar_one())
    failing = conn.execute(
        select(func.count(), func.coalesce(func.sum(bots.c.error_count), 0))
        .where(_DELIVERING, bots.c.error_count > 0)).one()
    snap.webhook_failing_bots, snap.webhook_failures = int(failing[0]), int(failing[1])
    return snap


def _snapshot_metrics(snap: Snapshot | None) -> Iterator[Metric]:
    up = GaugeMetricFamily("gateway_metadata_up",
                           "1 if the database answered this scrape's queries.")
    up.add_metric([], 0 if snap is None else 1)
    yield up
    if snap is None:
        return
    yield GaugeMetricFamily("gateway_multipart_uploads_active",
                            "Multipart uploads begun and neither completed nor aborted.",
                            value=snap.uploads)
    yield GaugeMetricFamily("gateway_buckets", "Buckets.", value=snap.bucket_count)
    measures = {
        "gateway_bucket_used_bytes": ("Bytes stored in the bucket.", "used_bytes"),
        "gateway_bucket_used_objects": ("Objects stored in the bucket.", "used_objects"),
        "gateway_bucket_quota_bytes": ("The bucket's byte quota (absent when unlimited).",
                                       "quota_bytes"),
        "gateway_bucket_quota_objects": ("The bucket's object quota (absent when unlimited).",
                                         "quota_objects"),
    }
    for name, (text, attr) in measures.items():
        family = GaugeMetricFamily(
            name, f"{text} The {BUCKET_SERIES_LIMIT} largest buckets.", labels=["bucket"])
        for row in snap.buckets:
            value = getattr(row, attr)
            if value is not None:
                family.add_metric([row.name], value)
        yield family
    depth = GaugeMetricFamily("gateway_job_queue_depth",
                              "Work waiting: changes not yet delivered to bots' webhooks.",
                              labels=["queue"])
    depth.add_metric(["webhooks"], snap.webhook_pending)
    yield depth
    yield GaugeMetricFamily("gateway_webhook_failing_bots",
                            "Bots whose webhook receiver failed its last delivery attempt.",
                            value=snap.webhook_failing_bots)
    yield GaugeMetricFamily("gateway_webhook_consecutive_failures",
                            "Failed delivery attempts since the last success, summed over "
                            "bots.", value=snap.webhook_failures)


class _Scrape:
    """What one scrape exposes: this process's (or every worker's) counts, and the
    snapshot. ``generate_latest`` only needs ``collect``."""

    def __init__(self, snap: Snapshot | None) -> None:
        self.snap = snap

    def collect(self) -> Iterable[Metric]:
        path = os.environ.get(MULTIPROC_ENV)
        if path:
            yield from MultiProcessCollector(None, path).collect()  # type: ignore[no-untyped-call]
        else:
            yield from REGISTRY.collect()
        yield from _snapshot_metrics(self.snap)


async def render(gateway: Gateway | None) -> bytes:
    """The ``/metrics`` body. A database that does not answer leaves its gauges out (and
    ``gateway_metadata_up`` at 0) rather than failing the scrape."""
    snap: Snapshot | None = None
    if gateway is not None:
        settings = gateway.settings
        try:
            snap = await gateway.ctx.db.read(lambda conn: read_snapshot(conn, settings))
        except Exception:
            log.warning("metrics: the database did not answer", exc_info=True)
    return generate_latest(_Scrape(snap))


__all__ = [
    "BACKEND_ERRORS", "BYTES_IN", "BYTES_OUT", "CONTENT_TYPE", "LATENCY", "REQUESTS",
    "Snapshot", "count_backend_error", "observe", "prepare_multiprocess",
    "read_snapshot", "render",
]
