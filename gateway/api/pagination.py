"""The API overview's common list parameters, and the answer a list gives.

``?limit=20&offset=0`` (limit 1 to 100, default 20; larger limits are clamped),
``?sort=<field>&order=asc|desc`` and ``?filter[<field>]=<value>`` (exact match, several
filters combine with AND). Each endpoint names the fields it sorts and filters by; any
other is a 400 ``VALIDATION_ERROR`` naming the accepted ones, so a typo never silently
returns everything.

A list answers the envelope with the page as ``data`` and the paging state beside it::

    {"success": true, "data": [...], "pagination": {"limit": 20, "offset": 0,
     "total": 42, "sort": "name", "order": "asc"}}

(``X-Total-Count`` carries the total too.) :func:`paginate` pages an in-memory list; SQL
backed lists pass :class:`PageRequest`'s fields to their service and answer with
:func:`paged`.

The management lists also speak the pagination reference's keyset language
(:mod:`gateway.service.query`): a request that carries any of ``cursor``, ``where``,
``order_by`` or ``total`` (:func:`wants_keyset`) gets a keyset page instead::

    {"success": true, "data": {"items": [...], "pageInfo": {"hasNextPage": …,
     "hasPreviousPage": …, "startCursor": …, "endCursor": …, "total": -1}}}

The two languages do not mix: paging by offset from a cursor, or filtering both ways at
once, has no single meaning, so such a request is a 400 naming the parameters to drop.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.common import int_query, ok
from gateway.api.errors import validation_error
from gateway.service.query import Entity, PageInfo, Query, QueryError, query_from_params

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_FILTER = re.compile(r"^filter\[([^\[\]]+)\]$")
#: The keyset language's parameters, and the offset list's (besides ``filter[…]``).
KEYSET_PARAMS = ("cursor", "where", "order_by", "total")
OFFSET_PARAMS = ("limit", "offset", "sort", "order")


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    offset: int
    #: The API field to sort by.
    sort: str
    descending: bool
    #: API field → the value it must equal.
    filters: dict[str, str] = field(default_factory=dict)

    @property
    def order(self) -> str:
        return "desc" if self.descending else "asc"


def page_request(request: Request, *, sortable: Collection[str], default_sort: str,
                 filterable: Collection[str] = (), aliases: Mapping[str, str] | None = None
                 ) -> PageRequest:
    """The list parameters of ``request``, checked against what the endpoint supports.
    ``aliases``: plain query parameters that act as filters (``?botStatus=muted`` as
    ``filter[botStatus]=muted``)."""
    q = request.query_params
    limit = int_query(request, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    offset = int_query(request, "offset", 0)
    sort = q.get("sort") or default_sort
    if sort not in sortable:
        raise validation_error(f"sort is one of {', '.join(sorted(sortable))}", field="sort",
                               accepted=sorted(sortable))
    order = (q.get("order") or "asc").lower()
    if order not in ("asc", "desc"):
        raise validation_error("order is asc or desc", field="order")
    filters: dict[str, str] = {}
    for param, name in (aliases or {}).items():
        if q.get(param) not in (None, ""):
            filters[name] = q[param]
    for key, value in q.multi_items():
        match = _FILTER.match(key)
        if match is None:
            continue
        name = match.group(1)
        if name not in filterable:
            raise validation_error(
                f"filter[{name}] is not supported; filter by "
                f"{', '.join(sorted(filterable)) or 'nothing here'}",
                field=key, accepted=sorted(filterable))
        filters[name] = value
    return PageRequest(limit, offset, sort, order == "desc", filters)


def _sort_key(value: Any) -> tuple[int, Any]:
    """None last; numbers before text; text compared as text."""
    if value is None:
        return (2, "")
    if isinstance(value, bool | int | float):
        return (0, value)
    return (1, str(value))


def _matches(item: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    for name, wanted in filters.items():
        value = item.get(name)
        text = ("true" if value else "false") if isinstance(value, bool) else \
            ("" if value is None else str(value))
        if text != wanted:
            return False
    return True


def paginate(items: Sequence[Mapping[str, Any]], page: PageRequest
             ) -> tuple[list[Mapping[str, Any]], int]:
    """Filter, sort and slice answer dicts in memory: (the page, how many matched)."""
    chosen = [item for item in items if _matches(item, page.filters)]
    chosen.sort(key=lambda item: _sort_key(item.get(page.sort)), reverse=page.descending)
    return chosen[page.offset:page.offset + page.limit], len(chosen)


def paged(items: Sequence[Any], total: int, page: PageRequest, *,
          message: str | None = None) -> JSONResponse:
    """The envelope of one page of a list."""
    body: dict[str, Any] = {
        "success": True, "data": list(items),
        "pagination": {"limit": page.limit, "offset": page.offset, "total": total,
                       "sort": page.sort, "order": page.order}}
    if message is not None:
        body["message"] = message
    return JSONResponse(body, headers={"X-Total-Count": str(total)})


# -- keyset pages --------------------------------------------------------------------------


def wants_keyset(request: Request) -> bool:
    """Whether the request carries a keyset parameter (even an empty one)."""
    q = request.query_params
    return any(name in q for name in KEYSET_PARAMS)


def keyset_query(request: Request, entity: Entity, *, filter_aliases: Collection[str] = ()
                 ) -> Query:
    """The keyset query of ``request`` over ``entity``. 400 ``VALIDATION_ERROR`` when the
    request also carries offset-list parameters (``filter_aliases``: plain parameters the
    endpoint's offset list takes as filters), and for a ``where``, ``order_by``, ``cursor``
    or ``total`` the grammar or the entity refuses (``details.field`` names the part, e.g.
    ``where.operands[1].fieldPath``; ``details.reason`` says why)."""
    q = request.query_params
    mixed = [name for name in q if name in OFFSET_PARAMS or name in filter_aliases
             or _FILTER.match(name)]
    if mixed:
        given = [name for name in KEYSET_PARAMS if name in q]
        raise validation_error(
            f"{', '.join(given)} ask for a keyset page, {', '.join(mixed)} for an offset "
            "page: use either cursor/where/order_by/total or "
            "limit/offset/sort/order/filter[...], not both (in a keyset page, filter with "
            "where, sort with order_by and size pages with cursor.first or cursor.last)",
            field=mixed[0], conflicting=mixed, keyset=given)
    try:
        return query_from_params(entity, q)
    except QueryError as exc:
        raise validation_error(str(exc), field=exc.part, reason=exc.reason) from None


def keyset_page(items: Sequence[Any], page_info: PageInfo) -> JSONResponse:
    """The envelope of one keyset page."""
    return ok({"items": list(items), "pageInfo": page_info.as_dict()})
