"""Rate limits: policy parsing, both limiters (window, no overshoot, bounded memory), Redis
shared between instances and failing open, and S3 ``SlowDown`` from real gateway processes
(alone and two sharing one budget through Redis)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.ratelimit import (
    Decision,
    Limiter,
    MemoryLimiter,
    Policy,
    RateLimits,
    RedisLimiter,
    api_error_body,
    check,
    headers,
    key_for,
    split_redis_url,
)
from gateway.settings import Settings
from gateway.types import ANONYMOUS, Principal
from tests._server import GatewayProcess, free_port, run_cli_here

REDIS_URL = "redis://127.0.0.1:6379/0"
ALICE = Principal(user_id=7, name="alice", role="user")
ADMIN = Principal(user_id=1, name="root", role="admin")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def redis_reachable(url: str = REDIS_URL) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the Redis at 127.0.0.1:6379; removed afterwards."""
    if not redis_reachable():
        pytest.skip(f"Redis is not reachable at {REDIS_URL} (start redis-server to run this)")
    prefix = f"test:ratelimit:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def redis_keys(prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match=prefix + "*"))
    finally:
        client.close()


LimiterFactory = Callable[..., Limiter]


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterFactory]:
    made: list[Limiter] = []

    if request.param == "memory":
        def factory(**kw: Any) -> Limiter:
            limiter = MemoryLimiter(**kw)
            made.append(limiter)
            return limiter
    else:
        prefix: str = request.getfixturevalue("redis_prefix")

        def factory(**kw: Any) -> Limiter:
            # These tests are about counting, not latency: a test machine busy with other
            # suites must not push Redis answers past the production timeout (0.5 s) and
            # make the limiter fail open (tested on its own below).
            limiter = RedisLimiter(REDIS_URL, prefix=prefix, **{"timeout": 10.0, **kw})
            made.append(limiter)
            return limiter

    yield factory
    for limiter in made:
        await limiter.aclose()


# -- policy, keys, headers -------------------------------------------------------------------


def test_policy_parsing() -> None:
    default = Policy.from_settings(Settings())
    assert (default.enabled, default.anonymous, default.authenticated, default.admin,
            default.s3) == (True, 60, 1000, 5000, False)
    assert default.limit_for(None) == 60
    assert default.limit_for(ANONYMOUS) == 60
    assert default.limit_for(ALICE) == 1000
    assert default.limit_for(ADMIN) == 5000
    off = Policy.parse("off", "on")
    assert not off.enabled and not off.s3 and off.limit_for(ADMIN) is None
    partial = Policy.parse(" 5, 10 ,unlimited", "ON")
    assert partial.s3 and partial.limit_for(ADMIN) is None and partial.limit_for(ALICE) == 10
    assert Policy.parse("0,0,0").limit_for(ANONYMOUS) == 0  # 0: nobody of that class
    for bad in ("60,1000", "a,b,c", "1,2,3,4", "-1,2,3"):
        with pytest.raises(ValueError, match="GATEWAY_RATE_LIMITS"):
            Policy.parse(bad)
    with pytest.raises(ValueError, match="GATEWAY_RATE_LIMIT_S3"):
        Policy.parse("1,2,3", "maybe")


def test_keys() -> None:
    assert key_for(ALICE, "10.0.0.1") == "u:7"
    assert key_for(ADMIN, None) == "u:1"
    assert key_for(ANONYMOUS, "10.0.0.1") == "ip:10.0.0.1"
    assert key_for(None, "10.0.0.1") == "ip:10.0.0.1"
    assert key_for(None, None) == "ip:unknown"
    # One IPv6 host usually holds a /64: counting per address would be no limit at all.
    assert key_for(None, "2001:db8:1:2:aaaa::1") == key_for(None, "2001:db8:1:2:bbbb::2") \
        == "ip:2001:db8:1:2::/64"
    assert key_for(None, "::ffff:192.0.2.7") == "ip:192.0.2.7"


