"""The bot platform end to end, as a bot platform uses it: a customer creates a bot, whose
package bucket appears with its layout; knowledge-base files arrive through S3 (the bot's
scoped key) and the JSON API; a real webhook receiver gets every change, signed and in
order; when it fails, the failures show in the bot administration listing, and when it
recovers nothing is lost; after a crash of the gateway the change feed replays everything."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests._server import GatewayProcess
from tests._server import cli_json as cli
from tests.test_webhooks import Receiver

PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + b" " * 100
LAYOUT = sorted(f"{top}/{sub}" for top, subs in (
    (".gbkb", ("", "docs/", "data/")), (".gbdialog", ("", "scripts/", "tools/")),
    (".gbtheme", ("", "css/", "images/")), (".gbdrive", ("", "attachments/", "temp/")))
    for sub in subs)


def until(check: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_bot_platform_day(tmp_path: Path) -> None:
    receiver = Receiver().start()
    server = GatewayProcess(tmp_path / "data", env_extra={
        "GATEWAY_WEBHOOK_TIMEOUT": "2", "GATEWAY_WEBHOOK_MAX_BACKOFF": "1",
        "GATEWAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}).start()
    data = server.data_dir
    try:
        cli(data, "user", "add", "alice")
        alice = cli(data, "token", "create", "--user", "alice", "--name", "a",
                    "--permission=bots:read", "--permission=bots:write",
                    "--permission=storage:read", "--permission=storage:write")["token"]
        admin = cli(data, "token", "create", "--user", "admin", "--name", "root",
                    "--permission=bots:read", "--permission=admin")["token"]
        api = httpx.Client(base_url=server.url + "/api/v1", timeout=60,
                           headers={"Authorization": f"Bearer {alice}"})
        root = httpx.Client(base_url=server.url + "/api/v1", timeout=60,
                            headers={"Authorization": f"Bearer {admin}"})

        # A customer and its bot: the package bucket exists with the reference layout.
        customer = api.post("/customers", json={"name": "Acme"}).json()["data"]
        name = f"faq-{uuid.uuid4().hex[:8]}"
        made = api.post("/bots", json={"name": name, "description": "Answers FAQs",
                                       "url": receiver.url, "customerId": customer["id"],
                                       "s3Key": True})
        assert made.status_code == 201, made.text
        bot = made.json()["data"]
        bucket, secret = bot["bucket"], bot["secret"]
        assert bucket == f"{name}.gbai" and bot["customerId"] == customer["id"]
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id=bot["s3Key"]["accessKey"],
                          aws_secret_access_key=bot["s3Key"]["secretKey"])
        listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
        assert sorted(o["Key"] for o in listed) == LAYOUT
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [bucket]

        # Knowledge-base files through S3 and through the JSON API.
        s3.put_object(Bucket=bucket, Key=".gbkb/docs/manual.pdf", Body=PDF)
        s3.put_object(Bucket=bucket, Key=".gbkb/data/faq.csv", Body=b"q,a\n")
        stored = api.put(f"/storage/buckets/{bucket}/objects/.gbkb/docs/notes.md",
                         content=b"# Notes\n", headers={"Content-Type": "text/markdown"})
        assert stored.status_code in (200, 201), stored.text
        s3.put_object(Bucket=bucket, Key=".gbkb/data/faq.csv", Body=b"q,a\nhi,hello\n")
        s3.delete_object(Bucket=bucket, Key=".gbkb/docs/notes.md")
        expected = [("s3:ObjectCreated:Put", ".gbkb/docs/manual.pdf"),
                    ("s3:ObjectCreated:Put", ".gbkb/data/faq.csv"),
                    ("s3:ObjectCreated:Put", ".gbkb/docs/notes.md"),
                    ("s3:ObjectCreated:Put", ".gbkb/data/faq.csv"),
                    ("s3:ObjectRemoved:Delete", ".gbkb/docs/notes.md")]

        # The receiver gets them in order, each signed with the bot's secret.
        until(lambda: len(receiver.received) >= len(expected), "the webhook events")
        assert [(e["event"], e["key"]) for e in receiver.events()] == expected
        for got in receiver.received:
            digest = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(got.headers["x-gateway-signature"], f"sha256={digest}")
            assert got.event["bucket"] == bucket and got.event["bot"] == bot["id"]
            assert got.headers["x-gateway-sequence"] == str(got.event["sequence"])
        sequences = [e["sequence"] for e in receiver.events()]
        assert sequences == sorted(sequences)
        assert receiver.events()[0]["size"] == len(PDF)
        assert receiver.events()[0]["etag"] == f'"{hashlib.md5(PDF).hexdigest()}"'

        # A failing receiver: the errors show in the administration listing.
        receiver.mode = "fail"
        s3.put_object(Bucket=bucket, Key=".gbkb/docs/late.txt", Body=b"late")

        def failing() -> dict[str, Any] | None:
            listing = root.get("/bot/admin")
            assert listing.status_code == 200, listing.text
            row = next(b for b in listing.json()["data"] if b["id"] == bot["id"])
            return row if row["error_count"] >= 2 else None

        row = until(failing, "error_count to rise")
        assert row["last_error_message"].startswith("HTTP 500")
        assert isinstance(row["last_error_date"], int) and row["state"] == 1
        assert row["url"] == receiver.url and row["url_hash"].startswith("bot-")
        assert api.get("/bot/admin").status_code == 403  # not an administrator

        # It recovers: the waiting event arrives and the count resets.
        receiver.mode = "ok"

        def recovered() -> bool:
            row = next(b for b in root.get("/bot/admin").json()["data"]
                       if b["id"] == bot["id"])
            return bool(row["error_count"] == 0)

        until(recovered, "error_count to reset")
        delivered = {e["sequence"]: (e["event"], e["key"]) for e in receiver.events()}
        assert [delivered[s] for s in sorted(delivered)] == [
            *expected, ("s3:ObjectCreated:Put", ".gbkb/docs/late.txt")]

        # A crash: the change feed still holds everything, in the same order.
        server.kill()
        server.start()
        feed = api.get("/storage/changes", params={"bucket": bucket, "limit": "1000"})
        assert feed.status_code == 200, feed.text
        replay = [(c["sequence"], c["event"], c["key"]) for c in feed.json()["changes"]]
        layout, rest = replay[:len(LAYOUT)], replay[len(LAYOUT):]
        assert sorted(k for _s, _e, k in layout) == LAYOUT  # made when the bot was
        assert [(e, k) for _s, e, k in rest] == [
            *expected, ("s3:ObjectCreated:Put", ".gbkb/docs/late.txt")]
        assert {s for s, _e, _k in replay} >= set(delivered)
        # And a bot that kept its cursor catches up from there, not from the start.
        cursor = feed.json()["cursor"]
        s3.put_object(Bucket=bucket, Key=".gbkb/docs/after.txt", Body=b"after")
        caught_up = api.get("/storage/changes", params={"bucket": bucket, "since": cursor})
        assert [c["key"] for c in caught_up.json()["changes"]] == [".gbkb/docs/after.txt"]
        until(lambda: any(e["key"] == ".gbkb/docs/after.txt" for e in receiver.events()),
              "delivery after the restart")
    finally:
        server.stop()
        receiver.stop()
