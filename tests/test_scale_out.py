"""Two gateway instances on one PostgreSQL database and one data directory.

What one instance promises must hold across both: a conditional-write race has exactly one
winner, a quota race never overshoots, and every read through either instance sees
committed state. Skipped (with the reason) where PostgreSQL is unreachable.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests import _postgres as postgres
from tests._server import GatewayProcess
from tests.conftest import make_client


def start_all(servers: list[GatewayProcess]) -> None:
    """Start gateways side by side (each start mostly waits on its interpreter)."""
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(GatewayProcess.start, servers))


def admin_token(server: GatewayProcess) -> str:
    """A JSON API session of the root user (an admin)."""
    login = httpx.post(server.url + "/api/v1/auth/login", timeout=30, json={
        "access_key": server.access_key, "secret_key": server.secret_key})
    assert login.status_code == 200, login.text
    token: str = login.json()["data"]["token"]
    return token


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    reason = postgres.unreachable()
    if reason is not None:
        pytest.skip(reason)
    url = postgres.create_database()
    data = tmp_path_factory.mktemp("scale-out") / "data"
    env = {"GATEWAY_DATABASE_URL": url}
    pair = [GatewayProcess(data, env_extra=env) for _ in range(2)]
    try:
        start_all(pair)
        yield pair
    finally:
        for server in reversed(pair):
            server.stop()
        postgres.drop_database(url)


@pytest.fixture(scope="module")
def clients(pair: list[GatewayProcess]) -> list[Any]:
    # One attempt per call: each outcome is the gateway's answer, not a retry's.
    return [make_client(g, config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                         max_pool_connections=16)) for g in pair]


@pytest.fixture
def bucket(clients: list[Any]) -> str:
    name = f"so-{uuid.uuid4().hex[:16]}"
    clients[0].create_bucket(Bucket=name)
    return name


def code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def test_a_conditional_create_race_across_instances_has_one_winner(
    clients: list[Any], bucket: str
) -> None:
    for round_ in range(5):
        key = f"lock-{round_}"

        def create(i: int, key: str = key) -> str:
            try:
                clients[i % 2].put_object(Bucket=bucket, Key=key, Body=b"owner %d" % i,
                                          IfNoneMatch="*")
            except ClientError as exc:
                return code(exc)
            return f"won-{i}"

        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(create, range(16)))
        winners = [o for o in outcomes if o.startswith("won-")]
        assert len(winners) == 1, outcomes
        assert set(outcomes) - set(winners) <= {"PreconditionFailed",
                                                 "ConditionalRequestConflict"}
        owner = int(winners[0].removeprefix("won-"))
        for s3 in clients:
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"owner %d" % owner


def test_writers_through_both_instances_and_reads_through_either(
    clients: list[Any], bucket: str
) -> None:
    """16 writers overwrite, conditionally update and delete; afterwards both instances
    serve exactly the last committed state of every key."""
    keys = [f"k{i}" for i in range(8)]

    def work(i: int) -> None:
        s3 = clients[i % 2]
        for n in range(10):
            key = keys[(i + n) % len(keys)]
            body = f"{i}-{n}".encode()
            if n % 5 == 4:
                s3.delete_object(Bucket=bucket, Key=key)
                continue
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
                s3.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=head["ETag"])
            except ClientError as exc:
                if code(exc) not in ("404", "NoSuchKey", "PreconditionFailed",
                                     "ConditionalRequestConflict"):
                    raise
                s3.put_object(Bucket=bucket, Key=key, Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(16)))
    views = []
    for s3 in clients:
        listed = {o["Key"]: (o["ETag"], o["Size"])
                  for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        for key, (etag, size) in listed.items():
            got = s3.get_object(Bucket=bucket, Key=key)
            data = got["Body"].read()
            assert (got["ETag"], len(data)) == (etag, size)
            assert f'"{hashlib.md5(data).hexdigest()}"' == etag
        views.append(listed)
    assert views[0] == views[1]


def test_a_quota_race_across_instances_never_overshoots(
    pair: list[GatewayProcess], clients: list[Any], bucket: str
) -> None:
    limit = 10
    auth = {"Authorization": f"Bearer {admin_token(pair[0])}"}
    quota = f"/api/v1/admin/buckets/{bucket}/quota"
    done = httpx.put(pair[0].url + quota, headers=auth, json={"max_objects": limit})
    assert done.status_code == 200, done.text

    def write(i: int) -> str:
        try:
            clients[i % 2].put_object(Bucket=bucket, Key=f"o{i}", Body=b"x" * 1000)
        except ClientError as exc:
            return code(exc)
        return "ok"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(write, range(32)))
    assert outcomes.count("ok") == limit, outcomes
    assert set(outcomes) == {"ok", "QuotaExceeded"}
    stored = clients[1].list_objects_v2(Bucket=bucket).get("Contents", [])
    assert len(stored) == limit
    usage = httpx.get(pair[1].url + quota, headers=auth).json()["data"]  # the other instance
    assert (usage["used_objects"], usage["used_bytes"]) == (limit, 1000 * limit)
    assert (usage["reserved_objects"], usage["reserved_bytes"]) == (0, 0)


def test_what_one_instance_writes_the_other_serves(clients: list[Any], bucket: str) -> None:
    clients[0].put_object(Bucket=bucket, Key="shared", Body=b"from the first")
    assert clients[1].get_object(Bucket=bucket, Key="shared")["Body"].read() == \
        b"from the first"
    clients[1].delete_object(Bucket=bucket, Key="shared")
    with pytest.raises(ClientError) as info:
        clients[0].get_object(Bucket=bucket, Key="shared")
    assert code(info.value) == "NoSuchKey"


def test_housekeeping_runs_on_one_instance_and_survives_its_death(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Two instances, housekeeping every second: it runs on one of them, at most once a
    second (not twice), and when the instance running it is killed, the other takes over."""
    reason = postgres.unreachable()
    if reason is not None:
        pytest.skip(reason)
    url = postgres.create_database()
    data = tmp_path_factory.mktemp("jobs") / "data"
    env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_HOUSEKEEPING_SECONDS": "1"}
    servers: list[GatewayProcess] = []

    def lease() -> tuple[str, int]:
        rows = postgres.query(url, "SELECT owner, runs FROM job_leases "
                                   "WHERE name = 'housekeeping'")
        return (str(rows[0][0]), int(rows[0][1])) if rows else ("", 0)

    def wait_for_runs(owner: str, runs: int, what: str) -> None:
        """Poll until the lease shows ``runs``; it stays with ``owner`` all along."""
        deadline = time.monotonic() + 30
        while (now := lease())[1] < runs:
            assert now[0] == owner, (now, owner)
            assert time.monotonic() < deadline, what
            time.sleep(0.2)
        assert lease()[0] == owner

    try:
        for _ in range(2):  # one after the other: they register in this order
            servers.append(GatewayProcess(data, env_extra=env).start())
        deadline = time.monotonic() + 30
        while not (first := lease())[1]:
            assert time.monotonic() < deadline, "housekeeping never ran"
            time.sleep(0.2)
        owner = first[0]
        started = time.monotonic()
        _, before = lease()
        wait_for_runs(owner, before + 4, "housekeeping stopped running")
        _, after = lease()
        # Runs are a period (1 s) apart on one instance: in t seconds, at most t + 1 of them
        # (both instances running it would make about twice that).
        assert after - before <= time.monotonic() - started + 1, (before, after)

        instances = dict(postgres.query(url, "SELECT id, started_at FROM instances"))
        assert owner in instances
        # Kill the holder: which one that is, the lease says; instances register in order.
        by_start = sorted(instances, key=lambda i: instances[i])
        victim = servers[by_start.index(owner)]
        victim.kill()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and lease()[0] == owner:
            time.sleep(0.2)
        new_owner, runs = lease()
        assert new_owner not in ("", owner)
        wait_for_runs(new_owner, runs + 1, "housekeeping stopped after the takeover")
    finally:
        for server in servers:
            server.stop()
        postgres.drop_database(url)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_workers_start_together_on_a_fresh_database(tmp_path_factory: pytest.TempPathFactory,
                                                    database: str) -> None:
    """GATEWAY_WORKERS=3 on a new data dir: the workers migrate the schema, make the secret
    key and the first admin once between them, and all of them serve."""
    env = {"GATEWAY_WORKERS": "3", "GATEWAY_LOG_LEVEL": "info"}
    url = None
    if database == "postgresql":
        reason = postgres.unreachable()
        if reason is not None:
            pytest.skip(reason)
        url = env["GATEWAY_DATABASE_URL"] = postgres.create_database()
    server = GatewayProcess(tmp_path_factory.mktemp("workers") / "data", env_extra=env).start()
    try:
        s3 = make_client(server)
        s3.create_bucket(Bucket="workers")
        for i in range(12):
            s3.put_object(Bucket="workers", Key=f"k{i}", Body=b"%d" % i)
        for i in range(12):
            assert s3.get_object(Bucket="workers", Key=f"k{i}")["Body"].read() == b"%d" % i
        # The first worker to start answers; the others may still be starting (each
        # imports the whole gateway, on a machine busy with other tests).
        deadline = time.monotonic() + 60
        while server.log().count("Application startup complete") < 3 \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        log = server.log()
        assert log.count("Application startup complete") == 3, log
        assert "Traceback" not in log and "failed to start" not in log, log
    finally:
        server.stop()
        if url:
            postgres.drop_database(url)


