"""Rate limits: requests per hour by caller class (anonymous, authenticated, admin).

``GATEWAY_RATE_LIMITS="60,1000,5000"`` (the API reference's numbers) or ``"off"``; a single
class may be ``off`` too (``"60,1000,off"``). The JSON API always counts once limits are on;
the S3 endpoint counts only with ``GATEWAY_RATE_LIMIT_S3=on`` (S3 clients then get
``SlowDown``). Both count against the *same* budget of a caller.

Who is counted (:func:`key_for`): an authenticated caller by user id (whatever key, token
or session they use), an anonymous one by client address (an IPv6 client by its /64, the
block one host usually holds). The class, and so the limit, follows the role.

**Algorithm: a fixed window aligned to the clock** (``[k*3600, (k+1)*3600)`` in epoch
seconds), chosen over a sliding window or GCRA because:

- it is what the headers describe: ``X-RateLimit-Remaining`` counts down from
  ``X-RateLimit-Limit`` and is restored in full at ``X-RateLimit-Reset``, an epoch second
  that is the same for every caller and every gateway process;
- it needs no coordination: every process (and Redis) derives the same window from the
  clock, so one Redis ``INCR`` on ``<prefix><key>:<window start>`` is the whole
  algorithm, and old windows' keys simply expire;
- counts are exact and easy to reason about (tests can assert "exactly ``limit``").

Its known weakness, up to twice the limit across a window boundary (the end of one hour
plus the start of the next), is acceptable for abuse protection of hourly budgets.

Counters live in the process (:class:`MemoryLimiter`, per worker) unless
``GATEWAY_REDIS_URL`` is set (:class:`RedisLimiter`, shared by all processes). The URL may
carry ``?prefix=...`` for the key prefix (default ``gateway:ratelimit:``), so deployments
(or test runs) can share one Redis without sharing budgets.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.settings import Settings
from gateway.types import Principal

log = logging.getLogger("gateway.ratelimit")

WINDOW_SECONDS = 3600
DEFAULT_PREFIX = "gateway:ratelimit:"
_OFF = frozenset({"off", "none", "unlimited", "disabled", "false", "no", "0"})
_ON = frozenset({"on", "true", "yes", "1", "enabled"})

Clock = Callable[[], float]


# -- policy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-window limits by caller class; ``None`` means that class is not limited."""

    enabled: bool = True
    anonymous: int | None = 60
    authenticated: int | None = 1000
    admin: int | None = 5000
    #: Whether S3 requests count (only meaningful when ``enabled``).
    s3: bool = False
    window: int = WINDOW_SECONDS

    @classmethod
    def parse(cls, limits: str, s3: str = "off", *, window: int = WINDOW_SECONDS) -> Policy:
        """``limits``: ``"anonymous,authenticated,admin"`` requests per window, or ``off``;
        ``s3``: ``on``/``off``. Raises ValueError with a message naming the setting."""
        s3_word = s3.strip().lower()
        if s3_word not in _ON | _OFF:
            raise ValueError(f"GATEWAY_RATE_LIMIT_S3 must be on or off, not {s3!r}")
        text = limits.strip().lower()
        if text in _OFF:
            return cls(enabled=False, anonymous=None, authenticated=None, admin=None,
                       s3=False, window=window)
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3:
            raise ValueError("GATEWAY_RATE_LIMITS must be 'anonymous,authenticated,admin' "
                             f"requests per hour (e.g. 60,1000,5000) or 'off', not {limits!r}")
        values: list[int | None] = []
        for part in parts:
            if part in _OFF - {"0"}:
                values.append(None)
                continue
            try:
                value = int(part)
            except ValueError:
                raise ValueError(f"GATEWAY_RATE_LIMITS: not a number of requests: {part!r} "
                                 f"in {limits!r}") from None
            if value < 0:
                raise ValueError(f"GATEWAY_RATE_LIMITS: a limit cannot be negative: {limits!r}")
            values.append(value)
        return cls(enabled=True, anonymous=values[0], authenticated=values[1], admin=values[2],
                   s3=s3_word in _ON, window=window)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls.parse(settings.rate_limits, settings.rate_limit_s3)

    def limit_for(self, principal: Principal | None) -> int | None:
        if not self.enabled:
            return None
        if principal is None or principal.is_anonymous:
            return self.anonymous
        if principal.is_admin:
            return self.admin
        return self.authenticated