def test_headers_and_api_body() -> None:
    assert headers(None) == {}
    ok = Decision(allowed=True, limit=1000, remaining=999, reset_epoch=1516131600,
                  retry_after=0)
    assert headers(ok) == {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "999",
                           "X-RateLimit-Reset": "1516131600"}
    no = Decision(allowed=False, limit=60, remaining=0, reset_epoch=1516131600,
                  retry_after=42)
    assert headers(no)["Retry-After"] == "42"
    body = api_error_body(no)
    assert body["success"] is False and body["error"]["code"] == "RATE_LIMITED"
    assert "60 requests per hour" in body["error"]["message"]


def test_redis_url_prefix() -> None:
    assert split_redis_url("redis://h:6379/2?prefix=a:b:") == ("redis://h:6379/2", "a:b:")
    assert split_redis_url("redis://h/0?prefix=p&ssl_cert_reqs=none") == \
        ("redis://h/0?ssl_cert_reqs=none", "p")
    assert split_redis_url("redis://h")[1] == "gateway:ratelimit:"


async def test_check_follows_policy() -> None:
    limiter = MemoryLimiter()
    policy = Policy.parse("2,3,off")
    assert await check(None, policy, principal=ALICE, client_ip="1.2.3.4") is None
    assert await check(limiter, policy, principal=ADMIN, client_ip="1.2.3.4") is None
    first = await check(limiter, policy, principal=None, client_ip="1.2.3.4")
    assert first is not None and (first.limit, first.remaining) == (2, 1)
    # Anonymous callers are counted by address, users by id (whatever address).
    await check(limiter, policy, principal=None, client_ip="1.2.3.4")
    third = await check(limiter, policy, principal=None, client_ip="1.2.3.4")
    assert third is not None and not third.allowed
    other = await check(limiter, policy, principal=None, client_ip="1.2.3.5")
    assert other is not None and other.allowed
    user = await check(limiter, policy, principal=ALICE, client_ip="1.2.3.4")
    assert user is not None and (user.allowed, user.limit) == (True, 3)
    # S3 counts only when S3 limiting is on.
    assert await RateLimits(policy, limiter).check_s3(ALICE, None) is None
    s3_on = RateLimits(Policy.parse("2,3,off", "on"), limiter)
    counted = await s3_on.check_s3(ALICE, None)
    assert counted is not None and counted.remaining == 1  # the same budget as the API


async def test_rate_limits_from_settings() -> None:
    assert RateLimits.from_settings(Settings(rate_limits="off")).limiter is None
    assert isinstance(RateLimits.from_settings(Settings()).limiter, MemoryLimiter)
    shared = RateLimits.from_settings(Settings(redis_url=REDIS_URL + "?prefix=x:"))
    assert isinstance(shared.limiter, RedisLimiter) and shared.limiter.prefix == "x:"
    await shared.aclose()


# -- both limiters -------------------------------------------------------------------------


async def test_window_resets(make_limiter: LimiterFactory) -> None:
    clock = FakeClock(1_700_000_000.0)  # 1_699_999_200 is the hour's start
    limiter = make_limiter(clock=clock)
    for n in range(3):
        d = await limiter.hit("k", 3)
        assert (d.allowed, d.limit, d.remaining) == (True, 3, 2 - n)
        assert d.reset_epoch == 1_700_002_800 and d.retry_after == 0
    refused = await limiter.hit("k", 3)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == 2800
    clock.now = 1_700_002_799.5
    late = await limiter.hit("k", 3)
    assert not late.allowed and late.retry_after == 1
    assert (await limiter.hit("other", 3)).remaining == 2  # keys are independent
    clock.now = 1_700_002_800.0  # the next hour: a fresh budget
    fresh = await limiter.hit("k", 3)
    assert (fresh.allowed, fresh.remaining, fresh.reset_epoch) == (True, 2, 1_700_006_400)


async def test_no_overshoot_under_concurrency(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    decisions = await asyncio.gather(*(limiter.hit("busy", 50) for _ in range(200)))
    assert all(d.counted for d in decisions)
    assert sum(d.allowed for d in decisions) == 50
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(50))


