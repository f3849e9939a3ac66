"""The query language (gateway.service.query): parsing and its errors, and the compiled SQL
checked against a brute-force model — random ``where`` trees, orders and page sizes over
rows with NULLs and ties, paged forwards and backwards through the real ``objects`` table
of an in-memory SQLite database."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, delete, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from gateway.metadata.db import upgrade_to_head
from gateway.metadata.models import buckets, metadata, objects, users
from gateway.service.query import (
    MAX_LEAVES,
    OBJECTS,
    Branch,
    Leaf,
    Query,
    QueryError,
    compile_where,
    encode_cursor,
    object_source,
    page_statement,
    parse_query,
    query_from_params,
    search_objects,
)
from tests import _postgres as postgres

BUCKET = 1
OTHER_BUCKET = 2
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


# -- parsing and its errors --------------------------------------------------------------------

def leaf(field: str, predicate: str, value: Any = None) -> dict[str, Any]:
    node = {"fieldPath": field, "predicate": predicate}
    if value is not None:
        node["value"] = value
    return node


def params(where: Any = None, order_by: Any = None, cursor: Any = None,
           total: str | None = None) -> dict[str, str]:
    out = {}
    for name, value in (("where", where), ("order_by", order_by), ("cursor", cursor)):
        if value is not None:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    if total is not None:
        out["total"] = total
    return out


def test_defaults() -> None:
    query = query_from_params(OBJECTS, {})
    assert query.where is None and query.limit == 20 and not query.from_end
    assert [(k.field, k.descending) for k in query.order] == [("key", False)]
    assert query.after is None and query.before is None and query.total is False
    assert query_from_params(OBJECTS, {"total": "true"}).total is True


def test_order_completion() -> None:
    def order(value: Any) -> list[tuple[str, bool]]:
        return [(k.field, k.descending)
                for k in query_from_params(OBJECTS, params(order_by=value)).order]

    # The key breaks ties, in the direction of the last key; a single object is a list of one.
    assert order({"fieldPath": "size", "direction": "DESC"}) == [("size", True), ("key", True)]
    assert order([{"fieldPath": "content_type"}, {"fieldPath": "size", "direction": "desc"}]
                 ) == [("content_type", False), ("size", True), ("key", True)]
    # Nothing after the unique key can matter.
    assert order([{"fieldPath": "key", "direction": "DESC"}, {"fieldPath": "size"}]
                 ) == [("key", True)]
    assert order([]) == [("key", False)]


def test_values_are_converted() -> None:
    query = query_from_params(OBJECTS, params(where={"predicate": "and", "operands": [
        leaf("size", "gt", "1048576"), leaf("last_modified", "gte", "2026-01-02T03:04:05Z"),
        leaf("metadata.Author", "in", ["ann", "bob"])]}))
    assert isinstance(query.where, Branch)
    size, when, author = query.where.operands
    assert isinstance(size, Leaf) and isinstance(when, Leaf) and isinstance(author, Leaf)
    assert size.value == 1048576
    assert when.value == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert author.field == "metadata.Author" and author.value == ("ann", "bob")


BRANCH_WITH_VALUE = {"predicate": "and", "operands": [leaf("key", "eq", "x")], "value": "25"}


@pytest.mark.parametrize(("query", "part"), [
    (params(where=BRANCH_WITH_VALUE), "where.value"),
    (params(where={"predicate": "or", "operands": [leaf("key", "eq", "a")],
                   "fieldPath": "key"}), "where.fieldPath"),
    (params(where={**leaf("key", "eq", "a"), "operands": []}), "where.operands"),
    (params(where={"predicate": "and", "operands": []}), "where.operands"),
    (params(where={"predicate": "and"}), "where.operands"),
    (params(where={"predicate": "and", "operands": [leaf("key", "nope", "a")]}),
     "where.operands[0].predicate"),
    (params(where=leaf("colour", "eq", "red")), "where.fieldPath"),
    (params(where=leaf("metadata.", "eq", "x")), "where.fieldPath"),
    (params(where=leaf("metadata.a b", "eq", "x")), "where.fieldPath"),
    (params(where=leaf("size", "gt", "big")), "where.value"),
    (params(where=leaf("size", "gt", 1.5)), "where.value"),
    (params(where=leaf("size", "gt", True)), "where.value"),
    (params(where=leaf("size", "gt", 2**63)), "where.value"),
    (params(where=leaf("size", "like", "1")), "where.predicate"),
    (params(where=leaf("key", "eq", 5)), "where.value"),
    (params(where=leaf("key", "eq")), "where.value"),
    (params(where=leaf("key", "eq", "a\x00b")), "where.value"),
    (params(where=leaf("key", "is_null", "x")), "where.value"),
    (params(where=leaf("key", "in", "a")), "where.value"),
    (params(where=leaf("key", "in", [])), "where.value"),
    (params(where=leaf("key", "in", ["a", 1])), "where.value[1]"),
    (params(where=leaf("last_modified", "gt", "yesterday")), "where.value"),
    (params(where=leaf("last_modified", "gt", "0001-01-01T00:00:00+01:00")), "where.value"),
    (params(where={**leaf("key", "eq", "a"), "extra": 1}), "where.extra"),
    (params(where=[leaf("key", "eq", "a")]), "where"),
    (params(where="{not json"), "where"),
    (params(where={"fieldPath": "key", "value": "a"}), "where.predicate"),
    (params(order_by={"fieldPath": "etag"}), "order_by[0].fieldPath"),
    (params(order_by={"fieldPath": "metadata.a"}), "order_by[0].fieldPath"),
    (params(order_by={"fieldPath": "nope"}), "order_by[0].fieldPath"),
    (params(order_by={"fieldPath": "size", "direction": "UP"}), "order_by[0].direction"),
    (params(order_by=[{"fieldPath": "size"}, {"fieldPath": "size"}]),
     "order_by[1].fieldPath"),
    (params(order_by=["size"]), "order_by[0]"),
    (params(cursor={"first": 0}), "cursor.first"),
    (params(cursor={"first": 101}), "cursor.first"),
    (params(cursor={"last": 0}), "cursor.last"),
    (params(cursor={"first": "10"}), "cursor.first"),
    (params(cursor={"first": 5, "last": 5}), "cursor"),
    (params(cursor={"after": "x", "before": "y"}), "cursor"),
    (params(cursor={"after": "!!!"}), "cursor.after"),
    (params(cursor={"before": 7}), "cursor.before"),
    (params(cursor={"after": "eyJvIjoiYSIsInYiOltdfQ"}), "cursor.after"),
    (params(cursor={"size": 5}), "cursor.size"),
    (params(cursor=[1]), "cursor"),
    (params(total="yes"), "total"),
])
def test_refused(query: dict[str, str], part: str) -> None:
    with pytest.raises(QueryError) as caught:
        query_from_params(OBJECTS, query)
    assert caught.value.part == part, caught.value
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(part + ": ")


def test_limits_of_a_tree() -> None:
    deep: dict[str, Any] = leaf("key", "eq", "x")
    for _ in range(8):
        deep = {"predicate": "and", "operands": [deep]}
    with pytest.raises(QueryError, match="deeper"):
        query_from_params(OBJECTS, params(where=deep))
    query_from_params(OBJECTS, params(where=deep["operands"][0]))  # 8 levels are fine
    wide: dict[str, Any] = {"predicate": "or",
                            "operands": [leaf("size", "eq", n) for n in range(MAX_LEAVES)]}
    query_from_params(OBJECTS, params(where=wide))
    wide["operands"].append(leaf("size", "eq", -1))
    with pytest.raises(QueryError, match="more than 50") as caught:
        query_from_params(OBJECTS, params(where=wide))
    assert caught.value.part == f"where.operands[{MAX_LEAVES}]"


def test_cursor_is_bound_to_its_order() -> None:
    by_size = query_from_params(OBJECTS, params(order_by={"fieldPath": "size",
                                                          "direction": "DESC"}))
    cursor = encode_cursor(OBJECTS, by_size.order, [10, "k"])
    ok = query_from_params(OBJECTS, params(order_by={"fieldPath": "size", "direction": "DESC"},
                                           cursor={"after": cursor}))
    assert ok.after == (10, "k")
    for other in ({"fieldPath": "size"}, None, {"fieldPath": "last_modified",
                                                "direction": "DESC"}):
        with pytest.raises(QueryError, match="another order_by") as caught:
            query_from_params(OBJECTS, params(order_by=other, cursor={"before": cursor}))
        assert caught.value.part == "cursor.before"
    # A cursor whose values do not fit the fields is not ours either.
    forged = encode_cursor(OBJECTS, by_size.order, ["ten", "k"])
    with pytest.raises(QueryError, match="not a cursor"):
        query_from_params(OBJECTS, params(order_by={"fieldPath": "size", "direction": "DESC"},
                                          cursor={"after": forged}))
    null_key = encode_cursor(OBJECTS, by_size.order, [10, None])
    with pytest.raises(QueryError, match="not a cursor"):
        query_from_params(OBJECTS, params(order_by={"fieldPath": "size", "direction": "DESC"},
                                          cursor={"after": null_key}))


def test_compiled_sql() -> None:
    def sql(where: Any, dialect: Any) -> str:
        query = query_from_params(OBJECTS, params(where=where))
        return str(compile_where(OBJECTS, query.where).compile(
            dialect=dialect, compile_kwargs={"literal_binds": True}))

    # starts_with on the key is an index range, not LIKE.
    assert sql(leaf("key", "starts_with", ".gbkb/"), sqlite.dialect()) == (
        "objects.\"key\" >= '.gbkb/' AND objects.\"key\" < '.gbkb0'")
    # Metadata compares in byte order on PostgreSQL too, read with ->>.
    pg = sql(leaf("metadata.author", "gt", "m"), postgresql.dialect())
    assert "->>" in pg and 'COLLATE "C"' in pg
    assert "JSON_EXTRACT" in sql(leaf("metadata.author", "gt", "m"), sqlite.dialect())
    # like is a case-sensitive substring test, without wildcards.
    assert "LIKE" not in sql(leaf("key", "like", "a%_"), sqlite.dialect()).upper()
    assert "strpos(" in sql(leaf("key", "like", "a"), postgresql.dialect())


# -- the compiled SQL against a brute-force model ----------------------------------------------

@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = create_engine("sqlite://", poolclass=StaticPool,
                        connect_args={"check_same_thread": False})
    metadata.create_all(eng)
    with eng.begin() as conn:
        conn.execute(insert(users), [{"id": 1, "name": "u", "role": "admin", "created_at": T0}])
        conn.execute(insert(buckets), [
            {"id": b, "name": f"b{b}", "owner_id": 1, "region": "r", "created_at": T0}
            for b in (BUCKET, OTHER_BUCKET)])
    yield eng
    eng.dispose()


KEY_CHARS = "ab/._%" + "Zé\u4e2d\U0001f600\U0010ffff"
SIZES = [0, 1, 5, 5, 1048576, 1048577, 2**40]
TYPES = [None, "text/plain", "text/html", "Text/plain", "image/png", "a%b", "a_b", ""]
TIMES = [T0 + timedelta(microseconds=n) for n in (0, 1, 1000)] + [T0 + timedelta(days=400)]
AUTHORS = [None, "ann", "Ann", "bob", "b%", ""]


@st.composite
def rows(draw: st.DrawFn, types: list[str | None] = TYPES) -> list[dict[str, Any]]:
    keys = draw(st.lists(st.text(KEY_CHARS, min_size=1, max_size=4), min_size=0, max_size=25,
                         unique=True))
    out = []
    for key in keys:
        author = draw(st.sampled_from(AUTHORS))
        out.append({"key": key, "size": draw(st.sampled_from(SIZES)),
                    "last_modified": draw(st.sampled_from(TIMES)),
                    "content_type": draw(st.sampled_from(types)),
                    "etag": draw(st.sampled_from(["e1", "e2"])),
                    "metadata": {} if author is None else {"author": author}})
    return out


FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "key": st.text(KEY_CHARS, max_size=3),
    "size": st.sampled_from([*SIZES, 2, 1048575]),
    "last_modified": st.sampled_from([*TIMES, T0 - timedelta(seconds=1)]),
    "content_type": st.sampled_from([t for t in TYPES if t is not None] + ["text", "a"]),
    "etag": st.sampled_from(["e1", "e2"]),
    "metadata.author": st.sampled_from([a for a in AUTHORS if a is not None] + ["a", "b"]),
    "metadata.Author": st.sampled_from(["ann", "b"]),
}
TEXT_FIELDS = {"key", "content_type", "etag", "metadata.author", "metadata.Author"}


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(FIELD_VALUES)))
    predicates = ["eq", "not_eq", "gt", "lt", "gte", "lte", "in", "is_null", "is_not_null"]
    if field in TEXT_FIELDS:
        predicates += ["like", "starts_with"]
    predicate = draw(st.sampled_from(predicates))
    if predicate in ("is_null", "is_not_null"):
        return leaf(field, predicate)
    if predicate == "in":
        values = draw(st.lists(FIELD_VALUES[field], min_size=1, max_size=3))
        return leaf(field, predicate, [_json_value(v) for v in values])
    return leaf(field, predicate, _json_value(draw(FIELD_VALUES[field])))


trees = st.recursive(
    leaves(),
    lambda children: st.builds(lambda p, ops: {"predicate": p, "operands": ops},
                               st.sampled_from(["and", "or"]),
                               st.lists(children, min_size=1, max_size=3)),
    max_leaves=8)

orders = st.lists(
    st.builds(lambda f, d: {"fieldPath": f, "direction": d},
              st.sampled_from(["key", "size", "last_modified", "content_type"]),
              st.sampled_from(["ASC", "DESC"])),
    max_size=3, unique_by=lambda o: o["fieldPath"])


def _get(row: dict[str, Any], field: str) -> Any:
    if field.startswith("metadata."):
        return row["metadata"].get(field[len("metadata."):].lower())
    return row[field]


def matches(row: dict[str, Any], node: dict[str, Any]) -> bool:
    """The reference semantics, in Python: a NULL matches only is_null and not_eq."""
    predicate = node["predicate"]
    if predicate in ("and", "or"):
        results = [matches(row, child) for child in node["operands"]]
        return all(results) if predicate == "and" else any(results)
    value = _get(row, node["fieldPath"])
    if predicate == "is_null":
        return value is None
    if predicate == "is_not_null":
        return value is not None
    operand = node["value"]
    if isinstance(value, datetime):
        operand = ([datetime.fromisoformat(v) for v in operand] if isinstance(operand, list)
                   else datetime.fromisoformat(operand))
    if predicate == "not_eq":
        return value is None or value != operand
    if value is None:
        return False
    checks: dict[str, Callable[[], bool]] = {
        "eq": lambda: bool(value == operand), "gt": lambda: bool(value > operand),
        "lt": lambda: bool(value < operand), "gte": lambda: bool(value >= operand),
        "lte": lambda: bool(value <= operand), "in": lambda: value in operand,
        "like": lambda: operand in value, "starts_with": lambda: bool(value.startswith(operand)),
    }
    return checks[predicate]()


def expected(data: list[dict[str, Any]], query: Query, tree: Any) -> list[str]:
    """Keys of the matching rows in the query's order, NULLs smallest."""
    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for key in query.order:
            x, y = _get(a, key.field), _get(b, key.field)
            if x == y:
                continue
            if x is None or y is None:
                result = -1 if x is None else 1
            else:
                result = -1 if x < y else 1
            return -result if key.descending else result
        return 0

    found = [row for row in data if tree is None or matches(row, tree)]
    return [row["key"] for row in sorted(found, key=functools.cmp_to_key(compare))]


