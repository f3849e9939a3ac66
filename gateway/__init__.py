"""An S3-compatible object gateway for bot platforms."""

__version__ = "0.1.0"
