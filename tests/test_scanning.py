"""The malware scanner against a real clamd (tests/_clamav.py: Debian's clamd with a local
EICAR database, no network).

What the upload path relies on: a body streamed chunk by chunk gets clamd's verdict, EICAR
is found however the body is cut, a large body passes through without being held in
memory, a body longer than clamd's ``StreamMaxLength`` gets a verdict that is not clean,
and a clamd that is gone, dies or hangs raises ``ScannerUnavailable`` (fail closed).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from gateway.service.scanning import (
    CLAMD_DEFAULT_PORT,
    CLEAN,
    MAX_FRAME,
    ClamAVScanner,
    ClamdAddress,
    Scanner,
    ScannerUnavailable,
    Verdict,
    parse_address,
    scanner_from_settings,
)
from gateway.settings import Settings
from tests._clamav import (  # noqa: F401  (clamd_fixture registers the ``clamd`` fixture)
    EICAR,
    EICAR_REPORTED,
    ClamdProcess,
    clamd_fixture,
    start_or_skip,
)
from tests._server import GatewayProcess, free_port

MiB = 1024 * 1024


async def scan(scanner: Scanner, chunks: Iterable[bytes]) -> Verdict:
    async with await scanner.session() as session:
        for chunk in chunks:
            await session.feed(chunk)
        return await session.finish()


@pytest.fixture(params=["unix", "tcp"])
def scanner(request: pytest.FixtureRequest, clamd: ClamdProcess) -> ClamAVScanner:
    return ClamAVScanner(clamd.address if request.param == "unix" else clamd.tcp_address)


# --- verdicts ---------------------------------------------------------------------------------

async def test_ping_and_version(scanner: ClamAVScanner) -> None:
    await scanner.ping()
    assert (await scanner.version()).startswith("ClamAV ")


async def test_clean_bytes_are_clean(scanner: ClamAVScanner) -> None:
    verdict = await scan(scanner, [b"hello, bot platform\n", os.urandom(10_000)])
    assert verdict == CLEAN
    assert verdict.clean and not verdict.infected and verdict.error is None


async def test_empty_body_is_clean(scanner: ClamAVScanner) -> None:
    assert await scan(scanner, []) == CLEAN


async def test_eicar_is_found_with_its_signature(scanner: ClamAVScanner) -> None:
    verdict = await scan(scanner, [EICAR])
    # clamd reports "Eicar-Test-Signature.UNOFFICIAL(44d8…:68)" with ExtendedDetectionInfo
    # on (as in Debian's clamd.conf); the verdict carries the name alone.
    assert verdict == Verdict(clean=False, signature=EICAR_REPORTED)
    assert verdict.infected


async def test_eicar_inside_a_larger_body_is_found(scanner: ClamAVScanner) -> None:
    verdict = await scan(scanner, [os.urandom(5000) + EICAR + b"\n" + os.urandom(5000)])
    assert not verdict.clean and verdict.signature == EICAR_REPORTED


async def test_eicar_split_across_many_small_chunks(clamd: ClamdProcess) -> None:
    """Cut into pieces of 1 to 5 bytes, with empty chunks between them (an empty chunk
    must not end clamd's stream early)."""
    rng = random.Random(7)
    pieces: list[bytes] = []
    rest = EICAR
    while rest:
        size = rng.randint(1, 5)
        pieces += [rest[:size], b""]
        rest = rest[size:]
    assert len(pieces) > 30
    verdict = await scan(ClamAVScanner(clamd.address), pieces)
    assert verdict.signature == EICAR_REPORTED


async def test_eicar_across_frame_boundaries_of_a_large_chunk(clamd: ClamdProcess) -> None:
    """A chunk larger than one INSTREAM frame is split in order: EICAR straddling a
    frame boundary is still found, and the same bytes without it are clean."""
    chunk = bytearray(os.urandom(4 * MAX_FRAME + 123))
    at = 2 * MAX_FRAME - 30
    clean_chunk = bytes(chunk)
    chunk[at:at + len(EICAR)] = EICAR
    scanner = ClamAVScanner(clamd.address)
    assert (await scan(scanner, [bytes(chunk)])).signature == EICAR_REPORTED
    assert await scan(scanner, [clean_chunk]) == CLEAN


async def test_concurrent_sessions_keep_their_own_verdicts(clamd: ClamdProcess) -> None:
    scanner = ClamAVScanner(clamd.tcp_address)
    # a session left unfinished does not disturb the others
    abandoned = await scanner.session()
    await abandoned.feed(EICAR[:40])
    await abandoned.aclose()

    async def one(i: int) -> Verdict:
        body = [os.urandom(3000), EICAR, os.urandom(100)] if i % 2 else [os.urandom(3100)]
        async with await scanner.session() as session:
            for part in body:
                await session.feed(part)
                await asyncio.sleep(0)
            return await session.finish()

    verdicts = await asyncio.gather(*(one(i) for i in range(12)))
    for i, verdict in enumerate(verdicts):
        assert verdict.clean is (i % 2 == 0), (i, verdict)


# --- large bodies -----------------------------------------------------------------------------

async def test_50_mib_stream_is_scanned_without_being_held(clamd: ClamdProcess) -> None:
    """50 MiB in 1 MiB chunks: clean, and the Python heap never grows by more than a few
    chunks (the session forwards each frame and keeps nothing). The same stream with EICAR
    at its very end is found: clamd received and scanned all of it."""
    scanner = ClamAVScanner(clamd.address)
    for tail, expected in ((b"", CLEAN), (EICAR, Verdict(False, EICAR_REPORTED))):
        tracemalloc.start()
        try:
            async with await scanner.session() as session:
                for _ in range(50):
                    await session.feed(os.urandom(MiB))
                await session.feed(tail)
                held, _ = tracemalloc.get_traced_memory()
                verdict = await session.finish()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert verdict == expected
        assert held < MiB, f"the session holds {held} bytes after 50 MiB"
        assert peak < 4 * MiB, f"peak {peak} bytes while streaming 50 MiB"


async def test_stream_over_stream_max_length_is_an_error_verdict(tmp_path: Path) -> None:
    """clamd answers "INSTREAM size limit exceeded" and hangs up mid-body; the answer is
    read all the same and becomes a verdict that is not clean (not ScannerUnavailable:
    retrying would not help). A body under the limit on the same clamd is clean."""
    small = start_or_skip(tmp_path / "clamd", stream_max_length="1M")
    try:
        for address in (small.address, small.tcp_address):
            scanner = ClamAVScanner(address)
            assert await scan(scanner, [os.urandom(512 * 1024)]) == CLEAN
            async with await scanner.session() as session:
                for _ in range(64):  # 16 MiB, far past the limit and the socket buffers
                    await session.feed(os.urandom(256 * 1024))
                    if session.verdict is not None:
                        break
                assert session.verdict is not None, "clamd's refusal not seen while feeding"
                verdict = await session.finish()
            assert verdict == Verdict(clean=False, error="INSTREAM size limit exceeded")
            assert not verdict.infected
            # a body just over the limit, refused only once the stream is ended
            verdict = await scan(scanner, [os.urandom(MiB + 10)])
            assert not verdict.clean and verdict.error == "INSTREAM size limit exceeded"
    finally:
        small.stop()


# --- clamd unavailable ------------------------------------------------------------------------

async def test_stopped_clamd_is_unavailable(tmp_path: Path) -> None:
    own = start_or_skip(tmp_path / "clamd")
    scanners = [ClamAVScanner(own.address), ClamAVScanner(own.tcp_address)]
    for scanner in scanners:
        await scanner.ping()
    own.stop()
    for scanner in scanners:
        with pytest.raises(ScannerUnavailable):
            await scanner.session()
        with pytest.raises(ScannerUnavailable):
            await scanner.ping()


async def test_nothing_listening_is_unavailable(tmp_path: Path) -> None:
    for address in (f"unix://{tmp_path}/none.sock", f"tcp://127.0.0.1:{free_port()}"):
        with pytest.raises(ScannerUnavailable):
            await scan(ClamAVScanner(address), [b"x"])


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_clamd_dying_mid_stream_is_unavailable(tmp_path: Path, transport: str) -> None:
    own = start_or_skip(tmp_path / "clamd")
    try:
        scanner = ClamAVScanner(own.address if transport == "unix" else own.tcp_address)
        session = await scanner.session()
        await session.feed(os.urandom(MiB))
        own.kill()
        with pytest.raises(ScannerUnavailable):
            for _ in range(32):
                await session.feed(os.urandom(MiB))
            await session.finish()
        await session.aclose()
    finally:
        own.stop()


async def test_clamd_dying_before_the_verdict_is_unavailable(tmp_path: Path) -> None:
    own = start_or_skip(tmp_path / "clamd")
    try:
        session = await ClamAVScanner(own.tcp_address).session()
        await session.feed(os.urandom(1000))
        own.kill()
        with pytest.raises(ScannerUnavailable):
            await session.finish()
    finally:
        own.stop()


async def test_hung_clamd_applies_back_pressure_then_times_out(tmp_path: Path) -> None:
    """A clamd that stops reading (SIGSTOP) blocks feed() once the socket buffers are full
    — the body is not queued in the gateway — and the session gives up after io_timeout."""
    own = start_or_skip(tmp_path / "clamd")
    assert own.proc is not None
    try:
        scanner = ClamAVScanner(own.address, io_timeout=1.0)
        session = await scanner.session()
        own.proc.send_signal(signal.SIGSTOP)
        fed = 0
        tracemalloc.start()
        try:
            with pytest.raises(ScannerUnavailable, match="took no data"):
                for _ in range(200):
                    await session.feed(os.urandom(256 * 1024))
                    fed += 256 * 1024
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert fed < 16 * MiB, f"{fed} bytes accepted by a clamd that reads nothing"
        assert peak < 2 * MiB
        await session.aclose()
    finally:
        if own.proc is not None:
            own.proc.send_signal(signal.SIGCONT)
        own.stop()


# --- configuration ----------------------------------------------------------------------------

def test_scanner_from_settings() -> None:
    assert scanner_from_settings(Settings(clamav="")) is None
    assert scanner_from_settings(Settings(clamav="  ")) is None
    cases = {
        "unix:///run/clamav/clamd.ctl": ClamdAddress("unix", path="/run/clamav/clamd.ctl"),
        "/var/run/clamav/clamd.ctl": ClamdAddress("unix", path="/var/run/clamav/clamd.ctl"),
        "tcp://127.0.0.1:3310": ClamdAddress("tcp", host="127.0.0.1", port=3310),
        "tcp://clamav.internal": ClamdAddress("tcp", host="clamav.internal",
                                              port=CLAMD_DEFAULT_PORT),
        "tcp://[::1]:3311": ClamdAddress("tcp", host="::1", port=3311),
        "tcp://scanner:9999/": ClamdAddress("tcp", host="scanner", port=9999),
    }
    for text, address in cases.items():
        scanner = scanner_from_settings(Settings(clamav=text))
        assert isinstance(scanner, ClamAVScanner)
        assert scanner.address == address
        assert parse_address(str(address)) == address
    for bad in ("clamd.ctl", "unix://relative/clamd.ctl", "tcp://", "tcp://:3310",
                "tcp://host:0", "tcp://host:99999", "tcp://host:x", "tcp://[::1", "http://h:1"):
        with pytest.raises(ValueError):
            scanner_from_settings(Settings(clamav=bad))


def test_gateway_starts_with_clamav_configured(tmp_path: Path, clamd: ClamdProcess) -> None:
    for address in (clamd.address, clamd.tcp_address):
        gateway = GatewayProcess(tmp_path / address.partition(":")[0] / "data",
                                 env_extra={"GATEWAY_CLAMAV": address}).start()
        try:
            assert httpx.get(gateway.url + "/readyz", timeout=10).status_code == 200
        finally:
            gateway.stop()