def load(conn: Connection, data: list[dict[str, Any]]) -> None:
    conn.execute(delete(objects))
    base = {"version_id": "null", "is_delete_marker": False, "etag": "e1", "headers": {},
            "storage_class": "STANDARD"}
    if data:
        conn.execute(insert(objects), [{**base, **row, "bucket_id": BUCKET, "is_latest": True,
                                        "user_metadata": row["metadata"]} for row in data])
        # Rows the search must never return: another bucket, an old version, a delete marker.
        first = data[0]
        conn.execute(insert(objects), [
            {**base, **first, "bucket_id": OTHER_BUCKET, "is_latest": True,
             "user_metadata": first["metadata"]},
            {**base, **first, "version_id": "v-old", "is_latest": False,
             "bucket_id": BUCKET, "user_metadata": first["metadata"]},
            {**base, **first, "key": first["key"] + "~deleted", "is_delete_marker": True,
             "bucket_id": BUCKET, "is_latest": True, "user_metadata": {}}])


def walk(conn: Connection, request: dict[str, str], size: int, backwards: bool
         ) -> tuple[list[str], int]:
    """Every page, following endCursor (or startCursor backwards) until the last; checks
    each page's pageInfo on the way."""
    keys: list[str] = []
    cursor: dict[str, Any] = {"last": size} if backwards else {"first": size}
    total = None
    pages = 0
    while True:
        query = query_from_params(OBJECTS, {**request, "cursor": json.dumps(cursor),
                                            "total": "true"})
        page = search_objects(conn, BUCKET, query)
        info = page.page_info
        got = [m.key for m in page.items]
        assert len(got) <= size
        total = info.total if total is None else total
        assert info.total == total
        if got:
            assert info.start_cursor == page.cursors[0] and info.end_cursor == page.cursors[-1]
        else:
            assert info.start_cursor is None and info.end_cursor is None
        pages += 1
        assert pages <= 100
        if backwards:
            assert info.has_next_page == bool(keys)
            keys[:0] = got
            if not info.has_previous_page:
                return keys, total
            assert len(got) == size
            cursor = {"last": size, "before": info.start_cursor}
        else:
            assert info.has_previous_page == bool(keys)
            keys.extend(got)
            if not info.has_next_page:
                return keys, total
            assert len(got) == size
            cursor = {"first": size, "after": info.end_cursor}


