"""1 GiB by multipart through a gateway whose bytes live on an upstream S3 server.

Runs the benchmark's transfer (aws-cli with its default settings, the upstream a second
gateway) and holds the front gateway's peak RSS under 200 MB while the parts stream through.
"""

from __future__ import annotations

import pytest

from benchmarks.upstream_multipart import run


@pytest.mark.slow
def test_one_gib_multipart_through_an_upstream_keeps_memory_flat() -> None:
    (result,) = run([1024])
    print(result)
    assert result["identical"] == 1.0
    assert result["up_peak_rss_mb"] < 200, result
    # Ten ranged GETs stream at once on the way back; still far from the object's size.
    assert result["down_peak_rss_mb"] < 300, result
