"""``/v1/admin``: users, S3 keys, groups and bucket grants.

Everything here needs an admin: the ``admin`` role *and* a credential with the ``admin``
permission — except a bucket's grants (``/v1/admin/buckets/{bucket}/grants``), which the
bucket's owner and holders of a ``full`` grant on it may also manage: there the service's
policy decides, as it does for S3, and the credential needs ``storage:read`` (to list) or
``storage:write`` (to change).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway.api.common import gateway_of, ok, read_json, require_admin, require_caller
from gateway.api.errors import ApiError, validation_error
from gateway.api.pagination import page_request, paged
from gateway.service.accounts import AlreadyExists, NotFound


@contextmanager
def _service_errors() -> Iterator[None]:
    """Management errors of the services as API errors."""
    try:
        yield
    except NotFound as exc:
        raise ApiError(404, "NOT_FOUND", str(exc)) from None
    except AlreadyExists as exc:
        raise ApiError(409, "CONFLICT", str(exc)) from None
    except ValueError as exc:
        raise validation_error(str(exc)) from None


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise validation_error(f"{name} must be a string", field=name)
    return value


# -- users -----------------------------------------------------------------------------------


async def list_users(request: Request) -> JSONResponse:
    await require_admin(request)
    return ok(await gateway_of(request).accounts.list_users())


async def create_user(request: Request) -> JSONResponse:
    await require_admin(request)
    body = await read_json(request)
    name = _optional_str(body, "name")
    if not name:
        raise validation_error("name is required", field="name")
    accounts = gateway_of(request).accounts
    with _service_errors():
        await accounts.add_user(
            name, role=_optional_str(body, "role") or "member",
            display_name=_optional_str(body, "display_name"),
            email=_optional_str(body, "email"),
            canonical_id=_optional_str(body, "canonical_id"),
            password=_optional_str(body, "password"))
        return ok(await accounts.user(name), status=201, message="User created")


async def update_user(request: Request) -> JSONResponse:
    caller = await require_admin(request)
    name = request.path_params["name"]
    body = await read_json(request)
    gw = gateway_of(request)
    disabled, role = body.get("disabled"), body.get("role")
    if "enabled" in body and disabled is None and isinstance(body["enabled"], bool):
        disabled = not body["enabled"]
    if disabled is not None and not isinstance(disabled, bool):
        raise validation_error("disabled must be true or false", field="disabled")
    if role is not None and not isinstance(role, str):
        raise validation_error("role must be a string", field="role")
    if name == caller.principal.name and (disabled or role not in (None, "admin")):
        # The last door out of an installation should not close by accident.
        raise validation_error("Admins cannot disable or demote themselves")
    with _service_errors():
        await gw.accounts.user(name)  # 404 before changing anything
        if "password" in body:
            password = body["password"]
            if password is not None and not isinstance(password, str):
                raise validation_error("password must be a string or null", field="password")
            await gw.accounts.set_password(name, password)
        if role is not None:
            await gw.accounts.set_role(name, role)
        if disabled is not None:
            await gw.accounts.set_user_disabled(name, disabled)
        return ok(await gw.accounts.user(name), message="User updated")


# -- S3 keys ---------------------------------------------------------------------------------


async def list_keys(request: Request) -> JSONResponse:
    await require_admin(request)
    with _service_errors():
        return ok(await gateway_of(request).accounts.list_keys(request.path_params["name"]))


async def create_key(request: Request) -> JSONResponse:
    await require_admin(request)
    body = await read_json(request, allow_empty=True)
    name = request.path_params["name"]
    with _service_errors():
        access, secret = await gateway_of(request).accounts.create_key(
            name, _optional_str(body, "access_key"), _optional_str(body, "secret_key"))
    return ok({"user": name, "access_key": access, "secret_key": secret, "enabled": True},
              status=201, message="Store the secret key now: it is not shown again",
              headers={"Cache-Control": "no-store"})


async def update_key(request: Request) -> JSONResponse:
    await require_admin(request)
    body = await read_json(request)
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise validation_error("enabled must be true or false", field="enabled")
    access_key = request.path_params["access_key"]
    with _service_errors():
        await gateway_of(request).accounts.set_key_enabled(access_key, enabled)
    return ok({"access_key": access_key, "enabled": enabled})


# -- groups ----------------------------------------------------------------------------------


async def list_groups(request: Request) -> JSONResponse:
    await require_admin(request)
    return ok(await gateway_of(request).groups.list_groups())


async def create_group(request: Request) -> JSONResponse:
    await require_admin(request)
    body = await read_json(request)
    name = _optional_str(body, "name")
    if not name:
        raise validation_error("name is required", field="name")
    groups = gateway_of(request).groups
    with _service_errors():
        await groups.create_group(name)
        return ok(await groups.get_group(name), status=201, message="Group created")


async def delete_group(request: Request) -> JSONResponse:
    await require_admin(request)
    name = request.path_params["name"]
    with _service_errors():
        await gateway_of(request).groups.delete_group(name)
    return ok({"name": name, "deleted": True}, message="Group deleted")


async def add_member(request: Request) -> JSONResponse:
    await require_admin(request)
    group, user = request.path_params["name"], request.path_params["user"]
    groups = gateway_of(request).groups
    with _service_errors():
        await groups.add_member(group, user)
        return ok(await groups.get_group(group))


async def remove_member(request: Request) -> JSONResponse:
    await require_admin(request)
    group, user = request.path_params["name"], request.path_params["user"]
    groups = gateway_of(request).groups
    with _service_errors():
        await groups.remove_member(group, user)
        return ok(await groups.get_group(group))


# -- bucket grants (admins, the bucket's owner, and ``full`` grantees) -----------------------


async def list_grants(request: Request) -> JSONResponse:
    caller = await require_caller(request, "storage:read")
    with _service_errors():
        return ok(await gateway_of(request).groups.list_grants(
            request.path_params["bucket"], principal=caller.principal))


def _grantee(request: Request, body: dict[str, Any]) -> tuple[str, str]:
    kind = body.get("grantee_type", request.query_params.get("grantee_type"))
    name = body.get("grantee", request.query_params.get("grantee"))
    if not isinstance(kind, str) or not kind:
        raise validation_error("grantee_type is required (user or group)",
                               field="grantee_type")
    if not isinstance(name, str) or not name:
        raise validation_error("grantee is required", field="grantee")
    return kind, name


async def put_grant(request: Request) -> JSONResponse:
    caller = await require_caller(request, "storage:write")
    body = await read_json(request)
    kind, name = _grantee(request, body)
    permission = body.get("permission")
    if not isinstance(permission, str):
        raise validation_error("permission is required (read, write or full)",
                               field="permission")
    with _service_errors():
        granted = await gateway_of(request).groups.grant(
            request.path_params["bucket"], kind, name, permission, principal=caller.principal)
    return ok(granted, message="Grant saved")


async def delete_grant(request: Request) -> JSONResponse:
    """The grantee comes as a JSON body or as ``?grantee_type=&grantee=``."""
    caller = await require_caller(request, "storage:write")
    body = await read_json(request, allow_empty=True)
    kind, name = _grantee(request, body)
    bucket = request.path_params["bucket"]
    with _service_errors():
        await gateway_of(request).groups.revoke(bucket, kind, name, principal=caller.principal)
    return ok({"bucket": bucket, "grantee_type": kind, "grantee": name, "revoked": True},
              message="Grant revoked")


# -- refused uploads ---------------------------------------------------------------------------


async def list_rejections(request: Request) -> JSONResponse:
    """Uploads the package rules or the malware scanner refused (``order=desc``: newest
    first)."""
    await require_admin(request)
    page = page_request(request, sortable=("createdAt",), default_sort="createdAt",
                        filterable=("bucket", "reason", "principal"))
    items, total = await gateway_of(request).packages.rejections(
        filters={name: value for name, value in page.filters.items()},
        descending=page.descending, limit=page.limit, offset=page.offset)
    return paged(items, total, page)


routes: list[BaseRoute] = [
    Route("/v1/admin/users", list_users, methods=["GET"]),
    Route("/v1/admin/users", create_user, methods=["POST"]),
    Route("/v1/admin/users/{name}", update_user, methods=["PATCH"]),
    Route("/v1/admin/users/{name}/keys", list_keys, methods=["GET"]),
    Route("/v1/admin/users/{name}/keys", create_key, methods=["POST"]),
    Route("/v1/admin/keys/{access_key}", update_key, methods=["PATCH"]),
    Route("/v1/admin/groups", list_groups, methods=["GET"]),
    Route("/v1/admin/groups", create_group, methods=["POST"]),
    Route("/v1/admin/groups/{name}", delete_group, methods=["DELETE"]),
    Route("/v1/admin/groups/{name}/members/{user}", add_member, methods=["PUT"]),
    Route("/v1/admin/groups/{name}/members/{user}", remove_member, methods=["DELETE"]),
    Route("/v1/admin/buckets/{bucket}/grants", list_grants, methods=["GET"]),
    Route("/v1/admin/buckets/{bucket}/grants", put_grant, methods=["PUT"]),
    Route("/v1/admin/buckets/{bucket}/grants", delete_grant, methods=["DELETE"]),
    Route("/v1/admin/rejections", list_rejections, methods=["GET"]),
]