def check_against_model(conn: Connection, data: list[dict[str, Any]], tree: Any,
                        order: list[dict[str, Any]], size: int) -> None:
    request = params(where=tree, order_by=order)
    query = query_from_params(OBJECTS, request)
    want = expected(data, query, tree)
    load(conn, data)
    everything = search_objects(conn, BUCKET, query_from_params(
        OBJECTS, {**request, "cursor": json.dumps({"first": 100})}))
    assert [m.key for m in everything.items] == want
    forwards, total = walk(conn, request, size, backwards=False)
    assert forwards == want and total == len(want)
    backwards, total = walk(conn, request, size, backwards=True)
    assert backwards == want and total == len(want)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows(), tree=st.none() | trees, order=orders, size=st.integers(1, 7))
def test_pages_match_a_brute_force_model(engine: Engine, data: list[dict[str, Any]],
                                         tree: Any, order: list[dict[str, Any]],
                                         size: int) -> None:
    with engine.begin() as conn:
        check_against_model(conn, data, tree, order, size)
        conn.rollback()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    reason = postgres.unreachable()
    if reason is not None:
        pytest.skip(reason)
    url = postgres.create_database()
    try:
        upgrade_to_head(url)  # the real migrations, 0010's indexes included

        def seed(conn: Connection) -> None:
            conn.execute(insert(users), [{"id": 1, "name": "u", "role": "admin",
                                          "created_at": T0}])
            conn.execute(insert(buckets), [
                {"id": b, "name": f"b{b}", "owner_id": 1, "region": "r", "created_at": T0}
                for b in (BUCKET, OTHER_BUCKET)])

        on_postgres(url, seed, commit=True)
        yield url
    finally:
        postgres.drop_database(url)


