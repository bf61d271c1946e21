"""Where a backtest's history comes from, one customer at a time, with memory flat.

* :class:`FileHistory` — JSON lines of generic events (``ladder demo-data``, an export).  A file
  already grouped by customer (each customer's lines together) is read straight through; any
  other file, and standard input, is first spilled to a temporary SQLite file and read back
  ordered by customer, so neither way holds more than one chunk of customers in memory.  Only
  events: the shop's turns, exclusions and manual adjustments are not in such a file.
* :class:`DatabaseHistory` — the shop's ledger as live processing reads it: each account's
  events with those of the guests linked to it (manual adjustments included, events set aside
  left out), the shop-wide inputs (turns, exclusions) and its go-live time.

Both yield :class:`Customer` items (raw JSON, parsed and validated later in the worker that folds
them) and know their size before the first customer, for a progress bar with an ETA.
"""
from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from .. import adjustments, identity, ledger, store
from ..clock import as_utc
from ..errors import BadRequest
from ..timeline import ShopInputs

#: customers handed to a worker at once
CHUNK = 200
#: lines written to the spill file per transaction
SPILL_BATCH = 5000

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Customer:
    """One customer's history as stored: raw event objects (JSON text for a file, the stored
    body for the ledger) and a label for each (``file:line``, or the ledger's event id)."""

    id: str
    items: tuple[Any, ...]
    labels: tuple[str, ...]


@dataclass
class Scan:
    """What reading a history once told: its size and the latest event time."""

    customers: int = 0
    events: int = 0
    latest: datetime | None = None
    grouped: bool = True
    #: why the history cannot be replayed at all (a line that is not an event object)
    problems: list[str] = field(default_factory=list)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


class _Reader:
    """Reads JSON lines, keeping count and the latest time; a broken line is a problem with its
    ``file:line``, at most 20 of them listed."""

    MAX_PROBLEMS = 20

    def __init__(self, name: str, scan: Scan):
        self.name = name
        self.scan = scan

    def items(self, stream: IO[str]) -> Iterator[tuple[int, str, str]]:
        """``(line number, customer id, line)`` of every event line."""
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, a number too long
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else (
                    "nested too deeply" if isinstance(exc, RecursionError) else str(exc))
                self.problem(f"{self.name}:{lineno}: invalid JSON: {why}")
                continue
            if not isinstance(item, dict):
                self.problem(f"{self.name}:{lineno}: expected one event object per line")
                continue
            cid = item.get("customer_id")
            if not isinstance(cid, str) or not cid:
                self.problem(f"{self.name}:{lineno}: customer_id: a customer id (text) is required")
                continue
            when = _time(item.get("occurred_at"))
            if when is not None and (self.scan.latest is None or when > self.scan.latest):
                self.scan.latest = when
            self.scan.events += 1
            yield lineno, cid, line

    def problem(self, text: str) -> None:
        if len(self.scan.problems) < self.MAX_PROBLEMS:
            self.scan.problems.append(text)
        elif len(self.scan.problems) == self.MAX_PROBLEMS:
            self.scan.problems.append("… (more lines could not be read)")


class FileHistory:
    """A JSON-lines events file (or ``-``: standard input), one customer at a time."""

    kind = "file"
    note = ("events only: an events file carries no shop turns, exclusions, manual adjustments, guest "
            "links or go-live time of a shop")

    def __init__(self, path: str, progress: Progress | None = None):
        self.path = path
        self.progress = progress or (lambda _msg: None)
        self.scan = Scan()
        self._spill: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.live_from: datetime | None = None
        self.shop_inputs = ShopInputs()

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == "-" else self.path

    def _open(self) -> IO[str]:
        if self.path == "-":
            return sys.stdin
        try:
            return open(self.path, encoding="utf-8", newline="")
        except OSError as exc:
            raise BadRequest(f"{self.path}: cannot read the history: {exc.strerror or exc}") from None

    def prepare(self) -> Scan:
        """Read the history once: its size, its latest time, whether it is grouped by customer
        (a regular file), or spill it (standard input, a file that is not grouped)."""
        if self.path != "-":
            self.progress(f"reading {self.name}")
            grouped = self._check_grouped()
            if grouped:
                return self.scan
            self.progress(f"{self.name} is not grouped by customer: sorting it in a temporary file")
        self._spill_all()
        return self.scan

    def _check_grouped(self) -> bool:
        scan = self.scan
        closed: set[int] = set()  # hashes of customers whose lines are behind us
        current: str | None = None
        try:
            with self._open() as stream:
                for _lineno, cid, _line in _Reader(self.name, scan).items(stream):
                    if cid != current:
                        if current is not None:
                            closed.add(hash(current))
                        if hash(cid) in closed:
                            # not grouped (or a hash collision: then spilling is merely slower)
                            self.scan = Scan()
                            return False
                        current = cid
                        scan.customers += 1
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{self.name}: not UTF-8 text: {exc.reason}") from None
        return True

    def _spill_all(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="ladder-backtest-")
        self._spill = Path(self._tmp.name) / "history.sqlite"
        scan = self.scan = Scan(grouped=False)
        conn = sqlite3.connect(self._spill)
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("CREATE TABLE lines (customer TEXT NOT NULL, seq INTEGER NOT NULL, line TEXT NOT NULL)")
            batch: list[tuple[str, int, str]] = []
            stream = self._open()
            try:
                for lineno, cid, line in _Reader(self.name, scan).items(stream):
                    batch.append((cid, lineno, line))
                    if len(batch) >= SPILL_BATCH:
                        conn.executemany("INSERT INTO lines VALUES (?, ?, ?)", batch)
                        batch.clear()
            except UnicodeDecodeError as exc:
                raise BadRequest(f"{self.name}: not UTF-8 text: {exc.reason}") from None
            finally:
                if stream is not sys.stdin:
                    stream.close()
            if batch:
                conn.executemany("INSERT INTO lines VALUES (?, ?, ?)", batch)
            conn.execute("CREATE INDEX lines_by_customer ON lines (customer, seq)")
            conn.commit()
            scan.customers = conn.execute("SELECT count(DISTINCT customer) FROM lines").fetchone()[0]
        finally:
            conn.close()

    def customers(self) -> Iterator[Customer]:
        """Every customer's lines, in file order within the customer."""
        if self._spill is None:
            with self._open() as stream:
                yield from _groups((cid, lineno, line) for lineno, cid, line in _Reader(self.name, Scan()).items(stream))
            return
        conn = sqlite3.connect(self._spill)
        try:
            rows = conn.execute("SELECT customer, seq, line FROM lines ORDER BY customer, seq")
            yield from _groups(rows)
        finally:
            conn.close()

    def label(self, lineno: int) -> str:
        return f"{self.name}:{lineno}"

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._spill = None


