"""The web console (``/console``) in a real browser: headless Chromium (Debian's ``chromium``
driven by Playwright) against a real gateway process.

A member logs in with a password, creates a bot-package bucket, makes folders, uploads
three files through the file picker (one of 50 MiB: a multipart upload with parallel parts,
whose progress bar is watched moving, each part sent straight to the S3 endpoint by a
presigned UploadPart URL), opens folders from the listing, and shares a file:
the link works in a fresh browser context with none of the console's state. An admin then
logs in with an S3 key pair, lowers the bucket's byte quota inline and sees its usage bar
move. The browser may reach 127.0.0.1 only: every other request is blocked and recorded,
and none may have been attempted (the console is served whole from the package). A user
without an S3 key still uploads by multipart: through the JSON API's part endpoint. Files
dropped on a folder are uploaded there, and downloads save the exact bytes (a presigned GET,
or the session's read for a user without an S3 key).

Screenshots go to ``test-artifacts/console/`` (and the test's ``tmp_path``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from tests._server import ROOT_ACCESS_KEY, ROOT_SECRET_KEY, GatewayProcess, free_port, run_cli

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("chromium not installed (make .venv/.installed-browser, or apt-get install "
                "chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed: pip install -e '.[test]'")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "console"

MiB = 1024 * 1024
BIG_SIZE = 50 * MiB
ALICE_PASSWORD = "alice's console password"
DAVE_PASSWORD = "dave has no S3 key"
BUCKET = "helpdesk.gbai"
FOLDER = ".gbdrive/attachments/"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("console") / "data"
    data.mkdir(parents=True)
    assert run_cli(data, "user", "add", "alice", "--password-stdin",
                   stdin=ALICE_PASSWORD + "\n").returncode == 0
    # Share links are presigned S3 URLs: signed with one of the user's S3 keys.
    assert run_cli(data, "key", "create", "--user", "alice").returncode == 0
    assert run_cli(data, "user", "add", "dave", "--password-stdin",
                   stdin=DAVE_PASSWORD + "\n").returncode == 0
    # A byte quota from the start, so the usage bar is there before the admin moves it.
    gw = GatewayProcess(data, env_extra={"GATEWAY_QUOTA_BUCKET_BYTES": "1GiB"}).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Offline:
    """Blocks every request a context makes that is not to the gateway on 127.0.0.1."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.blocked: list[str] = []

    def install(self, context: Any) -> Any:
        context.route(lambda url: not url.startswith(self.origin + "/"), self._block)
        return context

    def _block(self, route: Any) -> None:
        self.blocked.append(route.request.url)
        route.abort("blockedbyclient")