def key_for(principal: Principal | None, client_ip: str | None) -> str:
    """The counter a request is charged to: ``u:<user id>`` or ``ip:<address>``."""
    if principal is not None and not principal.is_anonymous:
        return f"u:{principal.user_id}"
    if not client_ip:
        return "ip:unknown"
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return f"ip:{client_ip}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"ip:{address}"


# -- decisions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    #: Epoch second at which the window ends and the budget is restored.
    reset_epoch: int
    #: Seconds to wait before retrying (0 when allowed).
    retry_after: int
    #: False when the request could not be counted (Redis unreachable: failed open).
    counted: bool = True


def _window(now: float, window: int) -> tuple[int, int]:
    start = int(now // window) * window
    return start, start + window


def _decide(count: int, limit: int, now: float, reset: int) -> Decision:
    """``count``: this request's position in the window, itself included."""
    allowed = count <= limit
    return Decision(allowed=allowed, limit=limit, remaining=max(0, limit - count),
                    reset_epoch=reset,
                    retry_after=0 if allowed else max(1, math.ceil(reset - now)))


def headers(decision: Decision | None) -> dict[str, str]:
    """``X-RateLimit-Limit/-Remaining/-Reset`` (epoch seconds), plus ``Retry-After`` when
    refused. Empty for ``None`` (limits off, or the caller's class unlimited)."""
    if decision is None:
        return {}
    out = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset_epoch),
    }
    if not decision.allowed:
        out["Retry-After"] = str(decision.retry_after)
    return out


def refusal_message(decision: Decision) -> str:
    return (f"Rate limit exceeded: {decision.limit} requests per hour. "
            f"Retry in {decision.retry_after} seconds.")


def api_error_body(decision: Decision) -> dict[str, Any]:
    """The JSON API's 429 body (the API reference's error shape)."""
    return {"success": False,
            "error": {"code": "RATE_LIMITED", "message": refusal_message(decision)}}


# -- limiters ------------------------------------------------------------------------------


class Limiter(Protocol):
    async def hit(self, key: str, limit: int) -> Decision:
        """Count one request for ``key`` and say whether it is within ``limit``."""
        ...

    async def aclose(self) -> None: ...


class MemoryLimiter:
    """Counters in this process (each uvicorn worker has its own).

    Memory is bounded: only the current window's counters are kept (the table is emptied
    when the window rolls over), and at most ``max_keys`` callers per window; past that the
    oldest counter is dropped (that caller starts afresh - a flood of distinct addresses
    must not exhaust memory) and a warning is logged once per window.

    ``hit`` does not await, so on one event loop it is atomic: no overshoot however many
    requests arrive at once.
    """

    def __init__(self, window: int = WINDOW_SECONDS, *, clock: Clock = time.time,
                 max_keys: int = 100_000) -> None:
        self.window = window
        self._clock = clock
        self.max_keys = max_keys
        self._start: int | None = None
        self._counts: dict[str, int] = {}
        self._warned = False

    def __len__(self) -> int:
        return len(self._counts)

    async def hit(self, key: str, limit: int) -> Decision:
        now = self._clock()
        start, reset = _window(now, self.window)
        if start != self._start:
            self._counts.clear()
            self._start = start
            self._warned = False
        count = self._counts.get(key)
        if count is None:
            if len(self._counts) >= self.max_keys:
                del self._counts[next(iter(self._counts))]
                if not self._warned:
                    self._warned = True
                    log.warning("rate limiter: more than %d callers this window; dropping "
                                "the oldest counters", self.max_keys)
            count = 0
        if count < limit:
            count += 1
            self._counts[key] = count
            return _decide(count, limit, now, reset)
        self._counts[key] = count
        return _decide(count + 1, limit, now, reset)

    async def aclose(self) -> None:
        self._counts.clear()


