"""SigV4 presigned S3 URLs (query-string authentication), path-style.

The same construction as botocore's ``generate_presigned_url`` with SigV4: ``host`` (and
``content-type`` when one is fixed for a PUT) signed, ``UNSIGNED-PAYLOAD``. The gateway's
S3 endpoint verifies them like any other presigned URL.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from gateway.auth.sigv4 import (
    ALGORITHM,
    AMZ_DATE_FORMAT,
    MAX_PRESIGNED_EXPIRES,
    SERVICE,
    signing_key,
    string_to_sign,
)

__all__ = ["MAX_PRESIGNED_EXPIRES", "presign_url"]


def _enc(value: str) -> str:
    return quote(value, safe="-_.~")


def presign_url(
    *,
    method: str,
    scheme: str,
    host: str,
    bucket: str,
    key: str,
    access_key: str,
    secret_key: str,
    region: str,
    expires_in: int,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    now: datetime | None = None,
) -> tuple[str, datetime]:
    """The URL and the moment it expires. ``headers``: extra headers the URL is bound to
    (the client must send them as given); ``params``: extra signed query parameters
    (``response-content-type`` …)."""
    if not 1 <= expires_in <= MAX_PRESIGNED_EXPIRES:
        raise ValueError(f"expires_in must be 1 to {MAX_PRESIGNED_EXPIRES} seconds")
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    amz_date = moment.strftime(AMZ_DATE_FORMAT)
    scope = f"{amz_date[:8]}/{region}/{SERVICE}/aws4_request"
    signed = {"host": host, **{k.lower(): v.strip() for k, v in (headers or {}).items()}}
    signed_names = ";".join(sorted(signed))
    query = {
        **(params or {}),
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_in),
        "X-Amz-SignedHeaders": signed_names,
    }
    canonical_query = "&".join(f"{k}={v}" for k, v in
                               sorted((_enc(k), _enc(v)) for k, v in query.items()))
    path = f"/{_enc(bucket)}/{quote(key, safe='/~')}"
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in sorted(signed))
    canonical_request = "\n".join((method.upper(), path, canonical_query, canonical_headers,
                                   signed_names, "UNSIGNED-PAYLOAD"))
    sts = string_to_sign(amz_date, scope, canonical_request.encode())
    signature = hmac.new(signing_key(secret_key, amz_date[:8], region), sts.encode(),
                         hashlib.sha256).hexdigest()
    url = f"{scheme}://{host}{path}?{canonical_query}&X-Amz-Signature={signature}"
    return url, moment + timedelta(seconds=expires_in)
