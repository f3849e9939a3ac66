"""Soak: many concurrent clients of mixed traffic against one gateway process.

64 client threads (10 minutes long, 60 s short) send S3 requests through boto3 (small and
medium PUTs, full and ranged GETs, HEAD, ListObjectsV2 by prefix, CopyObject, DeleteObject,
DeleteObjects, multipart uploads), presigned GETs and PUTs through httpx, and JSON Storage
API calls, while a long-polling change-feed reader and a WebSocket subscriber follow the
bucket and the gateway's memory and CPU are sampled every second.

Every body is self-describing (a header naming its writer, sequence and size, then bytes
derived from it), so a reader tells a whole body from a torn or mixed one without a shared
index. Each client owns a few keys (and keeps replacing one with a key never used before)
and knows exactly what they hold; shared keys are overwritten by everyone, and a read of
one may not return a version acknowledged before another write to that key started, once
that other write was acknowledged (linearizable reads). Afterwards every key is read back,
the change feed and the WebSocket stream are compared with what was acknowledged, and
``gateway fsck --checksums`` checks every blob.

Failures: any 5xx (SlowDown included: no limit is meant to be reached), any other status a
request should not get, any client exception (timeouts, resets), any body, range, ETag or
listing unlike what was acknowledged, a change missing from the feed or invented, RSS
growing by 20 % or more from the end of warm-up (the first 10 %) to the end, files still
held once the clients are gone, errors in the gateway's log, fsck findings.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from campaigns._gateway import running_gateway
from campaigns._report import Report
from campaigns._soak_client import Client
from campaigns._soak_model import (
    API,
    BUCKET,
    SHARED_KEYS,
    TIMEOUT,
    Soak,
    Stats,
    body_for,
    identify,
    md5,
)
from gateway.api.ws import CLOSE_LAGGING
from tests._server import cli_json, run_cli_here

CLIENTS = 64
SHORT_SECONDS = 60.0
LONG_SECONDS = 600.0
#: The first part of the run, after which memory must stop growing.
WARM_UP = 0.10
RSS_GROWTH_LIMIT = 20.0  # percent
RSS_WINDOW = 4.0  # seconds
#: Files the gateway may hold after the load beyond those it held before (database
#: connections and journals opened on first use).
FD_SLACK = 8


# -- followers of the change log -------------------------------------------------------------


class FeedReader(threading.Thread):
    """Long-polls ``GET /api/v1/storage/changes`` for the bucket, checking the numbers
    come in order without gaps."""

    def __init__(self, soak: Soak, since: str) -> None:
        super().__init__(daemon=True, name="soak-feed")
        self.soak = soak
        self.cursor = since
        self.events: list[dict[str, Any]] = []
        self.stats = Stats()
        self.stop = threading.Event()
        self.client = httpx.Client(base_url=soak.server.url, timeout=TIMEOUT, verify=soak.tls,
                                   headers={"Authorization": f"Bearer {soak.token}"})

    def run(self) -> None:
        while not self.stop.is_set():
            self.page(wait=2)

    def page(self, wait: int) -> bool:
        """One page; whether there may be more."""
        started = time.monotonic()
        try:
            response = self.client.get(f"{API}/changes", params={
                "bucket": BUCKET, "since": self.cursor, "limit": "1000", "wait": str(wait)})
        except httpx.HTTPError as exc:
            self.stats.exceptions[type(exc).__name__] += 1
            self.soak.fail(f"change feed: {type(exc).__name__}: {exc}")
            time.sleep(1)
            return False
        self.stats.latency.setdefault("feed", []).append(time.monotonic() - started)
        self.stats.statuses[response.status_code] += 1
        self.stats.down += len(response.content)
        if response.status_code != 200:
            self.stats.unexpected += 1
            self.soak.fail(f"change feed: HTTP {response.status_code} {response.text[:200]}")
            time.sleep(1)
            return False
        body = response.json()
        for change in body["changes"]:
            if self.events and change["sequence"] != self.events[-1]["sequence"] + 1:
                self.soak.fail(f"change feed: {change['sequence']} after "
                               f"{self.events[-1]['sequence']}")
            self.events.append(change)
        self.cursor = body["cursor"]
        return bool(body["has_more"])

    def drain(self) -> None:
        self.stop.set()
        self.join(TIMEOUT)
        while self.page(wait=0):
            pass
        self.client.close()


class SocketReader(threading.Thread):
    """Follows the bucket over ``/ws``, resubscribing from its last cursor when the
    gateway closes a lagging socket."""

    def __init__(self, soak: Soak, since: str) -> None:
        super().__init__(daemon=True, name="soak-ws")
        self.soak = soak
        self.cursor = since
        self.sequences: list[int] = []
        self.lagging = 0
        self.until: int | None = None  # stop once this sequence has arrived
        self.finish = threading.Event()

    def run(self) -> None:
        url = self.soak.server.url.replace("http://", "ws://") + "/ws"
        while not self.finish.is_set():
            try:
                with ws_connect(url, open_timeout=10, max_size=None, additional_headers={
                        "Authorization": f"Bearer {self.soak.token}"}) as ws:
                    self.follow(ws)
                return
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == CLOSE_LAGGING:
                    self.lagging += 1
                    continue
                self.soak.fail(f"websocket closed: {exc}")
                return
            except (OSError, TimeoutError) as exc:
                self.soak.fail(f"websocket: {type(exc).__name__}: {exc}")
                return

    def follow(self, ws: Any) -> None:
        hello = json.loads(ws.recv(timeout=10))
        if hello.get("type") != "authenticated":
            self.soak.fail(f"websocket: {hello}")
            self.finish.set()
            return
        ws.send(json.dumps({"type": "subscribe", "bucket": BUCKET, "since": self.cursor}))
        while not self.finish.is_set():
            if self.until is not None and self.sequences and self.sequences[-1] >= self.until:
                return
            try:
                message = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            kind = message.get("type")
            if kind == "event":
                if self.sequences and message["sequence"] <= self.sequences[-1]:
                    self.soak.fail(f"websocket: {message['sequence']} after "
                                   f"{self.sequences[-1]}")
                self.sequences.append(message["sequence"])
                self.cursor = message["cursor"]
            elif kind != "subscribed":
                self.soak.fail(f"websocket: {message}")


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the load started
    rss: int
    cpu: float  # seconds, user and system
    requests: int  # answered so far
    fds: int
    threads: int


class Sampler(threading.Thread):
    """The gateway's resident memory, CPU time, open files and threads (with its
    children's), every second."""

    def __init__(self, pid: int, requests: Callable[[], int]) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.process = psutil.Process(pid)
        self.requests = requests
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.started = time.monotonic()

    def measure(self) -> Sample:
        rss, cpu, fds, threads = 0, 0.0, 0, 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                cpu += times.user + times.system
                fds += proc.num_fds()
                threads += proc.num_threads()
            except psutil.NoSuchProcess:
                pass
        return Sample(time.monotonic() - self.started, rss, cpu, self.requests(), fds, threads)

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.measure())
            self.stop.wait(1.0)


