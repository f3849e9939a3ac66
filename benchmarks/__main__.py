"""`make bench`: the whole suite, one table, and the figures as JSON.

    python -m benchmarks [--quick] [--json PATH] [--readme]

``--quick`` shortens every run (for trying the suite, not for publishing); ``--readme``
writes the table into README.md between its ``bench`` markers, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import large_objects, listing, small_objects

ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")
MB = 1e6


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model or cpu}), "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def _verdict(value: float, target: float, higher: bool = True) -> str:
    ok = value >= target if higher else value <= target
    return "yes" if ok else "**no**"


def table(r: dict[str, Any]) -> str:
    """The figures as one Markdown table (readable in a terminal too)."""
    lines = ["| measurement | gateway | null backend | bare app | ratio to bare | target | met |",
             "|---|---:|---:|---:|---:|---|---|"]

    def row(*cells: str) -> None:
        lines.append("| " + " | ".join(cells) + " |")

    targets = {"GET c32": 0.5, "PUT c32": 0.15}
    for name, servers in r["small"]["rows"].items():
        gw, null, bare = servers["gateway"], servers["gateway-null"], servers["bare"]
        ratio = gw["rps"] / bare["rps"]
        target = targets.get(name)
        bad = " (errors!)" if gw["errors"] or null["errors"] or bare["errors"] else ""
        row(f"4 KiB {name}: req/s{bad}", f"{gw['rps']:,.0f}", f"{null['rps']:,.0f}",
            f"{bare['rps']:,.0f}", f"{ratio:.2f}",
            f"≥ {target}" if target else "", _verdict(ratio, target) if target else "")
        row(f"4 KiB {name}: p50 / p99 ms", f"{gw['p50_ms']:.2f} / {gw['p99_ms']:.2f}",
            f"{null['p50_ms']:.2f} / {null['p99_ms']:.2f}",
            f"{bare['p50_ms']:.2f} / {bare['p99_ms']:.2f}", "", "", "")
        row(f"4 KiB {name}: server CPU µs/request", f"{gw['cpu_us']:.0f}",
            f"{null['cpu_us']:.0f}", f"{bare['cpu_us']:.0f}",
            f"{gw['cpu_us'] / bare['cpu_us']:.1f}x the CPU", "", "")
    pg = r["small"].get("postgres", {})
    if "skipped" in pg:
        row("PostgreSQL rows", f"skipped: {pg['skipped']}", "", "", "", "", "")
    for name, load in pg.items():
        if name == "skipped":
            continue
        op_c = " ".join(name.split()[:2])
        bare = r["small"]["rows"].get(op_c, {}).get("bare")
        ratio = f"{load['rps'] / bare['rps']:.2f}" if bare else ""
        bad = " (errors!)" if load["errors"] else ""
        row(f"PostgreSQL, {name.split()[2][:-1]} worker(s), 4 KiB {op_c}: req/s{bad}",
            f"{load['rps']:,.0f}", "", f"{bare['rps']:,.0f}" if bare else "", ratio, "", "")
    lists = r["listing"]
    sizes = sorted(lists, key=int)
    for n in sizes:
        for c, load in lists[n].items():
            bad = " (errors!)" if load["errors"] else ""
            row(f"ListObjectsV2 1,000 of {int(n):,} keys, {c}: pages/s{bad}",
                f"{load['rps']:,.0f} (p99 {load['p99_ms']:.0f} ms)", "", "", "",
                "≥ 100", _verdict(load["rps"], 100))
    if len(sizes) > 1:
        small_n, big_n = sizes[0], sizes[-1]
        for c in lists[big_n]:
            ratio = lists[big_n][c]["rps"] / lists[small_n][c]["rps"]
            row(f"ListObjectsV2 {c}: {int(big_n):,} keys / {int(small_n):,} keys",
                f"{ratio:.2f}", "", "", "", "≈ 1 (≥ 0.8)", _verdict(ratio, 0.8))
    big = r["large"]
    gw, bare = big["gateway"], big["bare"]
    size = _size_label(big["size"])
    row(f"{size} PUT: MB/s", f"{gw['put_mb_s']:,.0f}", "", f"{bare['put_mb_s']:,.0f}",
        f"{gw['put_mb_s'] / bare['put_mb_s']:.2f}", "≥ 300 MB/s", _verdict(gw["put_mb_s"], 300))
    row(f"{size} GET: MB/s", f"{gw['get_mb_s']:,.0f}", "", f"{bare['get_mb_s']:,.0f}",
        f"{gw['get_mb_s'] / bare['get_mb_s']:.2f}", "≥ 800 MB/s", _verdict(gw["get_mb_s"], 800))
    mp = big["multipart"]
    row(f"{size} multipart, 4 parts in flight: MB/s", f"{mp['mb_s']:,.0f}", "", "", "",
        "≥ 300 MB/s", _verdict(mp["mb_s"], 300))
    row(f"CompleteMultipartUpload {size}: ms", f"{mp['complete_s'] * 1000:.0f}", "", "", "",
        "", "")
    if "multipart_big" in big:
        mpb = big["multipart_big"]
        grown = mpb["complete_s"] / mp["complete_s"]
        row(f"CompleteMultipartUpload {_size_label(mpb['size'])}: ms",
            f"{mpb['complete_s'] * 1000:.0f} ({grown:.1f}x the {size})", "", "", "",
            "independent of size (≤ 2x)", _verdict(grown, 2.0, higher=False))
    peaks = [(f"{size} PUT", gw["put_peak_rss_mb"]), (f"{size} GET", gw["get_peak_rss_mb"]),
             (f"{size} multipart", mp["peak_rss_mb"])]
    if "multipart_big" in big:
        peaks.append((f"{_size_label(big['multipart_big']['size'])} multipart",
                      big["multipart_big"]["peak_rss_mb"]))
    for what, peak in peaks:
        row(f"peak server RSS, {what}: MB", f"{peak:.0f} (idle {gw['idle_rss_mb']:.0f})",
            "", "", "", "< 150 MB", _verdict(peak, 150, higher=False))
    return "\n".join(lines)


def _size_label(nbytes: int) -> str:
    return f"{nbytes / 2**30:g} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:g} MiB"


def update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = (content.index(m) for m in MARKERS)
    readme.write_text(content[: start + len(MARKERS[0])] + "\n" + text + "\n" + content[end:])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, smaller objects")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--skip", nargs="*", default=[], choices=["small", "listing", "large"])
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="measure nothing: print (and with --readme, publish) the table "
                             "of an earlier run's JSON")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        earlier: dict[str, Any] = json.loads(args.from_json.read_text())
        return publish(earlier, args.readme)
    seconds = 2.0 if args.quick else 5.0
    started = time.monotonic()
    results: dict[str, Any] = {"machine": machine(),
                               "date": time.strftime("%Y-%m-%d", time.gmtime())}
    if "small" not in args.skip:
        log("small objects (gateway, gateway on the null backend, bare Starlette app)")
        results["small"] = small_objects.run(seconds, rounds=1 if args.quick else 2, log=log)
    if "listing" not in args.skip:
        log("listings")
        results["listing"] = listing.run(
            seconds, (10_000, 100_000) if args.quick else (100_000, 1_000_000), log=log)
    if "large" not in args.skip:
        log("large objects")
        gib = 1024 * 1024 * 1024
        results["large"] = large_objects.run(
            gib // 4 if args.quick else gib, gib if args.quick else 5 * gib, log=log)
    results["seconds"] = round(time.monotonic() - started)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    if not args.skip:
        return publish(results, args.readme)
    print(json.dumps(results, indent=2))
    return results


def publish(results: dict[str, Any], readme: bool) -> dict[str, Any]:
    text = (f"Measured {results['date']} on {results['machine']}; `make bench` "
            f"({results['seconds']} s).\n\n" + table(results))
    print(text)
    if readme:
        update_readme(text)
    return results


if __name__ == "__main__":
    main()
