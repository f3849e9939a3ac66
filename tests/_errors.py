"""Asserting on S3 errors raised through boto3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError


def client_error(call: Callable[..., Any], **kwargs: Any) -> tuple[str, int]:
    """Run a boto3 call that must fail; its S3 error code and HTTP status."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]