@pytest.fixture
def artifacts(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "console"
    out.mkdir()
    yield out
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for shot in out.iterdir():
        shutil.copy(shot, ARTIFACTS / shot.name)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def part_puts(requests: list[tuple[str, str]], origin: str, bucket: str,
              key: str) -> tuple[list[dict[str, list[str]]], list[str]]:
    """The PUTs the page sent for ``key``'s parts: (the queries of those that went to the
    S3 endpoint's object URL, the URLs of those that went through the JSON API)."""
    s3_object = f"{origin}/{quote(bucket)}/{quote(key)}"
    api_parts = f"{origin}/api/v1/storage/buckets/{quote(bucket)}/objects/{quote(key)}" \
        "/multipart/"
    direct = [parse_qs(urlsplit(url).query) for method, url in requests
              if method == "PUT" and url.split("?")[0] == s3_object]
    through_api = [url for method, url in requests
                   if method == "PUT" and url.startswith(api_parts)]
    return direct, through_api


def session(server: GatewayProcess, **login: str) -> httpx.Client:
    token = httpx.post(server.url + "/api/v1/auth/login", json=login).json()["data"]["token"]
    return httpx.Client(base_url=server.url + "/api/v1", timeout=60,
                        headers={"Authorization": f"Bearer {token}"})


def api_get(server: GatewayProcess, path: str, **login: str) -> httpx.Response:
    with session(server, **login) as client:
        return client.get(path)


def failing_bot(server: GatewayProcess) -> str:
    """A bot whose webhook nobody answers, with a change to deliver: its error count rises."""
    with session(server, access_key=ROOT_ACCESS_KEY, secret_key=ROOT_SECRET_KEY) as client:
        url = f"http://127.0.0.1:{free_port()}/hook"
        assert client.post("/bots", json={"name": "faq", "url": url}).status_code == 201
        assert client.put("/storage/buckets/faq.gbai/objects/.gbkb/docs/q.txt",
                          content=b"Q&A").status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            bots = client.get("/bot/admin").json()["data"]
            if bots[0]["error_count"]:
                return str(bots[0]["last_error_message"])
            time.sleep(0.2)
    raise AssertionError("the webhook's failure was not recorded")


# The values the big file's progress bar takes, as the page sets them.
WATCH_PROGRESS = """name => {
  window.__progress = [];
  new MutationObserver(() => {
    const bar = document.querySelector(`progress[data-upload$="${name}"]`);
    if (bar && window.__progress.at(-1) !== bar.value) window.__progress.push(bar.value);
  }).observe(document.body, {subtree: true, childList: true, attributes: true,
                             attributeFilter: ["value"]});
}"""



def sign_in(context: Any, url: str, user: str, password: str
            ) -> tuple[Any, list[str], list[tuple[str, str]]]:
    """A new page of ``context`` signed in to the console by password, with the page's
    uncaught errors and every request it makes (method, URL) recorded."""
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    requests: list[tuple[str, str]] = []
    page.on("request", lambda request: requests.append((request.method, request.url)))
    page.goto(url + "/console")
    page.get_by_label("User name", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    return page, page_errors, requests


def test_console_flow(server: GatewayProcess, browser: Any, tmp_path: Path,
                      artifacts: Path) -> None:
    offline = Offline(server.url)
    files = {"readme.txt": b"Shared through the console.\n" * 40,
             "notes.md": b"# Notes\n\n- one\n- two\n",
             "big.bin": os.urandom(BIG_SIZE)}
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)

    context = offline.install(browser.new_context(viewport={"width": 1280, "height": 900}))
    context.set_default_timeout(TIMEOUT_MS)

    # -- log in with a password -------------------------------------------------------
    page, page_errors, requests = sign_in(context, server.url, "alice", ALICE_PASSWORD)
    page.get_by_role("heading", name="Buckets").wait_for()
    assert page.evaluate("() => sessionStorage.length") == 1
    assert "token" not in page.url and ALICE_PASSWORD not in page.url

    # -- create a bucket: a bot package, marked as such ---------------------------------
    page.get_by_label("New bucket name").fill(BUCKET)
    page.get_by_role("button", name="Create bucket").click()
    row = page.locator(f'tr[data-bucket="{BUCKET}"]')
    row.wait_for()
    assert row.locator('[data-icon="bot"]').count() == 1
    assert row.get_by_text("bot package").is_visible()
    row.locator('[data-usage="bytes"] meter').wait_for()
    page.screenshot(path=str(artifacts / "01-buckets.png"), full_page=True)

    # -- folders, then three uploads with the file picker -------------------------------
    row.get_by_role("link", name=BUCKET).click()
    page.get_by_role("heading", name=BUCKET).wait_for()
    for folder in FOLDER.strip("/").split("/"):
        page.get_by_label("New folder name").fill(folder)
        page.get_by_role("button", name="Create folder").click()
        page.get_by_role("heading", name=folder).wait_for()
    assert page.locator("h1 [data-icon='folder']").count() == 1
    page.evaluate(WATCH_PROGRESS, "big.bin")
    page.get_by_label("Upload files").set_input_files(
        [str(tmp_path / name) for name in files])
    for name in files:
        page.locator(f'li.upload.done[data-key="{FOLDER}{name}"]').wait_for(timeout=60_000)
    seen = page.evaluate("() => window.__progress")
    intermediate = sorted({v for v in seen if 0 < v < 100})
    assert len(intermediate) >= 2, seen
    assert page.locator(f'li.upload[data-key="{FOLDER}big.bin"] .badge').inner_text() \
        == "multipart"
    for name in files:
        page.locator(f'tr[data-key="{FOLDER}{name}"]').wait_for()
    page.screenshot(path=str(artifacts / "02-uploaded.png"), full_page=True)
    listed = api_get(server, f"/storage/buckets/{BUCKET}/objects?prefix={FOLDER}",
                     username="alice", password=ALICE_PASSWORD).json()
    assert {o["key"]: o["size"] for o in listed["objects"]} == {
        FOLDER + name: len(body) for name, body in files.items()}
    big = api_get(server, f"/storage/buckets/{BUCKET}/objects/{FOLDER}big.bin",
                  username="alice", password=ALICE_PASSWORD)
    assert sha256(big.content) == sha256(files["big.bin"])
    # Every part went straight to the S3 endpoint by a presigned UploadPart URL.
    direct, through_api = part_puts(requests, server.url, BUCKET, FOLDER + "big.bin")
    assert through_api == []
    assert sorted(int(q["partNumber"][0]) for q in direct) == list(range(1, 8))  # 8 MiB parts
    assert all(q["uploadId"] and q["X-Amz-Signature"] and q["X-Amz-Credential"]
               for q in direct), direct
    assert len({q["uploadId"][0] for q in direct}) == 1
    presigns = [url for method, url in requests if method == "POST"
                and url.endswith(f"/objects/{quote(FOLDER)}big.bin/presign")]
    assert len(presigns) == 7

    # -- cancel: a slowed-down multipart upload stops, and its stored parts are freed ----
    used = api_get(server, f"/admin/buckets/{BUCKET}/quota", username="alice",
                   password=ALICE_PASSWORD).json()["data"]["used_bytes"]
    (tmp_path / "cancelled.bin").write_bytes(files["big.bin"])
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": 8 * MiB})
    page.get_by_label("Upload files").set_input_files(str(tmp_path / "cancelled.bin"))
    page.wait_for_function("""() => Number(document.querySelector(
        'progress[data-upload$="cancelled.bin"]')?.value) > 10""")
    page.get_by_role("button", name=f"Cancel upload of {FOLDER}cancelled.bin").click()
    page.locator(f'li.upload.cancelled[data-key="{FOLDER}cancelled.bin"]').wait_for()
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    deadline = time.monotonic() + 10
    while api_get(server, f"/admin/buckets/{BUCKET}/quota", username="alice",
                  password=ALICE_PASSWORD).json()["data"]["used_bytes"] != used:
        assert time.monotonic() < deadline, "the cancelled upload's parts were not freed"
        time.sleep(0.2)
    assert api_get(server, f"/storage/buckets/{BUCKET}/objects/{FOLDER}cancelled.bin",
                   username="alice", password=ALICE_PASSWORD).status_code == 404

    # -- search through the query API ---------------------------------------------------
    page.get_by_label("Search keys in this folder").fill("big")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text("1 result(s)").wait_for()
    assert page.locator("tr[data-key]").count() == 1
    page.get_by_role("button", name="Clear search").click()
    page.locator(f'tr[data-key="{FOLDER}notes.md"]').wait_for()

    # -- breadcrumbs back to the bucket, then open the folders from the listing ---------
    page.get_by_role("navigation", name="Breadcrumbs").get_by_role("link", name=BUCKET).click()
    drive = page.locator('tr[data-folder=".gbdrive/"]')
    drive.wait_for()
    assert drive.locator('[data-icon="gbdrive"]').count() == 1
    drive.get_by_role("link").click()
    page.locator(f'tr[data-folder="{FOLDER}"]').get_by_role("link").click()
    page.locator(f'tr[data-key="{FOLDER}notes.md"]').wait_for()

    # -- share: a presigned link with a chosen expiry, opened in a fresh context --------
    page.get_by_role("button", name="Share readme.txt").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Link expires after").select_option(label="1 day")
    dialog.get_by_role("button", name="Create link").click()
    link_field = dialog.locator("#share-url")
    link_field.wait_for()
    link = link_field.input_value()
    assert link.startswith(server.url + f"/{BUCKET}/") and "X-Amz-Expires=86400" in link
    page.screenshot(path=str(artifacts / "03-share.png"), full_page=True)
    dialog.get_by_role("button", name="Close").click()

    fresh = offline.install(browser.new_context())
    try:
        answer = fresh.new_page().goto(link)
        assert answer is not None and answer.status == 200
        assert answer.body() == files["readme.txt"]
    finally:
        fresh.close()

    # -- phone-sized: still one column, nothing wider than the screen --------------------
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("button", name="Delete notes.md").wait_for()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(artifacts / "04-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    # -- delete asks first --------------------------------------------------------------
    page.get_by_role("button", name="Delete notes.md").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.locator(f'tr[data-key="{FOLDER}notes.md"]').wait_for(state="detached")

    # -- an admin, logged in with an S3 key pair, lowers the quota ----------------------
    last_error = failing_bot(server)
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("S3 key pair").check()
    page.get_by_label("Access key", exact=True).fill(ROOT_ACCESS_KEY)
    page.get_by_label("Secret key").fill(ROOT_SECRET_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Buckets").click()
    bar = page.locator(f'tr[data-bucket="{BUCKET}"] [data-usage="bytes"]')
    bar.locator("meter").wait_for()
    before = float(bar.get_attribute("data-percent") or "nan")
    assert 4 < before < 6  # ~51 MiB of 1 GiB

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Quotas").click()
    quota_row = page.locator(f'table.quotas tr[data-bucket="{BUCKET}"]')
    quota_row.get_by_role("button", name=f"Edit quota of {BUCKET}").click()
    form = quota_row.get_by_role("form", name=f"Quota of {BUCKET}")
    form.get_by_label("Bytes").fill("100 MiB")
    form.get_by_role("button", name="Save").click()
    quota_row.get_by_role("button", name=f"Edit quota of {BUCKET}").wait_for()
    page.screenshot(path=str(artifacts / "05-quotas.png"), full_page=True)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Buckets").click()
    bar = page.locator(f'tr[data-bucket="{BUCKET}"] [data-usage="bytes"]')
    bar.locator("meter").wait_for()
    page.wait_for_function(
        "sel => Number(document.querySelector(sel)?.dataset.percent) > 40",
        arg=f'tr[data-bucket="{BUCKET}"] [data-usage="bytes"]')
    after = float(bar.get_attribute("data-percent") or "nan")
    assert 49 < after < 52, after  # the same ~51 MiB of 100 MiB
    assert bar.locator("meter").get_attribute("max") == str(100 * MiB)
    page.screenshot(path=str(artifacts / "06-buckets-admin.png"), full_page=True)

    # -- the other admin pages answer ----------------------------------------------------
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    page.locator('tr[data-user="alice"]').wait_for()
    page.locator('tr[data-user="alice"]').get_by_role("button", name="S3 keys").click()
    page.locator('tr[data-user="alice"] .keys code').first.wait_for()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Bots").click()
    bot = page.locator('tr[data-bot="faq"]')
    bot.wait_for()
    assert "failing" in bot.locator(".badge").inner_text()
    assert last_error in bot.inner_text()
    page.screenshot(path=str(artifacts / "07-bots.png"), full_page=True)

    context.close()
    assert page_errors == []
    assert offline.blocked == []


def test_console_multipart_without_s3_key(server: GatewayProcess, browser: Any,
                                         tmp_path: Path) -> None:
    """Presigning answers 409 for a user with no S3 key: the parts go through the JSON
    API's part endpoint instead, and the upload still completes."""
    bucket, key = "dave-files", "video.bin"
    body = os.urandom(17 * MiB)  # just over the multipart threshold: three parts
    (tmp_path / key).write_bytes(body)
    with session(server, username="dave", password=DAVE_PASSWORD) as client:
        assert client.post("/storage/buckets", json={"name": bucket}).status_code == 201
    offline = Offline(server.url)
    context = offline.install(browser.new_context(viewport={"width": 1280, "height": 900}))
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page, page_errors, requests = sign_in(context, server.url, "dave", DAVE_PASSWORD)
        page.locator(f'tr[data-bucket="{bucket}"]').get_by_role("link", name=bucket).click()
        page.get_by_role("heading", name=bucket).wait_for()
        page.get_by_label("Upload files").set_input_files(str(tmp_path / key))
        page.locator(f'li.upload.done[data-key="{key}"]').wait_for(timeout=60_000)
        assert page.locator(f'li.upload[data-key="{key}"] .badge').inner_text() == "multipart"
        direct, through_api = part_puts(requests, server.url, bucket, key)
        assert direct == [] and len(through_api) == 3, requests
        assert page_errors == [] and offline.blocked == []
    finally:
        context.close()
    got = api_get(server, f"/storage/buckets/{bucket}/objects/{key}", username="dave",
                  password=DAVE_PASSWORD)
    assert got.status_code == 200 and sha256(got.content) == sha256(body)


def test_console_assets_are_cached(server: GatewayProcess) -> None:
    """The page and its assets carry ETags (304 on revalidation); versioned asset URLs are
    immutable; only packaged files are served."""
    page = httpx.get(server.url + "/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(server.url + "/console",
                     headers={"If-None-Match": page.headers["etag"]}).status_code == 304
    script = next(part.split('"')[1] for part in page.text.split("src=")[1:]
                  if "app.js" in part)
    versioned = httpx.get(f"{server.url}/{script}")
    assert versioned.status_code == 200
    assert "immutable" in versioned.headers["cache-control"]
    plain = httpx.get(server.url + "/console/assets/app.js")
    assert plain.headers["cache-control"] == "no-cache"
    assert plain.content == versioned.content
    assert httpx.get(server.url + "/console/assets/vendor/preact.module.js").status_code == 200
    assert httpx.get(server.url + "/console/assets/nothing.js").status_code == 404
    slash = httpx.get(server.url + "/console/")
    assert slash.status_code == 308 and slash.headers["location"] == "/console"


# What a browser's drag-and-drop hands the page: a DataTransfer holding the files.
DATA_TRANSFER = """files => {
  const transfer = new DataTransfer();
  for (const [name, text] of files) transfer.items.add(new File([text], name));
  return transfer;
}"""


@pytest.mark.parametrize("user, password", [("alice", ALICE_PASSWORD),
                                            ("dave", DAVE_PASSWORD)])
def test_console_drop_and_download(server: GatewayProcess, browser: Any, user: str,
                                   password: str) -> None:
    """Files dropped on a folder are uploaded there; the download button saves an object's
    exact bytes under its name — by a presigned GET for a user with an S3 key (alice), by
    the session's JSON API read for one without (dave)."""
    bucket = f"{user}-dropbox"
    dropped = {"first.txt": "dropped on the folder\n", "second.csv": "a,b\n1,2\n"}
    with session(server, username=user, password=password) as client:
        assert client.post("/storage/buckets", json={"name": bucket}).status_code == 201
    offline = Offline(server.url)
    context = offline.install(browser.new_context(viewport={"width": 1280, "height": 900},
                                                  accept_downloads=True))
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page, page_errors, requests = sign_in(context, server.url, user, password)
        page.locator(f'tr[data-bucket="{bucket}"]').get_by_role("link", name=bucket).click()
        page.get_by_role("heading", name=bucket).wait_for()
        transfer = page.evaluate_handle(DATA_TRANSFER, list(dropped.items()))
        zone = page.get_by_label("Drop files here to upload them to this folder")
        zone.dispatch_event("dragover", {"dataTransfer": transfer})
        page.locator(".dropzone.dragging").wait_for()
        zone.dispatch_event("drop", {"dataTransfer": transfer})
        for name in dropped:
            page.locator(f'li.upload.done[data-key="{name}"]').wait_for()
            page.locator(f'tr[data-key="{name}"]').wait_for()
        assert page.locator(".dropzone.dragging").count() == 0

        with page.expect_download() as started:
            page.get_by_role("button", name="Download second.csv").click()
        saved = started.value
        assert saved.suggested_filename == "second.csv"
        assert Path(saved.path()).read_bytes() == dropped["second.csv"].encode()
        fetched = [url for method, url in requests if method == "GET"
                   and url.endswith(f"/api/v1/storage/buckets/{bucket}/objects/second.csv")]
        if user == "alice":
            assert saved.url.startswith(f"{server.url}/{bucket}/second.csv?X-Amz-")
            assert fetched == []
        else:
            assert saved.url.startswith("blob:") and len(fetched) == 1
        assert page_errors == [] and offline.blocked == []
    finally:
        context.close()
    with session(server, username=user, password=password) as client:
        for name, text in dropped.items():
            got = client.get(f"/storage/buckets/{bucket}/objects/{name}")
            assert got.status_code == 200 and got.text == text


def test_console_pages_and_sorts_a_large_folder(server: GatewayProcess, browser: Any) -> None:
    """A folder of 150 objects is shown 100 at a time (S3 continuation tokens, Next and
    Previous), and a page sorts by size both ways from its column header."""
    bucket = "alice-many"
    sizes = {f"obj-{i:03d}": (i * 37) % 150 for i in range(150)}
    with session(server, username="alice", password=ALICE_PASSWORD) as client:
        assert client.post("/storage/buckets", json={"name": bucket}).status_code == 201
        for key, size in sizes.items():
            assert client.put(f"/storage/buckets/{bucket}/objects/{key}",
                              content=b"s" * size).status_code == 200
    offline = Offline(server.url)
    context = offline.install(browser.new_context(viewport={"width": 1280, "height": 900}))
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page, page_errors, _ = sign_in(context, server.url, "alice", ALICE_PASSWORD)
        page.locator(f'tr[data-bucket="{bucket}"]').get_by_role("link", name=bucket).click()
        rows = page.locator("tr[data-key]")
        page.locator('tr[data-key="obj-099"]').wait_for()

        def shown() -> list[str]:
            return [str(row.get_attribute("data-key")) for row in rows.all()]

        assert shown() == sorted(sizes)[:100]
        pager = page.get_by_role("navigation", name="Object pages")
        pager.get_by_role("button", name="Next").click()
        page.locator('tr[data-key="obj-149"]').wait_for()
        assert shown() == sorted(sizes)[100:]
        assert pager.get_by_role("button", name="Next").is_disabled()

        page.get_by_role("button", name="Size").click()
        page.locator("th[aria-sort='ascending']").wait_for()
        ascending = [sizes[key] for key in shown()]
        assert ascending == sorted(sizes[key] for key in sorted(sizes)[100:])
        page.get_by_role("button", name="Size").click()
        page.locator("th[aria-sort='descending']").wait_for()
        assert [sizes[key] for key in shown()] == ascending[::-1]

        pager.get_by_role("button", name="Previous").click()
        page.locator('tr[data-key="obj-000"]').wait_for()
        assert sorted(shown()) == sorted(sizes)[:100]
        assert pager.get_by_role("button", name="Previous").is_disabled()
        assert page_errors == [] and offline.blocked == []
    finally:
        context.close()