# -- the campaign ----------------------------------------------------------------------------


def setup(soak: Soak) -> None:
    soak.s3.create_bucket(Bucket=BUCKET)
    for i, key in enumerate(SHARED_KEYS):
        version = (9999, i, 100)
        data = body_for(*version)
        soak.shared.begin(key, version, md5(data))
        soak.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        soak.shared.ack(key, version)


def sweep(soak: Soak, clients: list[Client]) -> int:
    """Read every key back and list the bucket once the load has stopped: the figure is
    the number of reads."""
    def check(client: Client) -> int:
        for key in list(client.own):
            client.check_own("sweep", key)
        return len(client.own)

    with ThreadPoolExecutor(16) as pool:
        reads = sum(pool.map(check, clients))
    expected: set[str] = set(SHARED_KEYS)
    for client in clients:
        expected.update(key for key, held in client.own.items()
                        if held.etag is not None or key in client.unsure)
    for key in SHARED_KEYS:
        floor = soak.shared.floor_of(key)
        _, body, _ = clients[0].read("sweep_shared", key, "s3", (200,))
        clients[0].check_shared("sweep", key, identify(body), floor)
        reads += 1
    listed: set[str] = set()
    for page in soak.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        listed.update(o["Key"] for o in page.get("Contents", []))
    maybe = {key for c in clients for key in c.unsure}
    if listed - maybe != expected - maybe:
        soak.fail(f"the bucket lists {sorted(listed ^ expected)[:20]} unlike acknowledged")
    uploads = soak.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    soak.report.check(not uploads, f"{len(uploads)} multipart upload(s) left open")
    return reads


