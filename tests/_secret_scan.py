"""Secrets that must never reach a gateway's log: what they look like, and a scanner.

The gateway logs no header and redacts the query parameters that carry credentials, so a
signature, a bearer token or an API token in a log line is a leak, whatever request or
error produced it. :func:`scan` looks for the shapes below (and for given literal values)
in log files, line by line; hits are reported masked, so the report leaks nothing itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests._server import ROOT_SECRET_KEY

#: Secret shapes, by name. Redacted values (``X-Amz-Signature=REDACTED``) do not match.
PATTERNS: dict[str, re.Pattern[str]] = {
    # SigV4 (header and presigned) and SigV2 signatures, as hex.
    "Signature= with hex": re.compile(r"(?i)\bsignature=([0-9a-f]{16,})"),
    "Authorization: AWS4-HMAC-SHA256 with a signature": re.compile(
        r"AWS4-HMAC-SHA256\s+Credential=\S+.*?Signature=(\w{16,})"),
    "Bearer token": re.compile(r"\bBearer\s+([A-Za-z0-9._~+/=-]{16,})"),
    # The gateway's API tokens (gwt_) and login sessions (gws_): 43 URL-safe characters
    # after the prefix (a log that cut one short still leaks most of it); the 8 characters
    # after the prefix shown in token lists do not match.
    "API or session token": re.compile(r"\b(gw[ts]_[A-Za-z0-9_-]{12,})"),
    # The same, Base64-encoded as X-Api-Key carries them ("gwt_" -> "Z3d0X", "gws_" ->
    # "Z3dzX").
    "Base64 API or session token": re.compile(r"\b(Z3d[0z]X[A-Za-z0-9+/]{30,}={0,2})"),
}
#: Literal values that never belong in a log: the test suite's root secret key.
LITERALS: dict[str, str] = {"the root secret key of tests/_server.py": ROOT_SECRET_KEY}


@dataclass(frozen=True)
class Hit:
    path: Path
    line: int
    what: str
    #: The line, with the secret masked.
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}: {self.text}"


@dataclass
class Scan:
    files: int = 0
    lines: int = 0
    hits: list[Hit] = field(default_factory=list)


def mask(secret: str) -> str:
    return f"{secret[:4]}…[{len(secret)} chars]" if len(secret) > 4 else "…"


def scan(paths: Iterable[Path], literals: Mapping[str, str] | None = None,
         patterns: Mapping[str, re.Pattern[str]] | None = None,
         fragment: int | None = None) -> Scan:
    """Every line of ``paths`` against the secret shapes and the literal values (by
    label); hits masked. With ``fragment``, any ``fragment`` consecutive characters of a
    literal longer than that count too (a log line that abbreviates a secret, as
    ``abc...xyz``, still gives most of it away)."""
    values = {**LITERALS, **(literals or {})}
    shapes = PATTERNS if patterns is None else patterns
    pieces: dict[str, str] = {}
    if fragment:
        for label, value in values.items():
            if len(value) > fragment:
                pieces.update({value[i:i + fragment]: label
                               for i in range(len(value) - fragment + 1)})
    result = Scan()
    for path in paths:
        result.files += 1
        with open(path, encoding="utf-8", errors="replace") as log:
            for number, line in enumerate(log, 1):
                result.lines += 1
                line = line.rstrip("\n")
                found: list[tuple[str, str]] = [
                    (label, value) for label, value in values.items() if value and value in line]
                for label, shape in shapes.items():
                    found += [(label, m.group(1)) for m in shape.finditer(line)]
                if fragment and not found:
                    found += [(f"part of {pieces[line[i:i + fragment]]}", line[i:i + fragment])
                              for i in range(len(line) - fragment + 1)
                              if line[i:i + fragment] in pieces][:1]
                if found:
                    shown = line
                    for _, secret in found:
                        shown = shown.replace(secret, mask(secret))
                    result.hits.extend(Hit(path, number, label, shown[:400])
                                       for label, _ in found)
    return result


def gateway_logs(base: Path) -> list[Path]:
    """The logs :class:`tests._server.GatewayProcess` wrote below ``base`` (xdist workers'
    base directories are inside their controller's)."""
    return sorted(p for p in base.rglob("gateway-*.log") if p.is_file())