def _groups(rows: Any) -> Iterator[Customer]:
    current: str | None = None
    items: list[str] = []
    labels: list[str] = []
    for cid, lineno, line in rows:
        if cid != current:
            if current is not None:
                yield Customer(current, tuple(items), tuple(labels))
            current, items, labels = cid, [], []
        items.append(line)
        labels.append(str(lineno))
    if current is not None:
        yield Customer(current, tuple(items), tuple(labels))


class DatabaseHistory:
    """A shop's ledger: every account (a guest linked to an account is part of it), page by page."""

    kind = "database"
    note = "the shop's ledger: events, manual adjustments, shop turns and exclusions, guest links, go-live time"
    PAGE = 500

    def __init__(self, db: sa.Engine, shop_id: str, progress: Progress | None = None):
        self.db = db
        self.shop_id = shop_id
        self.progress = progress or (lambda _msg: None)
        self.scan = Scan()
        self.live_from: datetime | None = None
        self.shop_inputs = ShopInputs()

    @property
    def name(self) -> str:
        return f"shop {self.shop_id!r} in the database"

    def _accounts(self) -> sa.Select[Any]:
        ev, links = store.events, store.customer_links
        account = sa.func.coalesce(links.c.customer_id, ev.c.customer_id).label("account")
        return (sa.select(account).distinct()
                .select_from(ev.outerjoin(links, sa.and_(links.c.shop_id == ev.c.shop_id,
                                                         links.c.alias_id == ev.c.customer_id)))
                .where(ev.c.shop_id == self.shop_id, ev.c.set_aside_at.is_(None)))

    def prepare(self) -> Scan:
        ev = store.events
        with self.db.connect() as conn:
            self.scan.customers = conn.execute(sa.select(sa.func.count()).select_from(self._accounts().subquery())).scalar() or 0
            count, latest = conn.execute(sa.select(sa.func.count(), sa.func.max(ev.c.occurred_at))
                                         .where(ev.c.shop_id == self.shop_id, ev.c.set_aside_at.is_(None))).one()
            self.scan.events = count or 0
            self.scan.latest = None if latest is None else as_utc(latest)
            self.live_from = conn.execute(sa.select(store.shops.c.live_from)
                                          .where(store.shops.c.shop_id == self.shop_id)).scalar()
            self.shop_inputs = adjustments.shop_inputs(conn, self.shop_id)
        return self.scan

    def customers(self) -> Iterator[Customer]:
        after: str | None = None
        accounts = self._accounts().subquery()
        while True:
            query = sa.select(accounts.c.account).order_by(accounts.c.account).limit(self.PAGE)
            if after is not None:
                query = query.where(accounts.c.account > after)
            with self.db.connect() as conn:
                page = [r.account for r in conn.execute(query)]
                out = []
                for cid in page:
                    rows = ledger.rows_of(conn, self.shop_id, identity.ids_of(conn, self.shop_id, cid))
                    out.append(Customer(cid, tuple(r.body for r in rows),
                                        tuple(str((r.body or {}).get("id", r.pk)) for r in rows)))
            yield from out
            if len(page) < self.PAGE:
                return
            after = page[-1]

    def label(self, ref: str) -> str:
        return f"event {ref}"

    def close(self) -> None:
        pass
