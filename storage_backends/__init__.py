"""Pluggable blob stores behind one narrow protocol. Imports nothing from ``gateway``."""

from storage_backends.errors import (
    BackendUnavailable,
    BlobNotFound,
    InsufficientStorage,
    InvalidBlobKey,
    InvalidPart,
    NotSupported,
    StorageError,
    UploadNotFound,
)
from storage_backends.protocol import (
    CHUNK_SIZE,
    Backend,
    BlobInfo,
    BlobReader,
    ByteRange,
    Capabilities,
    PartInfo,
    PartRef,
)

__all__ = [
    "CHUNK_SIZE",
    "Backend",
    "BackendUnavailable",
    "BlobInfo",
    "BlobNotFound",
    "BlobReader",
    "ByteRange",
    "Capabilities",
    "InsufficientStorage",
    "InvalidBlobKey",
    "InvalidPart",
    "NotSupported",
    "PartInfo",
    "PartRef",
    "StorageError",
    "UploadNotFound",
]
