"""The query language of the API-token and pagination reference — ``where``, ``order_by``,
``cursor``, ``total`` — compiled to SQLAlchemy Core that runs the same on SQLite and
PostgreSQL.

An endpoint describes what may be queried as an :class:`Entity` (fieldPath → SQL
expression, value type, sortable or not, nullable or not, plus a unique non-null field that
breaks ties), parses the request's parameters with :func:`query_from_params` (a
:class:`QueryError` names the offending part: answer 400) and runs
:func:`fetch_page` on a SELECT it scoped itself (tenant, bucket, …).

Paging is keyset paging: the order always ends with the entity's tie-breaker, a cursor
holds the sort values of a boundary row, and the next page starts strictly beyond them.
Rows inserted or deleted meanwhile therefore never shift a page: nothing present is skipped
or repeated. A cursor is bound to the order it was made for; used with another order it is
refused rather than silently misread.

NULLs sort as the smallest value (``ASC NULLS FIRST``, ``DESC NULLS LAST``) on both
databases, and keyset conditions follow the same rule. In filters a NULL matches only
``is_null`` and ``not_eq``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    Text,
    and_,
    false,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from gateway.metadata.models import objects
from gateway.service.listing import successor
from gateway.types import MAX_SQL_INT

#: Limits of one query (the reference: pages of 1 to 100, 20 by default).
DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_DEPTH = 8
MAX_LEAVES = 50
MAX_IN_VALUES = 100
MAX_ORDER_FIELDS = 4
MAX_PARAM_CHARS = 64 * 1024
MAX_CURSOR_CHARS = 16 * 1024

FieldType = Literal["str", "int", "datetime"]
BRANCH_PREDICATES = ("and", "or")
LEAF_PREDICATES = ("eq", "not_eq", "like", "starts_with", "gt", "lt", "gte", "lte", "in",
                   "is_null", "is_not_null")
_TEXT_ONLY = ("like", "starts_with")
_NO_VALUE = ("is_null", "is_not_null")

T = TypeVar("T")


class QueryError(ValueError):
    """A query parameter the reference's grammar or the entity refuses. ``part`` names
    where (``where.operands[1].value``, ``cursor.first``, …); the API answers 400."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason


# -- entities ----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Field:
    """One fieldPath. ``byte_order``: the expression compares in code-point (UTF-8 byte)
    order on every database, so ``starts_with`` may use an index range; otherwise it
    compares a substring."""

    expr: ColumnElement[Any]
    type: FieldType
    sortable: bool = False
    nullable: bool = False
    byte_order: bool = True


@dataclass(frozen=True, eq=False)
class Entity:
    """What an endpoint lets callers filter and sort by. ``tiebreak`` names a sortable,
    unique, non-null field: appended to every order, it makes the order total (a keyset
    needs that). ``dynamic`` resolves fieldPaths not in ``fields`` (``metadata.<name>``)."""

    name: str
    fields: Mapping[str, Field]
    tiebreak: str
    default_order: tuple[SortKey, ...]
    dynamic: Callable[[str], Field | None] | None = None

    def field(self, path: str) -> Field | None:
        found = self.fields.get(path)
        if found is None and self.dynamic is not None:
            found = self.dynamic(path)
        return found


# -- the parsed query --------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    field: str
    predicate: str
    #: Converted to the field's type (a tuple for ``in``; None for the null tests).
    value: Any = None


@dataclass(frozen=True)
class Branch:
    predicate: str
    operands: tuple[Leaf | Branch, ...]


Node = Leaf | Branch


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool = False


@dataclass(frozen=True)
class Query:
    where: Node | None
    #: The complete order: what was asked, ending with the entity's tie-breaker.
    order: tuple[SortKey, ...]
    limit: int = DEFAULT_PAGE
    #: ``last``: the page is taken from the end of the range (fetched in reverse).
    from_end: bool = False
    #: Boundary sort values from ``after`` / ``before`` (at most one is set).
    after: tuple[Any, ...] | None = None
    before: tuple[Any, ...] | None = None
    total: bool = False


@dataclass(frozen=True)
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None
    #: Rows matching ``where``; -1 when not asked for.
    total: int = -1

    def as_dict(self) -> dict[str, Any]:
        return {"hasNextPage": self.has_next_page, "hasPreviousPage": self.has_previous_page,
                "startCursor": self.start_cursor, "endCursor": self.end_cursor,
                "total": self.total}


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page_info: PageInfo
    cursors: list[str] = field(default_factory=list)