def test_the_change_log_is_one_ordered_log_across_instances(
    pair: list[GatewayProcess], clients: list[Any], bucket: str
) -> None:
    """Writers on both instances: the feed read through either holds every acknowledged
    write exactly once, numbered without gaps; a /ws subscriber on one instance sees what
    the other one commits."""
    import asyncio

    import websockets

    auth = {"Authorization": f"Bearer {admin_token(pair[0])}"}
    feed = "/api/v1/storage/changes"
    start = httpx.get(pair[0].url + feed, params={"bucket": bucket, "since": "now"},
                      headers=auth).json()["cursor"]

    async def watch() -> list[str]:
        url = pair[1].url.replace("http://", "ws://") + "/ws"
        async with websockets.connect(url, additional_headers=auth) as ws:
            await ws.send(json.dumps({"type": "subscribe", "bucket": bucket,
                                      "prefix": "live/"}))
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass  # "authenticated" comes first
            clients[0].put_object(Bucket=bucket, Key="live/from-first", Body=b"1")
            event = json.loads(await asyncio.wait_for(ws.recv(), 15))
            return [event["type"], event["key"]]

    assert asyncio.run(watch()) == ["event", "live/from-first"]

    def write(i: int) -> str:
        clients[i % 2].put_object(Bucket=bucket, Key=f"c/{i}", Body=b"v" * i)
        return f"c/{i}"

    with ThreadPoolExecutor(12) as pool:
        written = set(pool.map(write, range(80)))
    for gateway in pair:
        answer = httpx.get(gateway.url + feed, headers=auth,
                           params={"bucket": bucket, "since": start, "limit": "1000"}).json()
        seen = [c["key"] for c in answer["changes"]]
        assert set(seen) == written | {"live/from-first"} and len(seen) == len(set(seen))
        seqs = [c["sequence"] for c in answer["changes"]]
        assert seqs == sorted(seqs)
    everything = httpx.get(pair[0].url + feed, headers=auth,
                           params={"bucket": bucket, "since": start, "limit": "1000"}).json()
    first = everything["changes"][0]["sequence"]
    # Gapless within the bucket here, since nothing else writes to this database meanwhile.
    assert [c["sequence"] for c in everything["changes"]] == list(
        range(first, first + len(everything["changes"])))
