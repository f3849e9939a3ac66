"""Garbage collection: blobs that no object row points to.

A write creates its blob before committing the row, and an overwrite deletes the old blob
after committing; a crash between the two leaves a blob nobody references. Blobs younger
than the grace period are never touched, so writes in flight are safe.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import partial

from gateway.metadata import repo
from gateway.service.context import Context

log = logging.getLogger("gateway.gc")


async def collect_garbage(ctx: Context, *, grace_seconds: int | None = None) -> int:
    grace = timedelta(seconds=ctx.settings.gc_grace_seconds if grace_seconds is None
                      else grace_seconds)
    cutoff = datetime.now(UTC) - grace
    removed = 0
    async for blob in ctx.backend.list(""):
        if blob.last_modified is not None and blob.last_modified > cutoff:
            continue
        if await ctx.db.read(partial(repo.blob_is_referenced, blob_key=blob.key)):
            continue
        await ctx.discard_blob(blob.key)
        removed += 1
    if removed:
        log.info("garbage collection removed %d unreferenced blob(s)", removed)
    return removed
