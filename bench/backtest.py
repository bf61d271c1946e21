"""Backtest benchmark: `ladder backtest` over 100,000 demo customers, against a fold written by hand.

1. ``ladder demo-data --customers N`` writes a demo history (about ten orders per customer over
   24 months; ``--seed 1 --end 2026-12-01``, so every run folds the same bytes), timed;
2. ``ladder backtest --rules rules/examples/fashion-shop --baseline rules --history FILE
   --format json --out REPORT`` runs in a subprocess: its wall time, and its peak memory — the
   largest process of the command and its workers (``ru_maxrss`` from ``wait4``) and the peak of
   their summed RSS (the process tree polled in ``/proc`` every 0.2 s);
3. the hand-written fold of the default programme (``bench/handfold.py``: plain Python, the
   programme's thresholds as constants, its own grouping of the file by customer through
   temporary bucket files) folds the same file in this process, as of the report's ``as_of``:
   its time and peak RSS.  Its customers per stage, lapsed per stage, subgroups per stage and
   awards and face value per reward must equal the report's baseline figures, else exit 1.

Both steps 1–2 run at ``--small`` customers too (25,000 by default), to show memory stays flat
as the history grows.  Writes the "Backtest" section of BENCHMARKS.md (between
``<!-- backtest:start -->`` and ``<!-- backtest:end -->``; other sections are left alone).
Progress on stderr.

    python bench/backtest.py [--customers 100000] [--small 25000] [--jobs N] [--no-write] [--keep DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import handfold  # bench/handfold.py (the script's own folder)
from report import machine, write_section  # bench/report.py

ROOT = Path(__file__).resolve().parent.parent
LADDER = Path(sys.executable).with_name("ladder")  # the venv's script, next to its python
CANDIDATE = "rules/examples/fashion-shop"
BASELINE = "rules"
SEED = 1
END = "2026-12-01"
TARGET_SECONDS = 600
POLL_SECONDS = 0.2


def say(message: str) -> None:
    print(f"[bench/backtest] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ measuring a command
def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from the parent ids in /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Measured:
    seconds: float
    max_process_mib: float  # the largest single process (ru_maxrss of the command and its workers)
    tree_peak_mib: float  # the peak of the summed RSS of the command and its workers (polled)
    stderr_tail: str


def run_measured(argv: Sequence[str], *, capture_stderr: bool = False) -> Measured:
    """Run a command; its wall time and peak memory.  Exits the benchmark when it fails."""
    say("$ " + " ".join(str(a) for a in argv))
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(tempfile.TemporaryFile(mode="w+")) if capture_stderr else None
        started = time.perf_counter()
        proc = subprocess.Popen([str(a) for a in argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, sum(_rss_kib(pid) for pid in _tree(proc.pid)))
                done.wait(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _pid, status, usage = os.wait4(proc.pid, 0)  # this child's rusage, its waited-for workers included
        seconds = time.perf_counter() - started
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        tail = ""
        if err is not None:
            err.seek(0)
            tail = err.read().strip()
    if proc.returncode != 0:
        say(f"failed with exit code {proc.returncode}" + (f":\n{tail}" if tail else ""))
        sys.exit(1)
    return Measured(seconds, usage.ru_maxrss / 1024, max(peak, usage.ru_maxrss) / 1024, tail)


@dataclass
class Size:
    customers: int
    demo: Measured
    backtest: Measured
    report: dict[str, Any]
    file: Path


def run_size(customers: int, where: Path, jobs: int | None) -> Size:
    demo_file = where / f"demo-{customers}.jsonl"
    report_file = where / f"report-{customers}.json"
    demo = run_measured([LADDER, "demo-data", "--customers", customers, "--seed", SEED, "--end", END,
                         "--out", demo_file], capture_stderr=True)
    say(demo.stderr_tail.splitlines()[-1] if demo.stderr_tail else f"demo data written in {demo.seconds:.1f} s")
    command: list[Any] = [LADDER, "backtest", "--rules", CANDIDATE, "--baseline", BASELINE, "--history", demo_file,
                          "--format", "json", "--out", report_file]
    if jobs is not None:
        command += ["--jobs", jobs]
    backtest = run_measured(command)
    say(f"backtest of {customers:,} customers: {backtest.seconds:.1f} s, largest process "
        f"{backtest.max_process_mib:.0f} MiB, process tree {backtest.tree_peak_mib:.0f} MiB")
    report = json.loads(report_file.read_text())
    return Size(customers, demo, backtest, report, demo_file)


# ------------------------------------------------------------------ the hand fold against the report
def differences(tally: handfold.FileTally, report: dict[str, Any]) -> list[str]:
    """Where the hand fold's figures differ from the report's baseline side (empty: equal)."""
    out: list[str] = []
    failures = (report.get("failures") or {}).get("count", 0)
    if failures:
        out.append(f"the backtest could not replay {failures} customers (left out of its figures)")
    if report.get("customers") != tally.customers:
        out.append(f"customers: report {report.get('customers')}, hand fold {tally.customers}")
    stages = report["stages"]
    for stage in sorted({*stages, *(s or "(none)" for s in tally.stages)}):
        row = stages.get(stage, {})
        key = None if stage == "(none)" else stage
        theirs = (row.get("baseline", 0), row.get("baseline_lapsed", 0))
        ours = (tally.stages.get(key, 0), tally.lapsed.get(key, 0))
        if theirs != ours:
            out.append(f"stage {stage}: report (customers, lapsed) {theirs}, hand fold {ours}")
    subgroups = {(stage, group): row.get("baseline", 0)
                 for stage, groups in report["subgroups"].items() for group, row in groups.items()}
    mine = {(stage, group): n for (stage, group), n in tally.subgroups.items() if stage is not None}
    for key in sorted(set(subgroups) | set(mine)):
        if subgroups.get(key, 0) != mine.get(key, 0):
            out.append(f"subgroup {key[0]}/{key[1]}: report {subgroups.get(key, 0)}, hand fold {mine.get(key, 0)}")
    rewards = {rid: (row["baseline"]["count"], Decimal(row["baseline"]["value"]))
               for rid, row in report["rewards"].items() if row["baseline"]["count"]}
    for rid in sorted(set(rewards) | set(tally.rewards)):
        theirs_r = rewards.get(rid, (0, Decimal(0)))
        ours_r = tally.rewards.get(rid, (0, Decimal(0)))
        if theirs_r != ours_r:
            out.append(f"reward {rid}: report (awards, face value) {theirs_r}, hand fold {ours_r}")
    return out


# ------------------------------------------------------------------ the section
def mib(value: float) -> str:
    return f"{value:,.0f} MiB"


def section(big: Size, small: Size | None, hand_seconds: float, hand_rss_mib: float, tally: handfold.FileTally,
            jobs: int) -> str:
    report = big.report
    history = report.get("history", {})
    customers = history.get("customers", tally.customers)
    events = history.get("events", tally.events)
    wall = big.backtest.seconds
    ratio = wall / hand_seconds
    per_fold = (wall * jobs / 2) / hand_seconds
    met = "met" if wall <= TARGET_SECONDS else "**not met**"
    sizes = [s for s in (small, big) if s is not None]
    rows = "\n".join(
        f"| backtest, {s.customers:,} customers | {s.backtest.seconds:,.1f} s | {s.customers / s.backtest.seconds:,.0f} "
        f"| {mib(s.backtest.max_process_mib)} | {mib(s.backtest.tree_peak_mib)} |" for s in sizes)
    demo_rows = ", ".join(f"{s.demo.seconds:,.1f} s for {s.customers:,}" for s in sizes)
    flat = " no smaller run to compare with (--small 0)."
    if small is not None:
        flat = (f" from {small.customers:,} to {big.customers:,} customers ({big.customers / small.customers:.1f}× "
                f"the history) the peak of the process tree goes from {mib(small.backtest.tree_peak_mib)} to "
                f"{mib(big.backtest.tree_peak_mib)} ({big.backtest.tree_peak_mib / small.backtest.tree_peak_mib:.2f}×).")
    return f"""## Backtest

