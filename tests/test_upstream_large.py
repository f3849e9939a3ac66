"""A large object by multipart through a gateway whose bytes live on an upstream S3 server.

Runs the benchmark's transfer (aws-cli with its default settings: 8 MiB parts, 10 at a
time; the upstream a second gateway) and holds the front gateway's peak RSS under 200 MB
while the parts stream through, 300 MB on the way back. The object, 384 MiB (403 MB), is
twice the first bound and well over the second: a gateway that held the object, or any
sizeable share of it, would cross them. (The benchmark itself moves 1 GiB.)
"""

from __future__ import annotations

import pytest

from benchmarks.upstream_multipart import run

SIZE_MIB = 384


@pytest.mark.slow
def test_large_multipart_through_an_upstream_keeps_memory_flat() -> None:
    (result,) = run([SIZE_MIB])
    print(result)
    assert result["identical"] == 1.0
    assert result["up_peak_rss_mb"] < 200, result
    # Ten ranged GETs stream at once on the way back; still far below the object's size.
    assert result["down_peak_rss_mb"] < 300, result