def on_postgres(url: str, unit: Callable[[Connection], Any], *, commit: bool = False) -> Any:
    """``unit(conn)`` in one PostgreSQL transaction (rolled back unless ``commit``)."""
    async def go() -> Any:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as aconn:
                result = await aconn.run_sync(unit)
                await (aconn.commit() if commit else aconn.rollback())
                return result
        finally:
            await engine.dispose()

    return postgres.run(go)


#: Content types that sort the same in any collation PostgreSQL may have (content_type
#: compares in the database's collation; keys and metadata always in byte order).
PORTABLE_TYPES = [None, "text/plain", "text/html", "image/png", ""]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows(PORTABLE_TYPES), tree=st.none() | trees, order=orders,
       size=st.integers(1, 7))
def test_pages_match_the_model_on_postgresql(pg_url: str, data: list[dict[str, Any]],
                                             tree: Any, order: list[dict[str, Any]],
                                             size: int) -> None:
    on_postgres(pg_url, lambda conn: check_against_model(conn, data, tree, order, size))


def test_null_semantics(engine: Engine) -> None:
    """A NULL matches only is_null and not_eq, and sorts first ascending, last descending."""
    data: list[dict[str, Any]] = [
        {"key": k, "size": 1, "last_modified": T0, "content_type": t, "etag": "e",
         "metadata": {}} for k, t in (("a", None), ("b", "text/plain"), ("c", "text/html"))]
    with engine.begin() as conn:
        load(conn, data)

        def keys(where: Any = None, order_by: Any = None) -> list[str]:
            got = search_objects(conn, BUCKET, query_from_params(
                OBJECTS, params(where=where, order_by=order_by)))
            return [m.key for m in got.items]

        assert keys(leaf("content_type", "not_eq", "text/plain")) == ["a", "c"]
        assert keys(leaf("content_type", "eq", "text/plain")) == ["b"]
        assert keys(leaf("content_type", "lt", "z")) == ["b", "c"]
        assert keys(leaf("content_type", "is_null")) == ["a"]
        assert keys(leaf("content_type", "in", ["text/html", "x"])) == ["c"]
        assert keys(order_by={"fieldPath": "content_type"}) == ["a", "c", "b"]
        assert keys(order_by={"fieldPath": "content_type", "direction": "DESC"}) == [
            "b", "c", "a"]
        conn.rollback()