# -- parsing -----------------------------------------------------------------------------------

def query_from_params(entity: Entity, params: Mapping[str, str]) -> Query:
    """The query of a request's (URI-decoded) parameters ``where``, ``order_by``,
    ``cursor`` and ``total``; each is JSON except ``total`` (``true`` / ``false``)."""
    return parse_query(entity, where=params.get("where"), order_by=params.get("order_by"),
                       cursor=params.get("cursor"), total=params.get("total"))


def parse_query(entity: Entity, *, where: str | None = None, order_by: str | None = None,
                cursor: str | None = None, total: str | None = None) -> Query:
    tree = parse_where(entity, _json("where", where))
    order = parse_order(entity, _json("order_by", order_by))
    limit, from_end, after, before = parse_cursor(entity, order, _json("cursor", cursor))
    return Query(where=tree, order=order, limit=limit, from_end=from_end, after=after,
                 before=before, total=_bool("total", total))


def _json(part: str, raw: str | None) -> Any:
    if raw is None or not raw.strip():
        return None
    if len(raw) > MAX_PARAM_CHARS:
        raise QueryError(part, f"longer than {MAX_PARAM_CHARS} characters")
    try:
        return json.loads(raw)
    except ValueError:
        raise QueryError(part, "not valid JSON (URI-encode the JSON text)") from None
    except RecursionError:
        raise QueryError(part, f"nests deeper than {MAX_DEPTH} levels") from None


def _bool(part: str, raw: str | None) -> bool:
    if raw is None or raw == "":
        return False
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise QueryError(part, "must be true or false")


def parse_where(entity: Entity, tree: Any) -> Node | None:
    """A ``where`` tree (decoded JSON) checked against ``entity``; None for no filter."""
    if tree is None:
        return None
    leaves = [0]
    return _node(entity, tree, "where", 1, leaves)


def _node(entity: Entity, raw: Any, part: str, depth: int, leaves: list[int]) -> Node:
    if not isinstance(raw, dict):
        raise QueryError(part, "a condition must be a JSON object")
    if depth > MAX_DEPTH:
        raise QueryError(part, f"conditions nest deeper than {MAX_DEPTH} levels")
    predicate = raw.get("predicate")
    if not isinstance(predicate, str):
        raise QueryError(f"{part}.predicate", "is required (a string)")
    if predicate in BRANCH_PREDICATES:
        for name in raw:
            if name in ("value", "fieldPath"):
                raise QueryError(f"{part}.{name}", f"a branch ({predicate}) takes only "
                                 "predicate and operands")
            if name not in ("predicate", "operands"):
                raise QueryError(f"{part}.{name}", "unknown member")
        operands = raw.get("operands")
        if not isinstance(operands, list) or not operands:
            raise QueryError(f"{part}.operands", "must be a non-empty list of conditions")
        return Branch(predicate, tuple(
            _node(entity, item, f"{part}.operands[{i}]", depth + 1, leaves)
            for i, item in enumerate(operands)))
    if predicate not in LEAF_PREDICATES:
        raise QueryError(f"{part}.predicate", f"unknown predicate {predicate!r}; use one of "
                         + ", ".join(BRANCH_PREDICATES + LEAF_PREDICATES))
    for name in raw:
        if name == "operands":
            raise QueryError(f"{part}.operands", f"a leaf ({predicate}) takes fieldPath, "
                             "predicate and value, not operands")
        if name not in ("predicate", "fieldPath", "value"):
            raise QueryError(f"{part}.{name}", "unknown member")
    leaves[0] += 1
    if leaves[0] > MAX_LEAVES:
        raise QueryError(part, f"more than {MAX_LEAVES} conditions")
    path = raw.get("fieldPath")
    if not isinstance(path, str):
        raise QueryError(f"{part}.fieldPath", "is required (a string)")
    fld = _field(entity, path, f"{part}.fieldPath")
    vpart = f"{part}.value"
    if predicate in _NO_VALUE:
        if raw.get("value") is not None:
            raise QueryError(vpart, f"{predicate} takes no value")
        return Leaf(path, predicate)
    if "value" not in raw or raw["value"] is None:
        raise QueryError(vpart, f"{predicate} needs a value (use is_null for NULL)")
    value = raw["value"]
    if predicate in _TEXT_ONLY and fld.type != "str":
        raise QueryError(f"{part}.predicate", f"{predicate} applies to text fields only")
    if predicate == "in":
        if not isinstance(value, list) or not value:
            raise QueryError(vpart, "in takes a non-empty list of values")
        if len(value) > MAX_IN_VALUES:
            raise QueryError(vpart, f"in takes at most {MAX_IN_VALUES} values")
        return Leaf(path, predicate, tuple(
            convert(fld.type, item, f"{vpart}[{i}]") for i, item in enumerate(value)))
    return Leaf(path, predicate, convert(fld.type, value, vpart))


