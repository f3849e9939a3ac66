"""``GET /metrics`` against a real gateway process: after a known workload of S3 and JSON API
requests, the counters parsed with prometheus-client's own parser equal the requests made
(by API, operation and status), the body bytes equal those on the wire, and the gauges
read at scrape time (uploads in progress, bucket usage and quota, the webhook queue) match
the state the workload left. With two worker processes, every scrape adds up both."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import httpx
import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests._server import GatewayProcess, free_port
from tests._server import cli_json as cli

API = "/api/v1"
BUCKET = "metered"
Labels = tuple[str, ...]


def scrape(server: GatewayProcess) -> dict[str, dict[Labels, float]]:
    """Every sample of ``/metrics`` by name, then by its labels' values (sorted by name)."""
    response = httpx.get(server.url + "/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = tuple(value for _, value in sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


class Tally:
    """What the test's clients sent and received, counted on their side of the wire."""

    def __init__(self) -> None:
        self.requests: Counter[Labels] = Counter()  # (api, operation, status)
        self.bytes_in: Counter[Labels] = Counter()  # (api, operation)
        self.bytes_out: Counter[Labels] = Counter()
        #: The bucket's usage as the admin API reported it at the end of the workload.
        self.usage: dict[str, Any] = {}

    def watch(self, client: Any) -> Any:
        """Count every request a boto3 client makes (it makes one per call: no retries)."""
        events = client.meta.events
        events.register("before-send.s3", self._before_send)
        events.register("after-call.s3", self._after_call)
        return client

    def _before_send(self, request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[1]
        self.bytes_in["s3", operation] += int(request.headers.get("Content-Length", 0))

    def _after_call(self, http_response: Any, model: Any, **_: Any) -> None:
        self.requests["s3", model.name, str(http_response.status_code)] += 1
        if model.http["method"] != "HEAD":
            length = http_response.headers.get("content-length")
            self.bytes_out["s3", model.name] += int(length or 0)

    def api(self, client: httpx.Client, method: str, path: str, template: str | None,
            **kwargs: Any) -> httpx.Response:
        """A JSON API request, counted under its route ``template`` (None: no route)."""
        response = client.request(method, API + path, **kwargs)
        operation = f"{method} {API}{template}" if template else "unmatched"
        self.requests["json", operation, str(response.status_code)] += 1
        self.bytes_in["json", operation] += len(response.request.content)
        self.bytes_out["json", operation] += len(response.content)
        return response


def s3_client(server: GatewayProcess, secret: str | None = None) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.url, aws_access_key_id=server.access_key,
        aws_secret_access_key=secret or server.secret_key, region_name="us-east-1",
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1},
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


def token(data: Path, user: str, *permissions: str) -> str:
    args = [f"--permission={p}" for p in permissions]
    made = cli(data, "token", "create", "--user", user, "--name", uuid.uuid4().hex[:8], *args)
    return str(made["token"])


def api_client(server: GatewayProcess, tok: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok}"},
                        timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    server = GatewayProcess(tmp_path_factory.mktemp("metrics") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def workload(server: GatewayProcess) -> Tally:
    tally = Tally()
    data = server.data_dir
    cli(data, "user", "add", "bob")
    admin = api_client(server, token(data, "admin", "admin", "storage:read", "storage:write"))
    bob = api_client(server, token(data, "bob", "storage:read", "storage:write"))
    s3 = tally.watch(s3_client(server))
    wrong = tally.watch(s3_client(server, secret="not-the-secret-key-at-all-0123456789ab"))

    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="k1", Body=os.urandom(1000))
    assert len(s3.get_object(Bucket=BUCKET, Key="k1")["Body"].read()) == 1000
    s3.head_object(Bucket=BUCKET, Key="k1")
    with pytest.raises(ClientError, match="404"):
        s3.head_object(Bucket=BUCKET, Key="missing")
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket=BUCKET, Key="missing")
    s3.put_object(Bucket=BUCKET, Key="k2", Body=os.urandom(2500))
    s3.delete_object(Bucket=BUCKET, Key="k2")
    s3.list_objects_v2(Bucket=BUCKET)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="open-upload")["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key="open-upload", UploadId=upload, PartNumber=1,
                   Body=os.urandom(3000))
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        wrong.get_object(Bucket=BUCKET, Key="k1")

    quota = "/admin/buckets/{bucket}/quota"
    objects = "/storage/buckets/{bucket}/objects"
    obj = objects + "/{path:keypath}"
    assert tally.api(admin, "PUT", f"/admin/buckets/{BUCKET}/quota", quota,
                     json={"max_bytes": 100_000, "max_objects": 50}).status_code == 200
    assert tally.api(bob, "GET", "/storage/buckets", "/storage/buckets").status_code == 200
    assert tally.api(admin, "GET", f"/storage/buckets/{BUCKET}/objects",
                     objects).status_code == 200
    assert tally.api(admin, "PUT", f"/storage/buckets/{BUCKET}/objects/j1", obj,
                     content=os.urandom(700)).status_code in (200, 201)
    assert tally.api(admin, "GET", f"/storage/buckets/{BUCKET}/objects/j1",
                     obj).status_code == 200
    assert tally.api(admin, "GET", "/storage/buckets/no-such-bucket/objects",
                     objects).status_code == 404
    assert tally.api(bob, "GET", "/admin/quotas", "/admin/quotas").status_code == 403
    assert tally.api(bob, "GET", "/no/such/route", None).status_code == 404
    answer = tally.api(admin, "GET", f"/admin/buckets/{BUCKET}/quota", quota)
    assert answer.status_code == 200
    tally.usage = answer.json()["data"]
    return tally