# One atomic step: count, and give a new window's key its expiry: the rest of the window
# plus a margin for clocks that differ a little between processes. (Relative, not EXPIREAT:
# a gateway clock behind Redis's must not create keys that are already expired.)
_INCR_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def split_redis_url(url: str) -> tuple[str, str]:
    """``redis://h:6379/0?prefix=p:`` -> (``redis://h:6379/0``, ``p:``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


class RedisLimiter:
    """Counters in Redis, shared by every gateway process using the same URL and prefix.

    Each hit is one Lua script (``INCR`` + ``EXPIRE`` on a new key), atomic in Redis, so
    concurrent requests from any number of processes never overshoot the limit.

    **Fails open.** When Redis cannot be reached (or answers too slowly) the request is
    allowed (``Decision.counted`` is False) and a warning is logged. A rate limit protects
    against abuse; it is not an authorization check (requests are still authenticated and
    authorized). Failing closed would turn a Redis outage into an outage of every bucket,
    making a cache the single point of failure of the storage path. While Redis is down,
    it is not asked again for ``retry_interval`` seconds, so requests are not slowed by a
    connect timeout each; after that the next request tries again, and the first success
    logs the recovery.
    """

    def __init__(self, url: str, *, prefix: str | None = None, window: int = WINDOW_SECONDS,
                 clock: Clock = time.time, timeout: float = 0.5, retry_interval: float = 2.0,
                 max_connections: int = 64) -> None:
        # Imported here: most deployments have no Redis, and the client costs ~15 MB.
        import redis.asyncio as aredis
        import redis.exceptions
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError, OSError, TimeoutError)
        address, url_prefix = split_redis_url(url)
        self.prefix = url_prefix if prefix is None else prefix
        self.window = window
        self._clock = clock
        self.retry_interval = retry_interval
        pool = aredis.BlockingConnectionPool.from_url(
            address, max_connections=max_connections, timeout=timeout,
            socket_connect_timeout=timeout, socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0))
        self._redis = aredis.Redis.from_pool(pool)
        self._script = self._redis.register_script(_INCR_SCRIPT)
        self._down_until = 0.0
        self._down = False

    @property
    def available(self) -> bool:
        return not self._down

    def _fail_open(self, limit: int, reset: int) -> Decision:
        return Decision(allowed=True, limit=limit, remaining=limit, reset_epoch=reset,
                        retry_after=0, counted=False)

    async def hit(self, key: str, limit: int) -> Decision:
        now = self._clock()
        start, reset = _window(now, self.window)
        if self._down and time.monotonic() < self._down_until:
            return self._fail_open(limit, reset)
        try:
            count = int(await self._script(keys=[f"{self.prefix}{key}:{start}"],
                                           args=[math.ceil(reset - now) + 60]))
        except self._errors as exc:
            if not self._down:
                log.warning("rate limiter: Redis unreachable (%s: %s); allowing requests "
                            "uncounted until it is back", type(exc).__name__, exc)
            self._down = True
            self._down_until = time.monotonic() + self.retry_interval
            return self._fail_open(limit, reset)
        if self._down:
            self._down = False
            log.warning("rate limiter: Redis is reachable again; counting requests")
        return _decide(count, limit, now, reset)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()


# -- what the protocol layers use ------------------------------------------------------------


async def check(limiter: Limiter | None, policy: Policy, *, principal: Principal | None,
                client_ip: str | None) -> Decision | None:
    """Count one request of ``principal`` (None or anonymous: by ``client_ip``).

    None when nothing is limited (limits off, or this caller's class unlimited): send no
    headers. Otherwise a Decision: refuse when ``not decision.allowed``; either way send
    :func:`headers`.
    """
    if limiter is None:
        return None
    limit = policy.limit_for(principal)
    if limit is None:
        return None
    return await limiter.hit(key_for(principal, client_ip), limit)


@dataclass(slots=True)
class RateLimits:
    """The running gateway's policy and limiter (built at start, closed at shutdown)."""

    policy: Policy
    limiter: Limiter | None

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = time.time) -> RateLimits:
        policy = Policy.from_settings(settings)
        limiter: Limiter | None = None
        if policy.enabled:
            if settings.redis_url:
                limiter = RedisLimiter(settings.redis_url, window=policy.window, clock=clock)
            else:
                limiter = MemoryLimiter(policy.window, clock=clock)
        return cls(policy, limiter)

    async def check(self, principal: Principal | None,
                    client_ip: str | None) -> Decision | None:
        """For the JSON API: every request counts when limits are on."""
        return await check(self.limiter, self.policy, principal=principal, client_ip=client_ip)

    async def check_s3(self, principal: Principal | None,
                       client_ip: str | None) -> Decision | None:
        """For the S3 endpoint: counts only with ``GATEWAY_RATE_LIMIT_S3=on``."""
        if not self.policy.s3:
            return None
        return await self.check(principal, client_ip)

    async def aclose(self) -> None:
        if self.limiter is not None:
            await self.limiter.aclose()
