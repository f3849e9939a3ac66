"""Where a customer can make the gateway connect: bots' webhook URLs aimed inward.

A gateway with the default policy; a canary HTTP listener on loopback counts every
connection it accepts. Bots are created with webhook URLs naming that listener in every
spelling a resolver accepts (the address, ``localhost``, shorthand, decimal, hex,
IPv4-mapped IPv6, ``0.0.0.0``) and the usual internal targets (cloud metadata, private
ranges); a change in each bot's package makes the gateway try to deliver. Every bot must
record a failed delivery, and the canary must have accepted nothing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import httpx

from campaigns._gateway import running_gateway, s3_client
from campaigns._report import Report
from tests._server import cli_json

#: Spellings of the canary's address (``{port}`` filled in) and internal targets.
INWARD = (
    "http://127.0.0.1:{port}/hook", "http://localhost:{port}/hook",
    "http://127.1:{port}/hook", "http://2130706433:{port}/hook",
    "http://0x7f000001:{port}/hook", "http://0177.0.0.1:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook", "http://[::1]:{port}/hook",
    "http://0.0.0.0:{port}/hook", "http://[::]:{port}/hook",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/",
    "http://10.0.0.1/hook", "http://172.16.0.1/hook", "http://192.168.0.1/hook",
    "http://100.64.0.1/hook", "https://127.0.0.1:{port}/hook",
)


class Canary:
    """A TCP listener on 127.0.0.1 and ::1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self._closed = False
        self._sockets: list[socket.socket] = []
        first = socket.create_server(("127.0.0.1", 0))
        self.port = int(first.getsockname()[1])
        self._sockets.append(first)
        with contextlib.suppress(OSError):  # no IPv6 loopback here
            self._sockets.append(socket.create_server(
                ("::1", self.port), family=socket.AF_INET6))
        for sock in self._sockets:
            sock.settimeout(0.2)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while not self._closed:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._closed = True
        for sock in self._sockets:
            sock.close()


def egress(report: Report, data: Path) -> None:
    canary = Canary()
    try:
        # The positive control: the listener does count a connection to it.
        socket.create_connection(("127.0.0.1", canary.port), timeout=5).close()
        deadline = time.monotonic() + 5
        while canary.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        if not report.check(canary.accepted == 1, "the inward listener counts no connection"):
            return
        canary.accepted = 0
        with running_gateway(data, GATEWAY_WEBHOOK_TIMEOUT="2",
                             GATEWAY_WEBHOOK_MAX_BACKOFF="1") as server:
            token = cli_json(server.data_dir, "token", "create", "--user", "admin", "--name",
                             "egress", "--permission=bots:write", "--permission=bots:read",
                             "--permission=admin")["token"]
            s3 = s3_client(server)
            made: dict[str, str] = {}
            with httpx.Client(base_url=server.url + "/api/v1", timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as api:
                for number, pattern in enumerate(INWARD):
                    url = pattern.format(port=canary.port)
                    answer = api.post("/bots", json={"name": f"egress{number}", "url": url})
                    if not report.check(answer.status_code == 201,
                                        f"bot with {url}: {answer.status_code} {answer.text}"):
                        continue
                    bot = answer.json()["data"]
                    made[bot["id"]] = url
                    s3.put_object(Bucket=bot["bucket"], Key=".gbdrive/attachments/a.bin",
                                  Body=b"change")
                errors = wait_for_errors(api, made)
            refused = sum(1 for message in errors.values()
                          if message.startswith("address not allowed"))
            report.figure("webhook URLs aimed inward", len(made))
            report.figure("deliveries refused as 'address not allowed'", refused)
            report.figure("connections reaching the inward listener", canary.accepted)
            report.check(canary.accepted == 0,
                         f"{canary.accepted} webhook connections reached loopback")
            for bot_id, url in made.items():
                message = errors.get(bot_id)
                report.check(message is not None, f"no delivery error recorded for {url}")
                if message is not None and not message.startswith("address not allowed"):
                    report.figure(f"webhook to {url}: failed with", message[:80])
    finally:
        canary.close()


def wait_for_errors(api: httpx.Client, made: dict[str, str], timeout: float = 30.0
                    ) -> dict[str, str]:
    """Each bot's ``last_error_message`` once every bot has one (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    errors: dict[str, str] = {}
    while time.monotonic() < deadline:
        listed = api.get("/bot/admin", params={"limit": 100})
        listed.raise_for_status()
        errors = {b["id"]: b["last_error_message"] for b in listed.json()["data"]
                  if b["id"] in made and b.get("error_count") and b.get("last_error_message")}
        if len(errors) == len(made):
            break
        time.sleep(0.3)
    return errors