def test_first_before_and_last_after(engine: Engine) -> None:
    """Relay's rules: the cursor bounds the range, first/last take from its start/end."""
    data: list[dict[str, Any]] = [
        {"key": f"k{n}", "size": n % 3, "last_modified": T0, "content_type": None,
         "metadata": {}} for n in range(10)]
    with engine.begin() as conn:
        load(conn, data)

        def page(cursor: dict[str, Any]) -> tuple[list[str], bool, bool]:
            got = search_objects(conn, BUCKET, query_from_params(
                OBJECTS, {"cursor": json.dumps(cursor)}))
            return ([m.key for m in got.items], got.page_info.has_previous_page,
                    got.page_info.has_next_page)

        k5 = encode_cursor(OBJECTS, query_from_params(OBJECTS, {}).order, ["k5"])
        assert page({"first": 2, "before": k5}) == (["k0", "k1"], False, True)
        assert page({"last": 2, "after": k5}) == (["k8", "k9"], True, False)
        assert page({"before": k5}) == (["k0", "k1", "k2", "k3", "k4"], False, True)
        assert page({"after": k5}) == (["k6", "k7", "k8", "k9"], True, False)
        # The boundary row may be gone: the cursor still names a position.
        conn.execute(delete(objects).where(objects.c.key == "k5"))
        assert page({"first": 1, "after": k5}) == (["k6"], True, True)
        assert page({"last": 1, "before": k5}) == (["k4"], True, True)
        conn.rollback()