async def test_zero_limit_refuses_everything(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    d = await limiter.hit("k", 0)
    assert not d.allowed and d.remaining == 0 and d.retry_after >= 1


async def test_memory_limiter_memory_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(7200.0)
    limiter = MemoryLimiter(clock=clock, max_keys=100)
    for i in range(100):
        await limiter.hit(f"ip:{i}", 5)
    assert len(limiter) == 100
    with caplog.at_level(logging.WARNING, "gateway.ratelimit"):
        for i in range(100, 350):
            await limiter.hit(f"ip:{i}", 5)
    assert len(limiter) == 100
    assert sum("dropping the oldest" in r.message for r in caplog.records) == 1
    clock.now += 3600  # old windows' counters are dropped
    await limiter.hit("ip:new", 5)
    assert len(limiter) == 1


# -- Redis -----------------------------------------------------------------------------------


async def test_redis_shared_between_instances(redis_prefix: str) -> None:
    """Two limiters on one Redis (as two gateway processes) spend one budget."""
    # About counting, not latency: a generous timeout, as in ``make_limiter``.
    a = RedisLimiter(REDIS_URL + f"?prefix={redis_prefix}", timeout=10.0)
    b = RedisLimiter(REDIS_URL, prefix=redis_prefix, timeout=10.0)
    try:
        results = await asyncio.gather(*(
            (a if i % 2 else b).hit("u:1", 30) for i in range(100)))
        assert sum(d.allowed for d in results) == 30
        assert (await a.hit("u:1", 30)).remaining == 0
        assert (await b.hit("u:2", 30)).remaining == 29
        # Keys carry their expiry (the window's end plus a margin).
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = redis_keys(redis_prefix)
            assert len(keys) == 2
            assert all(0 < client.ttl(k) <= 3600 + 60 for k in keys)
        finally:
            client.close()
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_unreachable_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2,
                           retry_interval=60)
    try:
        with caplog.at_level(logging.WARNING, "gateway.ratelimit"):
            started = time.monotonic()
            decisions = [await limiter.hit("u:1", 1) for _ in range(20)]
            elapsed = time.monotonic() - started
        assert all(d.allowed and not d.counted for d in decisions)
        assert decisions[0].remaining == 1 and headers(decisions[0])["X-RateLimit-Limit"] == "1"
        assert not limiter.available
        # One warning, one connection attempt: the others skip Redis while it is down.
        assert sum("Redis unreachable" in r.message for r in caplog.records) == 1
        assert elapsed < 2
    finally:
        await limiter.aclose()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
async def test_redis_down_then_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Redis of this test's own: stopped, the limiter fails open; back, it counts again."""
    port = free_port()

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_reachable(f"redis://127.0.0.1:{port}/0"):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return proc

    server = start_redis()
    limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0", timeout=0.2, retry_interval=0.3)
    try:
        assert (await limiter.hit("u:1", 2)).counted
        assert (await limiter.hit("u:1", 2)).remaining == 0
        server.terminate()
        server.wait(10)
        with caplog.at_level(logging.WARNING, "gateway.ratelimit"):
            down = await limiter.hit("u:1", 2)
            assert down.allowed and not down.counted
            server = start_redis()  # empty: no persistence
            await asyncio.sleep(0.4)  # past retry_interval
            back = await limiter.hit("u:1", 2)
        assert back.counted and back.allowed and back.remaining == 1
        assert limiter.available
        messages = [r.message for r in caplog.records]
        assert any("Redis unreachable" in m for m in messages)
        assert any("reachable again" in m for m in messages)
    finally:
        await limiter.aclose()
        server.terminate()
        server.wait(10)


# -- end to end: S3 SlowDown from real gateway processes ---------------------------------


ALICE_KEY, ALICE_SECRET = "AKRATELIMITALICE0001", "alice-ratelimit-secret-0123456789"
LIMITS = {"GATEWAY_RATE_LIMITS": "5,10,20", "GATEWAY_RATE_LIMIT_S3": "on"}


