"""Processing one customer: the fold runs with no transaction open, the save checks that the
ledger did not change meanwhile (else it folds again), and the outcome is the same as a fold of
everything — on SQLite and on PostgreSQL."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from loyalty_ladder import ledger, processing, store
from loyalty_ladder.events import parse_events

from .test_api import journey

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


def _store(service, events):
    return ledger.store_events(service.db, "default", parse_events(events), "api")


def _unapplied(service) -> int:
    with service.db.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(store.events)
                            .where(store.events.c.applied_at.is_(None))).scalar()


def test_an_event_arriving_during_the_fold_is_folded_too(service, monkeypatch):
    events = journey()
    _store(service, events[:3])
    real_fold = processing.fold
    calls = []

    def fold_while_a_new_event_arrives(*args, **kwargs):
        calls.append(len(args[1].events))
        if len(calls) == 1:  # another request stores an event while we fold
            _store(service, events[3:4])
        return real_fold(*args, **kwargs)

    monkeypatch.setattr(processing, "fold", fold_while_a_new_event_arrives)
    state = service.process_customer("default", "c-1")
    assert calls == [3, 4]  # the first fold was discarded, the second saw the new event
    assert state.facts["orders_count"] == 2
    assert _unapplied(service) == 0
    assert service.customer_view("default", "c-1")["facts"]["orders_count"] == 2


def test_the_fold_holds_no_transaction_so_other_writers_proceed(service, monkeypatch):
    events = journey()
    _store(service, events[:3])
    real_fold = processing.fold
    written = []

    def fold_while_another_writer_stores(*args, **kwargs):
        # a writer on another thread (another request) must not wait for our fold
        worker = threading.Thread(target=lambda: written.append(_store(service, [
            {**events[0], "id": "other-e1", "customer_id": "c-2"}]).accepted))
        worker.start()
        worker.join(timeout=3)
        assert not worker.is_alive(), "the fold held the database's write lock"
        return real_fold(*args, **kwargs)

    monkeypatch.setattr(processing, "fold", fold_while_another_writer_stores)
    service.process_customer("default", "c-1")
    assert written == [1]


def test_a_customer_whose_ledger_keeps_changing_is_folded_under_the_lock_at_last(service, monkeypatch):
    events = journey()
    _store(service, events[:2])
    real_fold = processing.fold
    arrivals = iter(events[2:])
    calls = []

    def fold_under_constant_traffic(*args, **kwargs):
        calls.append(len(args[1].events))
        if len(calls) <= processing.MAX_OPTIMISTIC_TRIES:
            _store(service, [next(arrivals)])
        return real_fold(*args, **kwargs)

    monkeypatch.setattr(processing, "fold", fold_under_constant_traffic)
    state = service.process_customer("default", "c-1")
    n = processing.MAX_OPTIMISTIC_TRIES
    assert calls == [2 + i for i in range(n)] + [2 + n]  # the last fold, under the lock, sees all
    assert state.facts["orders_count"] == sum(1 for e in events[:2 + n] if e["type"] == "order_paid")
    assert _unapplied(service) == 0


def _blind_first_read(monkeypatch):
    """Another writer stores the ids between our read and our insert (a PostgreSQL race)."""
    real, calls = ledger._hashes, []

    def hashes(conn, shop_id, ids):
        calls.append(1)
        return {} if len(calls) == 1 else real(conn, shop_id, ids)

    monkeypatch.setattr(ledger, "_hashes", hashes)


def test_an_insert_that_loses_a_race_is_a_duplicate_not_an_error(service, monkeypatch):
    events = journey()
    _store(service, events[:1])
    _blind_first_read(monkeypatch)
    result = _store(service, events[:2])  # the first id was stored "meanwhile", the second is new
    assert (result.accepted, result.duplicates, result.ids) == (1, 1, [events[1]["id"]])


def test_an_insert_that_loses_a_race_to_other_content_is_a_conflict_and_stores_nothing(service, monkeypatch):
    from loyalty_ladder.errors import Conflict

    events = journey()
    _store(service, events[:1])
    _blind_first_read(monkeypatch)
    changed = {**events[0], "customer": {"email": "other@example.com"}}
    with pytest.raises(Conflict):
        _store(service, [changed, events[1]])
    with service.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.events)).scalar() == 1
