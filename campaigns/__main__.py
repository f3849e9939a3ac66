"""Run campaigns and print their figures.

    python -m campaigns [NAME ...] [--long] [--workdir DIR] [--json PATH]

Without names every campaign runs, one after another (they load the machine, so never
together). ``--long`` is the on-demand version (e.g. 50 crashes, a 10-minute soak); the
default is the short version the test suite runs. Exit status 1 when any campaign recorded
a failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from campaigns._report import Report

NAMES = ("crash", "faults", "fuzz", "limits", "security", "soak")


def run_one(name: str, workdir: Path, *, long: bool) -> Report:
    module = importlib.import_module(f"campaigns.{name}")
    started = time.monotonic()
    report: Report = module.run(workdir, long=long)
    report.figure("campaign seconds", round(time.monotonic() - started, 1))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m campaigns", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"one or more of {', '.join(NAMES)} (default: all)")
    parser.add_argument("--long", action="store_true", help="the long, on-demand version")
    parser.add_argument("--workdir", type=Path, help="keep data dirs and logs here")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON")
    args = parser.parse_args(argv)
    names = args.names or list(NAMES)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        parser.error(f"unknown campaign(s): {', '.join(unknown)}")
    reports = []
    with TemporaryDirectory(prefix="gw-campaign-") as tmp:
        base = args.workdir or Path(tmp)
        for name in names:
            workdir = base / name
            workdir.mkdir(parents=True, exist_ok=True)
            print(f"-- {name} …", file=sys.stderr, flush=True)
            report = run_one(name, workdir, long=args.long)
            print(report.render(), flush=True)
            reports.append(report)
    if args.json:
        args.json.write_text(json.dumps([r.as_json() for r in reports], indent=2) + "\n")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