def test_requests_are_counted_by_operation_and_status(server: GatewayProcess,
                                                      workload: Tally) -> None:
    metrics = scrape(server)
    counted = metrics["gateway_requests_total"]
    # Labels sort as api, operation, status.
    assert counted == {k: float(v) for k, v in workload.requests.items()}
    assert counted["s3", "PutObject", "200"] == 2
    assert counted["s3", "HeadObject", "404"] == 1
    assert counted["s3", "GetObject", "403"] == 1
    assert counted["json", "GET /api/v1/storage/buckets/{bucket}/objects", "404"] == 1
    assert counted["json", "GET /api/v1/admin/quotas", "403"] == 1
    # One latency observation per request.
    per_operation: Counter[Labels] = Counter()
    for (api, operation, _status), n in workload.requests.items():
        per_operation[api, operation] += n
    assert metrics["gateway_request_duration_seconds_count"] == {
        k: float(v) for k, v in per_operation.items()}
    for labels, n in per_operation.items():
        assert metrics["gateway_request_duration_seconds_bucket"][(labels[0], "+Inf",
                                                                   labels[1])] == n


def test_body_bytes_match_the_wire(server: GatewayProcess, workload: Tally) -> None:
    metrics = scrape(server)
    assert metrics["gateway_request_body_bytes_total"] == {
        k: float(v) for k, v in workload.bytes_in.items() if v}
    assert metrics["gateway_response_body_bytes_total"] == {
        k: float(v) for k, v in workload.bytes_out.items() if v}
    assert metrics["gateway_request_body_bytes_total"]["s3", "PutObject"] == 3500
    assert metrics["gateway_request_body_bytes_total"]["s3", "UploadPart"] == 3000
    assert metrics["gateway_request_body_bytes_total"][
        "json", "PUT /api/v1/storage/buckets/{bucket}/objects/{path:keypath}"] == 700


