"""S3 secret keys at rest.

SigV4 needs each secret in clear to compute signatures, so secrets cannot be hashed; they
are encrypted (Fernet: AES-128-CBC + HMAC-SHA256) with a server key: ``GATEWAY_SECRET_KEY``
when set, else a key file created in the data dir with mode 0600. Values stored before
encryption existed (no prefix) are still read, and are sealed at the next start.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

log = logging.getLogger("gateway.credentials")

PREFIX = "enc1:"
KEY_FILE = "secret.key"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_passphrase(cls, passphrase: str) -> SecretBox:
        return cls(base64.urlsafe_b64encode(hashlib.sha256(passphrase.encode()).digest()))

    @classmethod
    def load(cls, setting: str, data_dir: Path) -> SecretBox:
        if setting:
            return cls.from_passphrase(setting)
        path = data_dir / KEY_FILE
        data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Written whole under another name, then linked into place: processes starting
            # together (uvicorn workers) agree on one key and never read half of one.
            staged = data_dir / f".{KEY_FILE}.{os.getpid()}"
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, Fernet.generate_key())
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(staged, path)
            except FileExistsError:
                pass
            finally:
                staged.unlink()
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s is readable by others (mode %o); setting 0600", path, mode)
            path.chmod(0o600)
        return cls(path.read_bytes().strip())

    def seal(self, secret: str) -> str:
        return PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before encryption at rest; sealed at the next start
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise ValueError("an access key's secret does not decrypt with this server key "
                             "(GATEWAY_SECRET_KEY or <data dir>/secret.key changed?)") from None

    @staticmethod
    def is_sealed(stored: str) -> bool:
        return stored.startswith(PREFIX)
