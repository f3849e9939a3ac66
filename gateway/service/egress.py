"""Where the gateway may connect on a customer's behalf: public addresses only.

A bot's webhook URL is chosen by the bot's owner, so without a policy any customer could
make the gateway POST to its own loopback, the cloud metadata service (169.254.169.254) or
the operator's private network, and read the answers back in ``last_error_message``.

The check happens when connecting, not when the URL is saved: a name is resolved, every
address it resolves to is judged, and the connection goes to an address that passed — the
one that was checked, so a name that resolves differently a moment later (DNS rebinding)
gains nothing. Addresses that are not globally routable (loopback, private, link-local,
shared, multicast, reserved, unspecified; IPv4-mapped IPv6 judged as its IPv4) are refused
unless ``GATEWAY_WEBHOOK_ALLOWED_NETWORKS`` names a network holding them, for receivers
that really live on the operator's network. Redirects are never followed, and no proxy
from the environment is used, so there is no second way out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The properties of an address that make it non-public, in the order they are named.
_KINDS = (("is_loopback", "loopback"), ("is_link_local", "link-local"),
          ("is_multicast", "multicast"), ("is_unspecified", "unspecified"),
          ("is_private", "private"), ("is_reserved", "reserved"))


def parse_networks(text: str) -> tuple[Network, ...]:
    """``GATEWAY_WEBHOOK_ALLOWED_NETWORKS``: comma-separated networks or addresses."""
    found: list[Network] = []
    for item in text.split(","):
        if item.strip():
            try:
                found.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError("GATEWAY_WEBHOOK_ALLOWED_NETWORKS: not a network: "
                                 f"{item.strip()!r} (e.g. 10.0.0.0/8,fd00::/8)") from None
    return tuple(found)


class AddressNotAllowed(httpcore.ConnectError):
    """The destination resolved only to addresses the policy refuses."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Public addresses, plus the operator's ``allowed`` networks."""

    allowed: tuple[Network, ...] = ()

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be connected to (``"loopback"``, …), or None."""
        if any(address.version == net.version and address in net for net in self.allowed):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self.refusal(address.ipv4_mapped)
        for attribute, kind in _KINDS:
            if getattr(address, attribute):
                return kind
        return None if address.is_global else "not public"


class PolicedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    # The signatures are httpcore's interface, ``timeout`` included.
    async def connect_tcp(self, host: str, port: int,
                          timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        allowed = await self.allowed_addresses(host, port)
        last: Exception | None = None
        for address in allowed:  # in the resolver's order, like a plain connect
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def allowed_addresses(self, host: str, port: int) -> list[Address]:
        """The addresses ``host`` resolves to that the policy allows; raises
        :class:`AddressNotAllowed` naming the first refusal when there are none."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        allowed: list[Address] = []
        refused: list[tuple[Address, str]] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            why = self.policy.refusal(address)
            if why is not None:
                refused.append((address, why))
            elif address not in allowed:
                allowed.append(address)
        if not allowed:
            if not refused:
                raise httpcore.ConnectError(f"cannot resolve {host}: no address")
            address, why = refused[0]
            where = f"{address}" if host == str(address) else f"{host} resolves to {address}"
            raise AddressNotAllowed(f"address not allowed: {where} ({why})")
        return allowed

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None
                                  = None) -> httpcore.AsyncNetworkStream:
        raise AddressNotAllowed("address not allowed: a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def policed_transport(policy: AddressPolicy) -> httpx.AsyncHTTPTransport:
    """An httpx transport (no proxies from the environment) whose every connection goes
    through :class:`PolicedNetworkBackend`."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    pool = transport._pool
    # httpx has no parameter for httpcore's network backend; the pool keeps it here and
    # hands it to every connection it opens (tests/test_webhooks.py proves it holds).
    if not isinstance(pool, httpcore.AsyncConnectionPool) \
            or not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx/httpcore changed: cannot police webhook connections")
    pool._network_backend = PolicedNetworkBackend(policy)
    return transport