def away_from_window_edge() -> None:
    """Counters restart on the hour: do not start a count just before one."""
    left = 3600 - time.time() % 3600
    if left < 15:
        time.sleep(left + 0.5)


def cli(data: Path, *args: str) -> str:
    """``gateway <args> --data-dir <data>``, which must succeed, by the CLI's own ``main`` in
    this process (``run_cli_here``): its standard output."""
    done = run_cli_here(data, *args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout



@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with a user alice (not an admin) and her key, made by the CLI before any
    server starts. The module's gateways share it; each counts requests on its own (in
    memory) or in a Redis prefix of its test's own."""
    path = tmp_path_factory.mktemp("ratelimit") / "data"
    cli(path, "user", "add", "alice")
    cli(path, "key", "create", "--user", "alice", "--access-key", ALICE_KEY, "--secret-key",
        ALICE_SECRET)
    return path


@pytest.fixture(scope="module")
def api_limited(data: Path) -> Iterator[GatewayProcess]:
    """Limits on the JSON API only (S3 limiting off): anonymous 3, users 5, admins none."""
    server = GatewayProcess(data, env_extra={"GATEWAY_RATE_LIMITS": "3,5,off"}).start()
    yield server
    server.stop()


def no_retry_client(server: GatewayProcess, key: str, secret: str) -> Any:
    """boto3 retries SlowDown by default; one attempt shows it (and spends one count)."""
    return boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def list_buckets(client: Any) -> dict[str, str]:
    """ListBuckets; the answer's headers, or the error's (with the code under 'code')."""
    try:
        meta = client.list_buckets()["ResponseMetadata"]
    except ClientError as exc:
        found: dict[str, str] = dict(exc.response["ResponseMetadata"]["HTTPHeaders"])
        found["code"] = exc.response["Error"]["Code"]
        found["status"] = str(exc.response["ResponseMetadata"]["HTTPStatusCode"])
        return found
    found = dict(meta["HTTPHeaders"])
    found["code"] = "OK"
    return found


def assert_budget(calls: Sequence[Callable[[], dict[str, str]]], limit: int) -> None:
    """``calls`` (one request each) spend one budget of ``limit``: the first ``limit`` are
    answered with counting-down headers, the next get SlowDown with Retry-After."""
    answers = [call() for call in calls]
    for n, got in enumerate(answers[:limit]):
        assert got["code"] != "SlowDown", (n, got)
        assert got["x-ratelimit-limit"] == str(limit)
        assert got["x-ratelimit-remaining"] == str(limit - n - 1)
        assert "retry-after" not in got
    resets = {got["x-ratelimit-reset"] for got in answers}
    assert len(resets) == 1
    reset = int(resets.pop())
    assert reset % 3600 == 0 and 0 < reset - time.time() <= 3600
    for got in answers[limit:]:
        assert (got["code"], got["status"]) == ("SlowDown", "503"), got
        assert got["x-ratelimit-remaining"] == "0"
        assert 0 < int(got["retry-after"]) <= 3600


def anonymous_get(url: str) -> dict[str, str]:
    answer = httpx.get(url + "/some-bucket/some-key")
    found = dict(answer.headers)
    found["status"] = str(answer.status_code)
    found["code"] = "SlowDown" if b"<Code>SlowDown</Code>" in answer.content else "other"
    return found


def test_s3_slowdown(data: Path) -> None:
    server = GatewayProcess(data, env_extra=LIMITS).start()
    try:
        away_from_window_edge()
        root = no_retry_client(server, server.access_key, server.secret_key)
        alice = no_retry_client(server, ALICE_KEY, ALICE_SECRET)
        assert_budget([lambda: list_buckets(root)] * 22, 20)  # admin
        assert_budget([lambda: list_buckets(alice)] * 12, 10)  # user
        # Anonymous callers, counted by address, are refused before anything else.
        assert_budget([lambda: anonymous_get(server.url)] * 7, 5)
        # Unauthenticated requests are not counted to anyone (nor refused for a budget).
        bad = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                           aws_access_key_id=ALICE_KEY, aws_secret_access_key="wrong",
                           config=Config(retries={"total_max_attempts": 1}))
        assert list_buckets(bad)["code"] == "SignatureDoesNotMatch"
        # Refusals do not take the body, and the answer is still a proper S3 error.
        with pytest.raises(ClientError) as refused:
            root.put_object(Bucket="b", Key="k", Body=b"x" * 1000)
        assert refused.value.response["Error"]["Code"] == "SlowDown"
    finally:
        server.stop()