def index_query() -> Query:
    """Large objects by size, descending, from the middle: what the index must serve."""
    order = query_from_params(OBJECTS, params(order_by=BY_SIZE_DESC)).order
    return parse_query(OBJECTS, where=json.dumps(leaf("size", "gt", 1048576)),
                       order_by=json.dumps(BY_SIZE_DESC),
                       cursor=json.dumps({"after": encode_cursor(OBJECTS, order,
                                                                 [5 * 2**20, "k"])}))


BY_SIZE_DESC = {"fieldPath": "size", "direction": "DESC"}


def explain(conn: Connection, prefix: str) -> str:
    stmt = page_statement(OBJECTS, index_query(), object_source(BUCKET))
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    assert "ORDER BY objects.size DESC" in sql
    return "\n".join(str(row[-1]) for row in conn.exec_driver_sql(prefix + sql).all())


def test_search_is_an_index_scan(engine: Engine) -> None:
    """SQLite answers a page from the size index, starting at the cursor, unsorted."""
    with engine.begin() as conn:
        plan = explain(conn, "EXPLAIN QUERY PLAN ")
        assert "ix_objects_search_size" in plan and "TEMP B-TREE" not in plan, plan
        conn.rollback()


def test_search_is_an_index_scan_on_postgresql(pg_url: str) -> None:
    """So does PostgreSQL (told to avoid sequential scans and sorts, as it would on a large
    table: on a tiny one any index with the bucket first ties, followed by a sort; told
    this, it still sorts unless an index delivers the order)."""
    def plan(conn: Connection) -> str:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql("SET LOCAL enable_sort = off")
        return explain(conn, "EXPLAIN ")

    found = on_postgres(pg_url, plan)
    assert "ix_objects_search_size" in found and "Sort" not in found, found