def check_changes(soak: Soak, total: Stats, feed: FeedReader, ws: SocketReader) -> None:
    """The feed lists every acknowledged change once, and nothing no one asked for; the
    WebSocket delivered the same changes in the same order."""
    created: Counter[tuple[str, str]] = Counter()
    removed: Counter[str] = Counter()
    for change in feed.events:
        if change["event"].startswith("s3:ObjectCreated:"):
            created[(change["key"], str(change["etag"]).strip('"'))] += 1
        elif change["event"].startswith("s3:ObjectRemoved:"):
            removed[change["key"]] += 1
    missing = total.created - created
    invented = created - total.tried
    soak.report.check(not missing, f"change feed misses {sum(missing.values())} acknowledged "
                                   f"write(s), e.g. {list(missing)[:5]}")
    soak.report.check(not invented, f"change feed has {sum(invented.values())} write(s) no "
                                    f"client sent, e.g. {list(invented)[:5]}")
    for key in set(removed) | set(total.removed):
        if key not in soak.tainted and removed[key] != total.removed[key]:
            soak.fail(f"change feed: {removed[key]} removal(s) of {key}, "
                      f"{total.removed[key]} acknowledged")
    sequences = [c["sequence"] for c in feed.events]
    if ws.sequences != sequences:
        differ = next((i for i, (a, b) in enumerate(zip(ws.sequences, sequences, strict=False))
                       if a != b), min(len(ws.sequences), len(sequences)))
        soak.fail(f"websocket delivered {len(ws.sequences)} changes, the feed "
                  f"{len(sequences)}; first difference at #{differ}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(workdir: Path, *, long: bool = False, duration: float | None = None,
        clients: int = CLIENTS, seed: int | None = None) -> Report:
    """``duration`` (seconds) overrides the length of the load, for quick runs; ``seed``
    repeats the clients' choices of an earlier run (its figure "seed")."""
    seconds = duration if duration is not None else LONG_SECONDS if long else SHORT_SECONDS
    seed = random.randrange(1_000_000) if seed is None else seed
    report = Report("soak", long=long)
    report.figure("seed", seed)
    data = workdir / "data"
    with running_gateway(data) as server:
        assert server.proc is not None
        token = str(cli_json(data, "token", "create", "--user", "admin", "--name", "soak",
                             "--permission=storage:read",
                             "--permission=storage:write")["token"])
        soak = Soak(server, report, token, seed)
        setup(soak)
        since = httpx.get(f"{server.url}{API}/changes", timeout=TIMEOUT,
                          params={"bucket": BUCKET, "since": "now"},
                          headers={"Authorization": f"Bearer {token}"}).json()["cursor"]
        workers = [Client(soak, i) for i in range(clients)]
        feed, ws = FeedReader(soak, since), SocketReader(soak, since)
        sampler = Sampler(server.proc.pid, lambda: sum(
            len(v) for w in workers for v in list(w.stats.latency.values())))
        before = sampler.measure()
        me = psutil.Process()
        client_cpu = sum(me.cpu_times()[:2])
        deadline = sampler.started + seconds
        threads = [threading.Thread(target=w.run, args=(deadline,), daemon=True,
                                    name=f"soak-{w.index}") for w in workers]
        for thread in [sampler, feed, ws, *threads]:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + TIMEOUT + 30)
        load_seconds = time.monotonic() - sampler.started
        stuck = sum(thread.is_alive() for thread in threads)
        report.check(stuck == 0, f"{stuck} client(s) still waiting {TIMEOUT + 30:.0f} s "
                                 "after the end")
        sampler.stop.set()
        sampler.join()
        client_cpu = sum(me.cpu_times()[:2]) - client_cpu
        feed.drain()
        if feed.events:
            ws.until = feed.events[-1]["sequence"]
        else:
            ws.finish.set()
        ws.join(30)
        ws.finish.set()
        load = Stats()
        for worker in workers:
            load.merge(worker.stats)
        sweep_reads = sweep(soak, workers)
        total = Stats()
        for worker in workers:
            total.merge(worker.stats)
            worker.close()
        total.merge(feed.stats)
        check_changes(soak, total, feed, ws)
        soak.s3.close()
        after = settled(sampler, before.fds)
        log = server.log()
    figures(report, seconds, clients, load_seconds, load, total, sampler, client_cpu)
    report.figure("server open files before / max / after",
                  f"{before.fds} / {max(s.fds for s in sampler.samples)} / {after.fds}")
    report.figure("server threads before / max / after",
                  f"{before.threads} / {max(s.threads for s in sampler.samples)} / "
                  f"{after.threads}")
    report.check(after.fds <= before.fds + FD_SLACK,
                 f"the gateway holds {after.fds} files once every client has gone, "
                 f"{before.fds} before the load")
    (workdir / "samples.csv").write_text(
        "seconds,rss,cpu_seconds,requests,fds,threads\n" + "".join(
            f"{s.seconds:.1f},{s.rss},{s.cpu:.2f},{s.requests},{s.fds},{s.threads}\n"
            for s in sampler.samples))
    report.figure("change feed events", len(feed.events))
    report.figure("websocket events", len(ws.sequences))
    report.figure("websocket lagging reconnects", ws.lagging)
    report.figure("final sweep reads", sweep_reads)
    errors = [line for line in log.splitlines() if "Traceback" in line or "ERROR" in line]
    report.figure("server log errors", len(errors))
    report.check(not errors, "server log: " + " | ".join(errors[:5]))
    checked = run_cli_here(data, "fsck", "--checksums", "--json")
    found = json.loads(checked.stdout) if checked.stdout.strip().startswith("{") else {}
    report.figure("fsck objects checked", found.get("objects_checked", 0))
    report.figure("fsck problems", found.get("problems", -1))
    report.figure("unreferenced blobs left", found.get("young_skipped", -1))
    report.check(checked.returncode == 0 and found.get("ok") is True,
                 f"fsck: {checked.stdout[-2000:]} {checked.stderr[-2000:]}")
    return report