def test_s3_headers_absent_when_s3_limiting_off(api_limited: GatewayProcess) -> None:
    """S3 requests are neither counted nor refused, and carry no rate-limit headers, when
    GATEWAY_RATE_LIMIT_S3 is off: alice's six calls go through her budget of five."""
    alice = no_retry_client(api_limited, ALICE_KEY, ALICE_SECRET)
    for _ in range(6):
        got = list_buckets(alice)
        assert got["code"] == "OK"
        assert not any(name.startswith("x-ratelimit") for name in got)


def test_s3_two_gateways_share_a_budget_through_redis(data: Path, redis_prefix: str) -> None:
    env = {**LIMITS, "GATEWAY_REDIS_URL": f"{REDIS_URL}?prefix={redis_prefix}"}
    one, two = (GatewayProcess(data, env_extra=env) for _ in range(2))
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(GatewayProcess.start, (one, two)))
        away_from_window_edge()
        clients = [no_retry_client(s, s.access_key, s.secret_key) for s in (one, two)]
        alices = [no_retry_client(s, ALICE_KEY, ALICE_SECRET) for s in (one, two)]
        # Alternating between the two processes.
        assert_budget([partial(list_buckets, c) for c in clients] * 11, 20)
        assert_budget([partial(list_buckets, c) for c in alices] * 6, 10)
        assert_budget([partial(anonymous_get, s.url) for s in (one, two)] * 4, 5)
        assert len(redis_keys(redis_prefix)) == 3  # admin, alice, 127.0.0.1
    finally:
        one.stop()
        two.stop()


def test_s3_fails_open_when_redis_is_down(tmp_path: Path) -> None:
    server = GatewayProcess(tmp_path / "data", env_extra={
        "GATEWAY_RATE_LIMITS": "1,1,1", "GATEWAY_RATE_LIMIT_S3": "on",
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}).start()
    try:
        root = no_retry_client(server, server.access_key, server.secret_key)
        for _ in range(3):
            got = list_buckets(root)
            assert got["code"] == "OK" and got["x-ratelimit-limit"] == "1"
        assert "Redis unreachable" in server.log()
    finally:
        server.stop()


def test_json_api_budgets_and_429(data: Path, api_limited: GatewayProcess) -> None:
    """The JSON API counts every request (S3 limiting off): anonymous callers by address,
    token holders by user; refusals are 429 RATE_LIMITED with Retry-After."""
    token = json.loads(cli(data, "token", "create", "--user", "alice", "--name", "rl",
                           "--permission", "storage:read", "--json"))["token"]
    server = api_limited
    away_from_window_edge()
    url = server.url + "/api/v1/storage/buckets"
    anonymous = [httpx.get(url) for _ in range(4)]
    assert [r.status_code for r in anonymous] == [401, 401, 401, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in anonymous] == ["2", "1", "0", "0"]
    refused = anonymous[-1]
    assert refused.json()["error"] == "rate_limited"  # the storage routes' shape
    envelope = httpx.get(server.url + "/api/v1/tokens")
    assert envelope.status_code == 429
    assert envelope.json()["error"]["code"] == "RATE_LIMITED"
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    # Bad credentials count against the address too.
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 429
    headers = {"X-Api-Key": base64.b64encode(token.encode()).decode()}
    answers = [httpx.get(url, headers=headers) for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 5 + [429]
    assert answers[0].headers["x-ratelimit-limit"] == "5"
    # S3 is not counted unless GATEWAY_RATE_LIMIT_S3=on; admins are unlimited here.
    root = no_retry_client(server, server.access_key, server.secret_key)
    assert all(list_buckets(root)["code"] == "OK" for _ in range(8))
