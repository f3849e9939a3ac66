"""The fuzz campaign's short version: every parser the outside world reaches, fed hostile
input over real HTTP (and in process): no 5xx, no crash, no traceback, nothing written by a
refused request, no external entity fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns import fuzz

HTTP_TARGETS = ("malformed HTTP", "SigV4 Authorization header", "presigned query (SigV4, SigV2)",
                "aws-chunked bodies", "Range and conditional headers", "copy source headers",
                "XML bodies (attack corpus)", "XML bodies", "POST policy forms",
                "where/order_by/cursor queries", "Schemathesis (JSON API)")
PARSER_TARGETS = ("SigV4/SigV2 authentication", "aws-chunked decoder", "request headers",
                  "XML documents", "POST policy and form", "multipart form reader",
                  "where/order_by/cursor")


@pytest.mark.slow
def test_fuzz_campaign(tmp_path: Path) -> None:
    report = fuzz.run(tmp_path, long=False)
    message = report.render()
    assert report.ok, message
    figures = report.figures
    for zero in ("responses 5xx", "server crashes", "parser defects",
                 "tracebacks in the server log", "external entity fetches"):
        assert figures[zero] == 0, message
    # Every target really ran, and its inputs reached the gateway's parsers: refused
    # mostly, accepted sometimes (the valid inputs among them).
    for target in HTTP_TARGETS:
        assert figures[f"inputs: {target}"] >= 50, (target, message)
    for target in PARSER_TARGETS:
        assert figures[f"inputs: parser: {target}"] >= 100, (target, message)
    assert figures["Schemathesis operations"] >= 50, message
    assert figures["inputs tried"] >= 2000, message
    assert figures["responses 4xx"] >= 500, message
    assert figures["responses 2xx"] >= 50, message
    assert figures["parser refusals"] >= 500, message
    for target in ("aws-chunked bodies", "Range and conditional headers", "POST policy forms"):
        statuses = figures[f"statuses: {target}"]
        assert "2xx" in statuses and "4xx" in statuses, (target, message)