def settled(sampler: Sampler, fds: int, within: float = 10.0) -> Sample:
    """The gateway once its clients' connections have closed: at most ``within`` seconds
    until it holds no more than ``fds`` (+ slack) files."""
    deadline = time.monotonic() + within
    while True:
        sample = sampler.measure()
        if sample.fds <= fds + FD_SLACK or time.monotonic() > deadline:
            return sample
        time.sleep(0.2)


def figures(report: Report, seconds: float, clients: int, load_seconds: float, load: Stats,
            total: Stats, sampler: Sampler, client_cpu: float) -> None:
    requests = sum(len(v) for v in load.latency.values())
    report.figure("clients", clients)
    report.figure("duration s", round(seconds, 1))
    report.figure("load s", round(load_seconds, 1))
    report.figure("requests", requests)
    report.figure("requests/s", requests / load_seconds)
    for op in sorted(load.latency, key=lambda o: -len(load.latency[o])):
        values = load.latency[op]
        report.figure(f"  {op}", f"{len(values):,} req, p50 {percentile(values, .5) * 1e3:.1f} "
                                 f"ms, p99 {percentile(values, .99) * 1e3:.1f} ms")
    classes = Counter(f"{status // 100}xx" if status else "no answer"
                      for status in total.statuses.elements())
    report.figure("requests with change feed and final sweep", sum(total.statuses.values()))
    for name in ("2xx", "3xx", "4xx", "5xx"):
        report.figure(f"status {name}", classes.get(name, 0))
    fives = classes.get("5xx", 0)
    report.check(fives == 0, f"{fives} 5xx answer(s)")
    report.figure("unexpected statuses", total.unexpected)
    report.figure("client exceptions", sum(total.exceptions.values()))
    report.figure("mismatches", total.mismatches)
    report.figure("MB up", total.up / 1e6)
    report.figure("MB down", total.down / 1e6)
    samples = sampler.samples
    if len(samples) < 3:
        report.fail(f"only {len(samples)} sample(s) of the gateway")
        return
    warm = next(s for s in samples if s.seconds >= WARM_UP * seconds or s is samples[-1])
    tail = [s for s in samples if s.seconds <= (1 - WARM_UP) * seconds][-1]
    end = samples[-1]
    report.figure("requests/s in warm-up", warm.requests / max(warm.seconds, 1e-9))
    report.figure("requests/s in the last 10 %",
                  (end.requests - tail.requests) / max(end.seconds - tail.seconds, 1e-9))
    # Bodies in flight make RSS swing by several MB from one second to the next: each end
    # is the median of the samples in the RSS_WINDOW seconds around it.
    warm_rss = statistics.median(s.rss for s in samples
                                 if abs(s.seconds - warm.seconds) <= RSS_WINDOW / 2)
    end_rss = statistics.median(s.rss for s in samples
                                if end.seconds - s.seconds <= RSS_WINDOW)
    growth = (end_rss - warm_rss) / warm_rss * 100
    report.figure("server RSS warm-up MB", warm_rss / 1e6)
    report.figure("server RSS end MB", end_rss / 1e6)
    report.figure("server RSS max MB", max(s.rss for s in samples) / 1e6)
    report.figure("server RSS growth %", growth)
    report.check(growth < RSS_GROWTH_LIMIT, f"server RSS grew {growth:.1f} % after warm-up "
                                            f"({warm_rss / 1e6:.1f} -> {end_rss / 1e6:.1f} MB)")
    report.figure("server samples", len(samples))
    report.figure("server CPU s", end.cpu - samples[0].cpu)
    report.figure("client CPU s", client_cpu)
