"""Background jobs that must run on one instance at a time, whichever instances are up.

A job runs where its lease is held. The holder renews the lease at every run; another
instance takes the lease over only once it has expired (three periods without a renewal)
or its holder is presumed dead (silent for three heartbeats: a killed instance's hourly
job is taken over within a minute, not three hours), so a job keeps running when its
instance dies, and never runs twice for one period while its holder lives. Leases are
rows of the metadata database, so this holds on SQLite (one host) and on PostgreSQL (many)
alike; instances' clocks are assumed roughly in step.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from gateway.metadata import repo
from gateway.metadata.models import job_leases
from gateway.service.context import Context

log = logging.getLogger("gateway.jobs")


class Jobs:
    def __init__(self, ctx: Context, instance_id: str) -> None:
        self.ctx = ctx
        self.instance_id = instance_id

    @property
    def silence_limit(self) -> float:
        """Seconds without a heartbeat after which an instance is presumed dead, and its
        leases free: a lease outlives its holder by this much, not three periods."""
        return 3.0 * self.ctx.settings.heartbeat_seconds

    @property
    def standby_seconds(self) -> float:
        """How soon an instance that does not hold a job's lease asks again: past the
        silence limit, so a holder that died is replaced within about twice that."""
        return self.silence_limit + 1.0

    async def claim(self, name: str, period: float) -> bool:
        now = datetime.now(UTC)
        until = now + timedelta(seconds=3 * period)
        stale_before = now - timedelta(seconds=self.silence_limit)
        try:
            return await self.ctx.db.write(lambda conn: repo.claim_job(
                conn, name, self.instance_id, now, until, stale_before))
        except IntegrityError:  # another instance made the first claim just now
            return False

    async def run(self, name: str, period: float, job: Callable[[], Awaitable[None]]) -> bool:
        """Run ``job`` if this instance holds (or takes) the lease; whether it ran."""
        if not await self.claim(name, period):
            return False
        await job()
        await self.ctx.db.write(
            lambda conn: repo.job_ran(conn, name, self.instance_id, datetime.now(UTC)))
        return True

    async def release(self, name: str) -> None:
        """Give up the lease on ``name`` if this instance holds it, so that another
        instance takes the job over at its next claim rather than when the lease expires
        (a long-running job's holder calls this when it stops)."""
        now = datetime.now(UTC)
        await self.ctx.db.write(lambda conn: conn.execute(
            update(job_leases).where(job_leases.c.name == name,
                                     job_leases.c.owner == self.instance_id)
            .values(lease_until=now)))
