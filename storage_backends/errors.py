"""Errors every backend raises; none of them knows anything about HTTP.

    StorageError
    ├── BlobNotFound          (also a FileNotFoundError, so callers may catch the builtin)
    ├── UploadNotFound        a multipart upload id the backend does not know
    ├── InvalidPart           a part that is missing or does not match
    ├── InvalidBlobKey        a blob key outside the backend's safe alphabet
    ├── NotSupported          the operation is not offered by this backend
    ├── InsufficientStorage   the medium is full (ENOSPC, upstream quota)
    └── BackendUnavailable    transient: the medium did not answer; retrying may help

Each backend maps its native errors onto these at its edge, once.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every backend error."""


class BlobNotFound(StorageError, FileNotFoundError):
    def __init__(self, key: str) -> None:
        super().__init__(f"blob not found: {key}")
        self.key = key


class UploadNotFound(StorageError):
    def __init__(self, upload_id: str) -> None:
        super().__init__(f"multipart upload not found: {upload_id}")
        self.upload_id = upload_id


class InvalidPart(StorageError):
    def __init__(self, part_number: int, reason: str = "missing") -> None:
        super().__init__(f"part {part_number}: {reason}")
        self.part_number = part_number


class InvalidBlobKey(StorageError, ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"invalid blob key: {key!r}")
        self.key = key


class NotSupported(StorageError):
    def __init__(self, operation: str, backend: str) -> None:
        super().__init__(f"{operation} is not supported by the {backend} backend")
        self.operation = operation
        self.backend = backend


class InsufficientStorage(StorageError):
    """The medium has no room left; nothing of the write was kept."""


class BackendUnavailable(StorageError):
    """The medium did not answer; the operation may be retried."""
