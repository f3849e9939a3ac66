"""Password hashes: scrypt, stored as a self-describing ``scrypt$n$r$p$salt$hash`` string.

Hashing costs tens of milliseconds on purpose; the async helpers run it in a worker thread
so the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

import anyio

MIN_LENGTH = 8
MAX_LENGTH = 1024
SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
_DKLEN = 32
_SALT_BYTES = 16


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=256 * 1024 * 1024)


def validate_password(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password has at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"a password has at most {MAX_LENGTH} characters")


def hash_password_sync(password: str) -> str:
    validate_password(password)
    salt = os.urandom(_SALT_BYTES)
    digest = _derive(password, salt, N, R, P, _DKLEN)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password_sync(password: str, encoded: str | None) -> bool:
    """Constant-time comparison. With ``encoded`` None (no such user, or no password set)
    a dummy hash is still computed, so failures take the same time either way."""
    if encoded is None:
        _derive(password[:MAX_LENGTH], b"\0" * _SALT_BYTES, N, R, P, _DKLEN)
        return False
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != SCHEME:
            return False
        expected = _unb64(digest)
        actual = _derive(password[:MAX_LENGTH], _unb64(salt), int(n), int(r), int(p),
                         len(expected))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected) and len(password) <= MAX_LENGTH


async def hash_password(password: str) -> str:
    validate_password(password)
    return await anyio.to_thread.run_sync(hash_password_sync, password)


async def verify_password(password: str, encoded: str | None) -> bool:
    return await anyio.to_thread.run_sync(verify_password_sync, password, encoded)