def test_metadata_names_are_lower_case(engine: Engine) -> None:
    data = [{"key": "a", "size": 1, "last_modified": T0, "content_type": "x",
             "metadata": {"author": "Ann", "x-dotted.name": "v"}},
            {"key": "b", "size": 1, "last_modified": T0, "content_type": "x",
             "metadata": {"author": "bob"}}]
    with engine.begin() as conn:
        load(conn, data)
        for where, keys in ((leaf("metadata.AUTHOR", "eq", "Ann"), ["a"]),
                            (leaf("metadata.author", "eq", "ann"), []),
                            (leaf("metadata.x-dotted.name", "eq", "v"), ["a"]),
                            (leaf("metadata.x-dotted.name", "is_null"), ["b"]),
                            (leaf("metadata.author", "like", "o"), ["b"])):
            got = search_objects(conn, BUCKET, query_from_params(OBJECTS, params(where=where)))
            assert [m.key for m in got.items] == keys, where
        assert got.items[0].metadata == {"author": "bob"}
        conn.rollback()



_WORDS = st.sampled_from(["and", "or", "eq", "in", "like", "starts_with", "is_null", "gt",
                          "key", "size", "last_modified", "content_type", "metadata.a",
                          "ASC", "DESC", "x"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4) | _WORDS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["predicate", "operands", "fieldPath", "value", "direction", "first",
                         "last", "after", "before"]) | st.text(max_size=3),
        children, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(where=json_values, order_by=json_values, cursor=json_values,
       raw=st.sampled_from(["where", "order_by", "cursor", "total"]), text=st.text())
def test_any_input_is_answered_or_refused(engine: Engine, where: Any, order_by: Any,
                                          cursor: Any, raw: str, text: str) -> None:
    """Whatever arrives is either a query that runs or a QueryError: never a crash."""
    request = {"where": json.dumps(where), "order_by": json.dumps(order_by),
               "cursor": json.dumps(cursor), raw: text}
    for attempt in (request, {raw: text}, {"where": json.dumps(where)}):
        try:
            query = query_from_params(OBJECTS, attempt)
        except QueryError:
            continue
        with engine.begin() as conn:
            search_objects(conn, BUCKET, query)
            conn.rollback()


def test_deep_json_is_refused() -> None:
    with pytest.raises(QueryError):
        query_from_params(OBJECTS, {"where": "[" * 30000 + "]" * 30000})


def test_deep_json_in_a_cursor_is_refused() -> None:
    """A cursor is Base64 of JSON: nesting past the parser's stack is a bad cursor, not a
    crash."""
    deep = base64.urlsafe_b64encode(b'{"o":"x","v":' + b"[" * 5000).decode()
    with pytest.raises(QueryError) as info:
        query_from_params(OBJECTS, {"cursor": json.dumps({"after": deep})})
    assert info.value.part == "cursor.after"