def _field(entity: Entity, path: str, part: str) -> Field:
    fld = entity.field(path)
    if fld is None:
        known = ", ".join(sorted(entity.fields))
        raise QueryError(part, f"unknown fieldPath {path!r}; known: {known}"
                         + (" and metadata.<name>" if entity.dynamic is not None else ""))
    return fld


_INT = re.compile(r"[+-]?\d{1,19}")


def convert(kind: FieldType, value: Any, part: str) -> Any:
    """A JSON value as the field's type: ints (or decimal strings, since the reference
    calls values strings) for ``int``; ISO 8601 text for ``datetime``; text for ``str``."""
    if kind == "int":
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise QueryError(part, "must be an integer")
        if not -MAX_SQL_INT - 1 <= value <= MAX_SQL_INT:
            raise QueryError(part, "is out of range")
        return value
    if kind == "datetime":
        if not isinstance(value, str):
            raise QueryError(part, "must be an ISO 8601 date-time string")
        try:
            parsed = datetime.fromisoformat(value.strip())
            return (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None
                    else parsed.astimezone(UTC))
        except (ValueError, OverflowError):
            raise QueryError(part, "must be an ISO 8601 date-time string") from None
    if not isinstance(value, str):
        raise QueryError(part, "must be a string")
    if "\x00" in value:
        raise QueryError(part, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(part, "is not valid Unicode text") from None
    return value


def parse_order(entity: Entity, raw: Any) -> tuple[SortKey, ...]:
    """``order_by`` (a list of ``{fieldPath, direction}``, or one such object), completed
    with the tie-breaker in the direction of the last key."""
    if raw is None or raw == []:
        keys = list(entity.default_order)
    else:
        items = raw if isinstance(raw, list) else [raw]
        if len(items) > MAX_ORDER_FIELDS:
            raise QueryError("order_by", f"at most {MAX_ORDER_FIELDS} fields")
        keys = []
        for i, item in enumerate(items):
            part = f"order_by[{i}]"
            if not isinstance(item, dict):
                raise QueryError(part, "must be an object {fieldPath, direction}")
            for name in item:
                if name not in ("fieldPath", "direction"):
                    raise QueryError(f"{part}.{name}", "unknown member")
            path = item.get("fieldPath")
            if not isinstance(path, str):
                raise QueryError(f"{part}.fieldPath", "is required (a string)")
            if not _field(entity, path, f"{part}.fieldPath").sortable:
                raise QueryError(f"{part}.fieldPath", f"{path!r} is not sortable")
            direction = item.get("direction", "ASC")
            if not isinstance(direction, str) or direction.upper() not in ("ASC", "DESC"):
                raise QueryError(f"{part}.direction", "must be ASC or DESC")
            if any(k.field == path for k in keys):
                raise QueryError(f"{part}.fieldPath", f"{path!r} is already ordered by")
            keys.append(SortKey(path, direction.upper() == "DESC"))
    for i, key in enumerate(keys):
        if key.field == entity.tiebreak:
            return tuple(keys[: i + 1])  # unique: whatever follows cannot matter
    return (*keys, SortKey(entity.tiebreak, keys[-1].descending if keys else False))


def parse_cursor(entity: Entity, order: tuple[SortKey, ...], raw: Any
                 ) -> tuple[int, bool, tuple[Any, ...] | None, tuple[Any, ...] | None]:
    """``cursor``: (page size, from the end?, after values, before values)."""
    if raw is None:
        return DEFAULT_PAGE, False, None, None
    if not isinstance(raw, dict):
        raise QueryError("cursor", "must be an object {first|last, after|before}")
    for name in raw:
        if name not in ("first", "last", "after", "before"):
            raise QueryError(f"cursor.{name}", "unknown member")
    first, last = raw.get("first"), raw.get("last")
    after, before = raw.get("after"), raw.get("before")
    if first is not None and last is not None:
        raise QueryError("cursor", "use either first or last, not both")
    if after is not None and before is not None:
        raise QueryError("cursor", "use either after or before, not both")
    from_end = last is not None or (first is None and before is not None)
    size = last if last is not None else first
    name = "last" if last is not None else "first"
    if size is None:
        size = DEFAULT_PAGE
    elif not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_PAGE:
        raise QueryError(f"cursor.{name}", f"must be an integer from 1 to {MAX_PAGE}")
    return (size, from_end,
            None if after is None else decode_cursor(entity, order, after, "cursor.after"),
            None if before is None else decode_cursor(entity, order, before, "cursor.before"))


# -- cursors -----------------------------------------------------------------------------------

def _signature(entity: Entity, order: Sequence[SortKey]) -> str:
    canonical = entity.name + "|" + ",".join(
        f"{k.field}:{'DESC' if k.descending else 'ASC'}" for k in order)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_cursor(entity: Entity, order: Sequence[SortKey], values: Sequence[Any]) -> str:
    """An opaque cursor: Base64 of JSON holding the order's signature and a row's sort
    values."""
    encoded = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    text = json.dumps({"o": _signature(entity, order), "v": encoded}, separators=(",", ":"),
                      ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(entity: Entity, order: Sequence[SortKey], cursor: Any,
                  part: str = "cursor") -> tuple[Any, ...]:
    """The sort values a cursor holds, checked against the order it must have been made
    for and against the fields' types."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise QueryError(part, "is not a cursor of this endpoint")
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        raise QueryError(part, "is not a cursor of this endpoint") from None
    if (not isinstance(data, dict) or not isinstance(data.get("v"), list)
            or not isinstance(data.get("o"), str)):
        raise QueryError(part, "is not a cursor of this endpoint")
    if data["o"] != _signature(entity, order) or len(data["v"]) != len(order):
        raise QueryError(part, "was made for another order_by; start again without a "
                         "cursor")
    values: list[Any] = []
    for key, value in zip(order, data["v"], strict=True):
        fld = _field(entity, key.field, part)
        if value is None:
            if not fld.nullable:
                raise QueryError(part, "is not a cursor of this endpoint")
            values.append(None)
            continue
        try:
            values.append(convert(fld.type, value, part))
        except QueryError:
            raise QueryError(part, "is not a cursor of this endpoint") from None
    return tuple(values)


# -- compiling ---------------------------------------------------------------------------------

class byte_ordered(FunctionElement[str]):
    """Text compared in code-point order: as it is on SQLite (BINARY collation), with
    ``COLLATE "C"`` on PostgreSQL (whose default collation is the locale's)."""

    type = Text()
    inherit_cache = True
    name = "byte_ordered"


@compiles(byte_ordered)
def _byte_ordered(element: byte_ordered, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)})"


@compiles(byte_ordered, "postgresql")
def _byte_ordered_pg(element: byte_ordered, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


class epoch_seconds(FunctionElement[int]):
    """Whole seconds since 1970 of a stored UTC date-time (``bot/admin`` shows dates so)."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_seconds"


@compiles(epoch_seconds)
def _epoch_seconds(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(epoch_seconds, "postgresql")
def _epoch_seconds_pg(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    return (f"CAST(floor(extract(epoch FROM {compiler.process(element.clauses, **kw)})) "
            "AS BIGINT)")


class text_position(FunctionElement[int]):
    """1-based position of the second text in the first (0: absent), case-sensitive on
    both databases — unlike LIKE, which SQLite folds ASCII case for — and free of
    wildcards, so ``%`` and ``_`` in a value match themselves."""

    type = Integer()
    inherit_cache = True
    name = "text_position"


@compiles(text_position)
def _instr(element: text_position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(text_position, "postgresql")
def _strpos(element: text_position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


def compile_where(entity: Entity, node: Node | None) -> ColumnElement[bool]:
    """The SQL condition of a parsed ``where`` tree."""
    if node is None:
        return true()
    if isinstance(node, Branch):
        parts = [compile_where(entity, child) for child in node.operands]
        return and_(*parts) if node.predicate == "and" else or_(*parts)
    fld = entity.field(node.field)
    assert fld is not None  # checked by parse_where
    expr, value, p = fld.expr, node.value, node.predicate
    cond: ColumnElement[bool]
    if p == "is_null":
        cond = expr.is_(None)
    elif p == "is_not_null":
        cond = expr.is_not(None)
    elif p == "not_eq":
        cond = or_(expr != value, expr.is_(None)) if fld.nullable else expr != value
    elif p == "in":
        cond = expr.in_(list(value))
    elif p in _COMPARISONS:
        cond = _COMPARISONS[p](expr, value)
    elif p == "like":
        cond = text_position(expr, value) > 0
    elif p == "starts_with":
        cond = starts_with(fld, value)
    else:
        raise AssertionError(p)
    return cond


_COMPARISONS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "eq": operator.eq, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
    "lte": operator.le}


def starts_with(fld: Field, prefix: str) -> ColumnElement[bool]:
    """``prefix`` ≤ value < the prefix's successor — an index range — where the field
    compares in code-point order; a substring comparison elsewhere."""
    if not prefix:
        return fld.expr.is_not(None)
    if not fld.byte_order:
        return func.substr(fld.expr, 1, len(prefix)) == prefix
    upper = successor(prefix)
    if upper is None:
        return fld.expr >= prefix
    return and_(fld.expr >= prefix, fld.expr < upper)


@dataclass(frozen=True, eq=False)
class _Key:
    expr: ColumnElement[Any]
    descending: bool
    nullable: bool


def _keys(entity: Entity, order: Sequence[SortKey], reverse: bool = False) -> list[_Key]:
    out = []
    for key in order:
        fld = entity.field(key.field)
        assert fld is not None
        out.append(_Key(fld.expr, key.descending != reverse, fld.nullable))
    return out


def order_clauses(entity: Entity, order: Sequence[SortKey], reverse: bool = False
                  ) -> list[ColumnElement[Any]]:
    """ORDER BY terms; NULLs smallest. Non-nullable keys get no NULLS clause, so that
    PostgreSQL can walk a plain index either way."""
    out: list[ColumnElement[Any]] = []
    for k in _keys(entity, order, reverse):
        term = k.expr.desc() if k.descending else k.expr.asc()
        if k.nullable:
            term = term.nulls_last() if k.descending else term.nulls_first()
        out.append(term)
    return out


def keyset_condition(entity: Entity, order: Sequence[SortKey], values: Sequence[Any], *,
                     reverse: bool = False, inclusive: bool = False) -> ColumnElement[bool]:
    """Rows strictly beyond the row whose sort values are ``values``, in ``order`` (or its
    reverse); ``inclusive`` also admits that row itself.

    The condition is the expanded form ``k1 > v1 OR (k1 = v1 AND k2 > v2) OR …`` (portable,
    NULL-aware, mixed directions allowed), and with it a plain range on the first key
    (``k1 >= v1``) that lets either database start an index scan at the boundary instead
    of filtering from the start."""
    keys = _keys(entity, order, reverse)
    alternatives: list[ColumnElement[bool]] = []
    equal: list[ColumnElement[bool]] = []
    for k, v in zip(keys, values, strict=True):
        beyond = _beyond(k, v)
        alternatives.append(and_(*equal, beyond) if equal else beyond)
        equal.append(k.expr.is_(None) if v is None else k.expr == v)
    if inclusive:
        alternatives.append(and_(*equal))
    condition = or_(*alternatives)
    bound = _leading_bound(keys[0], values[0])
    return condition if bound is None else and_(bound, condition)


def _beyond(k: _Key, v: Any) -> ColumnElement[bool]:
    if not k.descending:
        return k.expr.is_not(None) if v is None else k.expr > v
    if v is None:
        return false()  # NULL is the smallest: nothing comes after it, descending
    return or_(k.expr < v, k.expr.is_(None)) if k.nullable else k.expr < v


def _leading_bound(k: _Key, v: Any) -> ColumnElement[bool] | None:
    if v is None:
        return k.expr.is_(None) if k.descending else None
    bound: ColumnElement[bool] | None = k.expr >= v if not k.descending else (
        None if k.nullable else k.expr <= v)
    return bound


# -- running -----------------------------------------------------------------------------------

def page_statement(entity: Entity, query: Query, source: Select[Any]) -> Select[Any]:
    """The SELECT of one page: ``source`` filtered by ``where``, bounded by the cursor,
    ordered (reversed for ``last``), one row more than the page, with the sort values
    added as columns ``_qk0``, ``_qk1``, … (what the cursors are made of)."""
    order = query.order
    stmt = source.where(compile_where(entity, query.where)).add_columns(
        *[k.expr.label(f"_qk{i}") for i, k in enumerate(_keys(entity, order))])
    if query.after is not None:
        stmt = stmt.where(keyset_condition(entity, order, query.after))
    if query.before is not None:
        stmt = stmt.where(keyset_condition(entity, order, query.before, reverse=True))
    return stmt.order_by(*order_clauses(entity, order, reverse=query.from_end)).limit(
        query.limit + 1)


def fetch_page(conn: Connection, entity: Entity, query: Query, source: Select[Any]
               ) -> Page[Row[Any]]:
    """One page of ``source`` (a SELECT the caller has scoped) filtered, ordered and cut
    by ``query``. One extra row is fetched in the paging direction to tell whether more
    follow; the other direction is one EXISTS. ``total`` costs a COUNT."""
    scoped = source.where(compile_where(entity, query.where))
    order = query.order
    rows = list(conn.execute(page_statement(entity, query, source)).all())
    more = len(rows) > query.limit
    del rows[query.limit:]
    if query.from_end:
        rows.reverse()

    def exists_beyond(values: tuple[Any, ...] | None, reverse: bool) -> bool:
        """Whether a matching row lies at the boundary or past it, away from the page."""
        if values is None:
            return False
        cond = keyset_condition(entity, order, values, reverse=reverse, inclusive=True)
        return bool(conn.execute(select(scoped.where(cond).exists())).scalar())

    if query.from_end:
        has_previous = more or exists_beyond(query.after, reverse=True)
        has_next = exists_beyond(query.before, reverse=False)
    else:
        has_next = more or exists_beyond(query.before, reverse=False)
        has_previous = exists_beyond(query.after, reverse=True)
    total = -1
    if query.total:
        total = int(conn.execute(
            select(func.count()).select_from(scoped.order_by(None).subquery())).scalar_one())
    cursors = [encode_cursor(entity, order, [row._mapping[f"_qk{i}"] for i in
                                             range(len(order))]) for row in rows]
    return Page(rows, PageInfo(has_next_page=has_next, has_previous_page=has_previous,
                               start_cursor=cursors[0] if cursors else None,
                               end_cursor=cursors[-1] if cursors else None, total=total),
                cursors)


# -- the object search -------------------------------------------------------------------------

#: A metadata name, as stored: an HTTP token, lower-cased.
_METADATA_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,256}")
METADATA_PREFIX = "metadata."


def _metadata_field(path: str) -> Field | None:
    if not path.startswith(METADATA_PREFIX):
        return None
    name = path[len(METADATA_PREFIX):].lower()
    if not _METADATA_NAME.fullmatch(name):
        return None
    # ->> on PostgreSQL, json_extract on SQLite; NULL when the object has no such name.
    return Field(byte_ordered(objects.c.user_metadata[name].as_string()), "str",
                 nullable=True)


#: The fields of ``GET /v1/storage/buckets/{bucket}/search``. Keys are unique among a
#: bucket's latest versions, so the key breaks ties. ``content_type`` compares in the
#: database's collation (its index serves it on PostgreSQL too).
OBJECTS = Entity(
    name="objects",
    fields={
        "key": Field(objects.c.key, "str", sortable=True),
        "size": Field(objects.c.size, "int", sortable=True),
        "last_modified": Field(objects.c.last_modified, "datetime", sortable=True),
        "content_type": Field(objects.c.content_type, "str", sortable=True, nullable=True,
                              byte_order=False),
        "etag": Field(objects.c.etag, "str"),
    },
    tiebreak="key",
    default_order=(SortKey("key"),),
    dynamic=_metadata_field,
)


@dataclass(frozen=True, slots=True)
class ObjectMatch:
    key: str
    size: int
    last_modified: datetime
    etag: str
    content_type: str | None
    metadata: dict[str, str]


def object_source(bucket_id: int) -> Select[Any]:
    """The rows an object search looks at: the bucket's latest versions, not delete
    markers. ``= true`` rather than ``IS true``: PostgreSQL only uses an index for ``=``."""
    return select(objects.c.key, objects.c.size, objects.c.last_modified, objects.c.etag,
                  objects.c.content_type, objects.c.user_metadata).where(
        objects.c.bucket_id == bucket_id, objects.c.is_latest == true(),
        objects.c.is_delete_marker == false())


def search_objects(conn: Connection, bucket_id: int, query: Query) -> Page[ObjectMatch]:
    """The bucket's latest, live objects that match ``query``, one page of them."""
    page = fetch_page(conn, OBJECTS, query, object_source(bucket_id))
    return Page([ObjectMatch(r.key, r.size, r.last_modified, r.etag, r.content_type,
                             dict(r.user_metadata or {})) for r in page.items],
                page.page_info, page.cursors)
