"""A real clamd (Debian's ``clamav-daemon``) for tests, offline.

Its database directory holds one local database made here: the EICAR test file as a hash
signature (``eicar.hdb``: the 68 bytes exactly) and as a body signature (``eicar.ndb``:
EICAR anywhere in a stream). No freshclam, no downloaded database: clamd loads in well
under a second.

Use from a test module::

    from tests._clamav import EICAR, clamd_fixture  # noqa: F401  (registers ``clamd``)

    async def test_x(clamd: ClamdProcess) -> None:
        scanner = ClamAVScanner(clamd.address)        # "unix:///.../clamd.sock"
        ...                                           # clamd.tcp_address: "tcp://127.0.0.1:N"

The ``clamd`` fixture is session-scoped (one clamd per pytest worker) and skips when clamd
is not installed (``make test`` installs it). A test that stops clamd or needs other limits
starts its own ``ClamdProcess(tmp_path, ...).start()``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests._server import free_port

#: The EICAR anti-virus test file (68 bytes), kept encoded so this source file is not itself
#: taken for it.
EICAR: bytes = base64.b64decode(
    "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUh"
    "JEgrSCo=")
assert len(EICAR) == 68 and hashlib.md5(EICAR).hexdigest() == "44d88612fea8a8f36de82e1278abb02f"

#: The name the local database gives EICAR; clamd reports signatures from databases that
#: are not signed by ClamAV with ``.UNOFFICIAL`` appended.
EICAR_NAME = "Eicar-Test-Signature"
EICAR_REPORTED = f"{EICAR_NAME}.UNOFFICIAL"


def clamd_binary() -> str | None:
    """Debian installs clamd in /usr/sbin, which a user's PATH may not include."""
    found = shutil.which("clamd")
    if found:
        return found
    return "/usr/sbin/clamd" if os.access("/usr/sbin/clamd", os.X_OK) else None


def write_database(directory: Path) -> None:
    """The only signatures this clamd knows: EICAR, whole and embedded."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "eicar.hdb").write_text(
        f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:{EICAR_NAME}\n")
    (directory / "eicar.ndb").write_text(f"{EICAR_NAME}:0:*:{EICAR.hex()}\n")


@dataclass
class ClamdProcess:
    """clamd in ``directory`` (config, database, log, temp files), listening on a unix
    socket and, with ``tcp=True``, on a loopback port."""

    directory: Path
    stream_max_length: str = "200M"
    tcp: bool = True
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    startup_seconds: float = 0.0
    _socket_dir: Path | None = None

    @property
    def socket_path(self) -> Path:
        assert self._socket_dir is not None, "not started"
        return self._socket_dir / "clamd.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def tcp_address(self) -> str:
        assert self.tcp, "started without tcp"
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.directory / "clamd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def config(self) -> str:
        # MaxFileSize/MaxScanSize follow StreamMaxLength so that a stream clamd accepts is
        # also scanned to its end, not passed unscanned past the default limits.
        lines = [
            "Foreground yes",
            f"LocalSocket {self.socket_path}",
            "LocalSocketMode 600",
            "FixStaleSocket yes",
            f"DatabaseDirectory {self.directory / 'db'}",
            f"TemporaryDirectory {self.directory / 'tmp'}",
            f"LogFile {self.directory / 'clamd.log'}",
            "LogTime yes",
            f"PidFile {self.directory / 'clamd.pid'}",
            f"StreamMaxLength {self.stream_max_length}",
            f"MaxFileSize {self.stream_max_length}",
            f"MaxScanSize {self.stream_max_length}",
            # as in Debian's clamd.conf: "(md5:size)" after the name, which the client strips
            "ExtendedDetectionInfo yes",
            "SelfCheck 0",
            "MaxThreads 8",
            "ReadTimeout 30",
        ]
        if self.tcp:
            lines += [f"TCPSocket {self.port}", "TCPAddr 127.0.0.1"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 60) -> ClamdProcess:
        binary = clamd_binary()
        if binary is None:
            raise RuntimeError("clamd not installed: apt-get install clamav-daemon")
        self.directory.mkdir(parents=True, exist_ok=True)
        # A unix socket path is limited to 107 bytes; pytest's tmp dirs can be longer.
        self._socket_dir = (self.directory if len(str(self.directory)) < 80
                            else Path(tempfile.mkdtemp(prefix="clamd-")))
        write_database(self.directory / "db")
        (self.directory / "tmp").mkdir(exist_ok=True)
        conf = self.directory / "clamd.conf"
        conf.write_text(self.config())
        began = time.monotonic()
        self.proc = subprocess.Popen([binary, f"--config-file={conf}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited early ({self.proc.returncode}):\n{self.log}")
            if self._pong():
                self.startup_seconds = time.monotonic() - began
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"clamd did not answer PING in {timeout}s:\n{self.log}")

    def _pong(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.socket_path))
                s.sendall(b"zPING\0")
                return s.recv(16) == b"PONG\0"
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, as an operator stops it; SIGKILL if it does not go."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._socket_dir is not None and self._socket_dir != self.directory:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL: clamd dies as in a crash, connections and all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.stop()


def start_or_skip(directory: Path, *, stream_max_length: str = "200M",
                  tcp: bool = True) -> ClamdProcess:
    """A started clamd, or the test skipped with the reason when clamd is not installed."""
    if clamd_binary() is None:
        pytest.skip("clamd not installed: apt-get install clamav-daemon "
                    "(make test installs it when run as root)")
    return ClamdProcess(directory, stream_max_length=stream_max_length, tcp=tcp).start()


@pytest.fixture(scope="session", name="clamd")
def clamd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdProcess]:
    """One clamd for the session (per pytest worker), on a unix socket and a TCP port."""
    process = start_or_skip(tmp_path_factory.mktemp("clamd"))
    try:
        yield process
    finally:
        process.stop()