def test_gauges_read_the_database(server: GatewayProcess, workload: Tally) -> None:
    metrics = scrape(server)
    assert metrics["gateway_metadata_up"] == {(): 1.0}
    assert metrics["gateway_multipart_uploads_active"] == {(): 1.0}
    assert metrics["gateway_buckets"] == {(): 1.0}
    # k1 and j1, and the open upload's part: parts count until their upload is aborted.
    assert metrics["gateway_bucket_used_bytes"] == {(BUCKET,): 1000 + 700 + 3000}
    assert metrics["gateway_bucket_used_objects"] == {(BUCKET,): 2.0}
    assert workload.usage["used_bytes"] == 4700
    assert workload.usage["used_objects"] == 2
    assert metrics["gateway_bucket_quota_bytes"] == {(BUCKET,): 100_000.0}
    assert metrics["gateway_bucket_quota_objects"] == {(BUCKET,): 50.0}
    assert metrics["gateway_job_queue_depth"] == {("webhooks",): 0.0}
    assert metrics["gateway_webhook_failing_bots"] == {(): 0.0}


def test_scrapes_are_not_counted(server: GatewayProcess, workload: Tally) -> None:
    """Scrapes and probes leave the request counters as they were."""
    before = scrape(server)["gateway_requests_total"]
    httpx.get(server.url + "/healthz")
    httpx.get(server.url + "/readyz")
    assert scrape(server)["gateway_requests_total"] == before


def test_metrics_off(tmp_path: Path) -> None:
    server = GatewayProcess(tmp_path / "data", env_extra={"GATEWAY_METRICS": "off"}).start()
    try:
        response = httpx.get(server.url + "/metrics")
        assert response.status_code == 404
        assert "gateway_requests" not in response.text
    finally:
        server.stop()


def test_workers_are_added_up(tmp_path: Path) -> None:
    """GATEWAY_WORKERS=2: each worker counts in its own files; any worker's scrape reports
    the sum, so every scrape agrees with the requests made, whichever worker served them."""
    server = GatewayProcess(tmp_path / "data", env_extra={
        "GATEWAY_WORKERS": "2", "GATEWAY_LOG_LEVEL": "info"}).start()
    try:
        deadline = time.monotonic() + 60
        while server.log().count("Application startup complete") < 2 \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.log().count("Application startup complete") == 2, server.log()
        requests = 40
        for _ in range(requests):  # a connection each, so both workers take some
            assert httpx.get(server.url + API + "/storage/buckets").status_code == 401
        operation = ("json", "GET /api/v1/storage/buckets", "401")
        for _ in range(10):
            metrics = scrape(server)
            assert metrics["gateway_requests_total"] == {operation: float(requests)}
            assert metrics["gateway_request_duration_seconds_count"] == {
                operation[:2]: float(requests)}
        assert server.proc is not None
        files = list((server.data_dir / ".metrics" / str(server.proc.pid)).glob("*.db"))
        assert files, "the workers count in the server's metrics directory"
    finally:
        server.stop()


def test_webhook_backlog_and_failing_bots(tmp_path: Path) -> None:
    """A bot whose receiver is down: its undelivered changes are the webhook queue's depth,
    and it counts as failing, with its consecutive failures."""
    server = GatewayProcess(tmp_path / "data", env_extra={
        "GATEWAY_WEBHOOK_TIMEOUT": "1", "GATEWAY_WEBHOOK_MAX_BACKOFF": "1"}).start()
    try:
        tok = token(server.data_dir, "admin", "bots:read", "bots:write", "storage:write")
        closed = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
        with api_client(server, tok) as api:
            made = api.post(f"{API}/bots", json={"name": "down", "url": closed})
            assert made.status_code == 201, made.text
            bucket = made.json()["data"]["bucket"]
            for i in range(3):
                put = api.put(f"{API}/storage/buckets/{bucket}/objects/.gbdrive/f{i}.txt",
                              content=b"x")
                assert put.status_code in (200, 201), put.text
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(server)
            failing = samples["gateway_webhook_failing_bots"][()]
            if failing == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert failing == 1
        assert samples["gateway_job_queue_depth"][("webhooks",)] == 3
        assert samples["gateway_webhook_consecutive_failures"][()] >= 1
    finally:
        server.stop()
