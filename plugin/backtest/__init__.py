"""Backtests: a candidate programme replayed over a shop's history next to a baseline, before it
goes live (``ladder backtest``).

* :mod:`.sources` — the history, one customer at a time (an events file, spilled to SQLite when
  not grouped by customer; or the shop's ledger in the database);
* :mod:`.replay` — one customer folded under both timelines, in worker processes;
* :mod:`.tally` — the per-customer outcomes added up, order-independent;
* :mod:`.report` — the report document (JSON) and its table and CSV forms;
* :mod:`.run` — the timelines, the pool, the progress.
"""
from __future__ import annotations

from .report import table, to_csv
from .run import THIS_RELEASE, Baseline, backtest, default_jobs, directory_baseline, recorded_baseline
from .sources import DatabaseHistory, FileHistory

__all__ = ["THIS_RELEASE", "Baseline", "DatabaseHistory", "FileHistory", "backtest", "default_jobs", "directory_baseline",
           "recorded_baseline", "table", "to_csv"]
