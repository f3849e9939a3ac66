"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.metadata.db import upgrade_to_head
from gateway.metadata.models import metadata
from tests import _postgres as postgres


def test_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite+pysqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    upgrade_to_head(url)  # idempotent: applied at every start
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "render_as_batch": True})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


def test_migrations_match_models_on_postgresql() -> None:
    reason = postgres.unreachable()
    if reason is not None:
        pytest.skip(reason)
    url = postgres.create_database()
    try:
        upgrade_to_head(url)
        upgrade_to_head(url)

        def compare(conn: Any) -> Any:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, metadata)

        async def diff() -> Any:
            engine = create_async_engine(url)
            try:
                async with engine.connect() as conn:
                    return await conn.run_sync(compare)
            finally:
                await engine.dispose()

        assert postgres.run(diff) == []
    finally:
        postgres.drop_database(url)


def test_quota_usage_is_counted_for_data_stored_before_quotas(tmp_path: Path) -> None:
    """Upgrading an installation that predates quotas counts what it already holds: live
    objects, plus the parts of unfinished multipart uploads."""
    from alembic import command
    from sqlalchemy import text

    from gateway.metadata.db import alembic_config

    url = f"sqlite+pysqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, name, role, created_at) "
                          "VALUES (1, 'u', 'admin', '2026-01-01')"))
        for bucket_id in (1, 2):
            conn.execute(text("INSERT INTO buckets (id, name, owner_id, region, created_at) "
                              f"VALUES ({bucket_id}, 'b{bucket_id}', 1, 'us-east-1', "
                              "'2026-01-01')"))
        for n, size in enumerate((10, 20, 30)):
            conn.execute(text(
                "INSERT INTO objects (bucket_id, key, version_id, is_latest, "
                "is_delete_marker, size, etag, last_modified, user_metadata, headers, "
                "storage_class) VALUES (1, :k, 'null', 1, 0, :s, 'e', '2026-01-01', '{}', "
                "'{}', 'STANDARD')"), {"k": f"k{n}", "s": size})
        conn.execute(text(
            "INSERT INTO multipart_uploads (id, bucket_id, key, blob_key, backend_upload_id, "
            "owner_id, initiated_at, state, user_metadata, headers, storage_class) VALUES "
            "('up', 1, 'mp', 'b', 'x', 1, '2026-01-01', 'active', '{}', '{}', 'STANDARD')"))
        conn.execute(text(
            "INSERT INTO multipart_parts (upload_id, part_number, size, etag, token, "
            "last_modified) VALUES ('up', 1, 100, 'e', 't', '2026-01-01')"))
    upgrade_to_head(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, used_bytes, used_objects, reserved_bytes "
                                 "FROM buckets ORDER BY name")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("b1", 160, 3, 0), ("b2", 0, 0, 0)]