`python bench/backtest.py`: `ladder demo-data --customers {big.customers} --seed {SEED} --end {END}`
({customers:,} customers, {events:,} events, {tally.orders:,} orders over 24 months), then
`ladder backtest --rules {CANDIDATE} --baseline {BASELINE} --history demo.jsonl --format json`
(as of {report.get("as_of")}, {jobs} worker processes; every customer folded twice, under the
baseline and the candidate), next to a hand-written fold of the default programme over the same
file in one process (`bench/handfold.py`: plain Python with the programme's thresholds as
constants; its time includes reading the file and its own grouping by customer; its customers
per stage, lapsed, subgroups and awards per reward equal the report's baseline). Demo data took
{demo_rows}.

| run | wall time | customers/s | peak RSS, largest process | peak RSS, process tree |
|---|---:|---:|---:|---:|
{rows}
| hand fold, {tally.customers:,} customers, 1 process | {hand_seconds:,.1f} s | {tally.customers / hand_seconds:,.0f} | {mib(hand_rss_mib)} | {mib(hand_rss_mib)} |

- Backtest / hand fold, wall time: **{ratio:.1f}×**.
- Per fold: the backtest folds every customer twice (baseline and candidate) in {jobs} worker
  process{"es" if jobs > 1 else ""}, {wall * jobs / 2:,.1f} core-seconds per {big.customers:,} folds, against the hand fold's
  {hand_seconds:,.1f} for one fold each on one core: **{per_fold:.1f}×**. The backtest's time also covers what
  the hand fold skips: validating every event, spilling the file to SQLite by customer, the rule
  engine, the movement and worse-off tally.
- Target ≤ {TARGET_SECONDS // 60} min for {big.customers:,} customers: {wall / 60:.1f} min, {met}.
- Memory:{flat}

Peak RSS of the process tree: the summed RSS of the command and its workers, polled every
{POLL_SECONDS} s; of the largest process: `ru_maxrss` of the command and its workers from
`wait4`; of the hand fold: `ru_maxrss` of the benchmark's own process. {machine()}.
"""


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=25_000,
                        help="a second, smaller run for memory flatness (0: none)")
    parser.add_argument("--jobs", type=int, help="worker processes of ladder backtest (default: its own, every core)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--keep", metavar="DIR", help="keep the demo data and reports in DIR")
    args = parser.parse_args(argv)
    if not LADDER.exists():
        parser.error(f"{LADDER} not found: run with the venv's python (make .venv/.installed)")

    where = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-backtest-"))
    where.mkdir(parents=True, exist_ok=True)
    try:
        small = run_size(args.small, where, args.jobs) if args.small else None
        big = run_size(args.customers, where, args.jobs)
        if small is not None and not args.keep:
            small.file.unlink()
        as_of = handfold.utc(big.report["as_of"])
        say(f"hand fold of {big.file.name} as of {big.report['as_of']} …")
        started = time.perf_counter()
        tally = handfold.fold_file(big.file, as_of, shop=big.report.get("shop", "default"))
        hand_seconds = time.perf_counter() - started
        hand_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        say(f"hand fold: {tally.customers:,} customers in {hand_seconds:.1f} s, peak RSS {hand_rss:.0f} MiB")
    finally:
        if not args.keep:
            shutil.rmtree(where, ignore_errors=True)

    wrong = differences(tally, big.report)
    if wrong:
        say("the hand fold and the backtest's baseline differ:\n  " + "\n  ".join(wrong))
        return 1
    jobs = args.jobs or len(os.sched_getaffinity(0))  # ladder backtest's default: every core it may use
    text = section(big, small, hand_seconds, hand_rss, tally, jobs)
    print(text)
    if not args.no_write:
        write_section("backtest", text, ROOT / "BENCHMARKS.md")
    say(f"done {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
