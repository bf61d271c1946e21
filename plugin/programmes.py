"""Which programme decides a shop's customers, and since when: programme versions stored in the
database and activated on a timeline by an admin, per shop.

* A **version** (``programme_versions``) is a validated programme under the hash of its
  normalised form (:attr:`Programme.version`), stored once with its rule files' text, where it
  was read from, who stored it and when (:func:`store_version`).  Versions stored before the
  files were kept (migration 0005) are loaded back from their normalised JSON
  (:func:`.rulefile.load_canonical`), to the same version.
* An **activation** (``programme_activations``) makes a version decide every wake-up from its
  instant on (:func:`activate`): never in the past, in one transaction with its audit row, and
  every customer on the ladder wakes at that instant.  Rows are only ever added; a rollback is a
  new activation of an older version.
* :class:`ProgrammeRegistry` (one per process) turns a shop's activations into a
  :class:`~.timeline.Timeline` of compiled versions, re-reading it when the rows changed — a
  cheap check at most every ``poll`` seconds — so every web and queue process picks up an
  activation made anywhere within seconds, without signals.
* The rules directory (``LADDER_RULES`` or the shop's ``programme:``) is only a *proposal*:
  :meth:`ProgrammeRegistry.bootstrap` activates it by itself only for a shop that has no version
  yet; otherwise it is stored (so ``ladder rules list`` shows it) and reported, never activated.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import audit, rulefile, store
from .clock import as_utc, iso, utcnow
from .engine import CompiledProgramme, get_engine
from .errors import BadRequest, ConfigError, LadderError, NotFound, RuleFileError, RuleFileProblem
from .programme import Programme
from .shop import ShopConfig
from .timeline import CURRENT_SEMANTICS, SEMANTICS, Segment, Timeline

log = logging.getLogger(__name__)

#: how often (seconds) a process checks whether a shop's activations changed
DEFAULT_POLL = 2.0
#: an activation instant this far in the past still counts as "now" (clocks, network)
PAST_TOLERANCE = timedelta(seconds=1)
#: the audit action of an activation
ACTIVATED = "programme_activated"
#: the author of the activation a shop gets when it has no version yet
FIRST_START = "ladder (first start)"
FIRST_USE = "ladder (first use)"
#: the author of a version a start-up found in the rules directory and stored without activating it
STARTUP_STORED = "ladder (read at start, not activated)"


class ActivationRefused(LadderError):
    """An activation that would break the shop's timeline (a dropped stage without a map, a
    stage map naming unknown stages, another currency); nothing was changed."""

    code = "activation_refused"
    http_status = 422
    exit_code = 1



# ---------------------------------------------------------------- versions
@dataclass(frozen=True)
class StoredVersion:
    """One ``programme_versions`` row as listed (without its text)."""

    version: str
    source: str
    author: str | None
    created_at: datetime | None
    has_files: bool


def store_version(conn: sa.Connection, programme: Programme, files: Mapping[str, str] | None,
                  source: str | None = None, author: str | None = None) -> bool:
    """Store the version of ``programme`` once, with its rule files' text ``{name: text}``, where
    it came from and who stored it; True when the row is new.  A version stored before the files
    were kept gets them now; anything else about a stored version never changes."""
    t = store.programme_versions
    version = programme.version
    row = conn.execute(sa.select(t.c.version, t.c.files).where(t.c.version == version)).first()
    if row is not None:
        if row.files is None and files:
            conn.execute(t.update().where(t.c.version == version, t.c.files.is_(None)).values(files=dict(files)))
        return False
    values = {"version": version, "source": str(source or programme.source or "")[:1024],
              "canonical": programme.canonical, "files": dict(files) if files else None,
              "author": author[:audit.MAX_AUTHOR] if author else None, "created_at": utcnow()}
    # two processes storing the same new version at once: one row, no error
    inserted = conn.execute(_insert(conn, t).values(**values).on_conflict_do_nothing(index_elements=["version"]))
    return bool(inserted.rowcount)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def normalise_version(value: str) -> str:
    """A version hash as the user typed it (case, blanks) → as stored; BadRequest otherwise."""
    version = (value or "").strip().lower()
    if len(version) != store.VERSION or any(c not in "0123456789abcdef" for c in version):
        raise BadRequest(f"'{value}' is not a programme version (12 hexadecimal digits, as `ladder rules list` shows)",
                         {"version": [f"expected 12 hexadecimal digits, got {value!r}"]})
    return version


def _programme_of(row: Any) -> Programme:
    """The programme of a stored version row, under the row's version."""
    try:
        if row.files:
            programme = rulefile.load_texts(row.files, source=row.source)
        else:
            programme = rulefile.load_canonical(row.canonical, source=row.source)
    except RuleFileError as exc:
        raise ConfigError(f"stored programme version {row.version} no longer loads with this release of "
                          f"loyalty-ladder: {exc.message}", {"version": [row.version]}) from None
    if programme.version != row.version:
        # a release that normalises differently: the stored identity is what awards record
        log.warning("stored programme version %s loads as %s with this release; kept as %s",
                    row.version, programme.version, row.version)
        programme = dataclasses.replace(programme, canonical=row.canonical)
    return programme


def load_version(conn: sa.Connection, version: str) -> Programme:
    """The stored programme of ``version``; NotFound when no such version is stored."""
    t = store.programme_versions
    row = conn.execute(sa.select(t).where(t.c.version == version)).first()
    if row is None:
        raise NotFound(f"no programme version {version} is stored (see `ladder rules list`)",
                       {"version": [f"unknown version {version}"]})
    return _programme_of(row)


def version_files(conn: sa.Connection, version: str) -> dict[str, str]:
    """The rule files of a stored version, ``{name: text}`` (for a version stored before files
    were kept: its normalised form as one JSON rule file, ``programme.json.yaml``)."""
    t = store.programme_versions
    row = conn.execute(sa.select(t).where(t.c.version == version)).first()
    if row is None:
        raise NotFound(f"no programme version {version} is stored (see `ladder rules list`)",
                       {"version": [f"unknown version {version}"]})
    if row.files:
        return dict(row.files)
    return {"programme.json.yaml": json.dumps(rulefile.rule_file_data(json.loads(row.canonical)), indent=2,
                                              ensure_ascii=False) + "\n"}


def stored_versions(conn: sa.Connection) -> list[StoredVersion]:
    """Every stored version, oldest first."""
    t = store.programme_versions
    rows = conn.execute(sa.select(t.c.version, t.c.source, t.c.author, t.c.created_at,
                                  t.c.files.is_not(None).label("has_files"))
                        .order_by(t.c.created_at, t.c.version)).all()
    return [StoredVersion(r.version, r.source, r.author, r.created_at, bool(r.has_files)) for r in rows]


# ---------------------------------------------------------------- activations
@dataclass(frozen=True)
class Activation:
    """One ``programme_activations`` row: ``version`` decides from ``active_from`` (None: from
    the beginning) until the next activation."""

    pk: int | None
    shop_id: str
    version: str
    active_from: datetime | None
    stage_map: Mapping[str, str] = field(default_factory=dict)
    author: str = ""
    reason: str | None = None
    created_at: datetime | None = None


def _order(a: Activation) -> tuple[Any, ...]:
    return (a.active_from is not None, a.active_from or datetime.min.replace(tzinfo=UTC), a.pk or 2**62)


def activations(conn: sa.Connection, shop_id: str) -> list[Activation]:
    """The shop's activation rows in timeline order: (active_from, NULL first; pk)."""
    pa = store.programme_activations
    rows = conn.execute(sa.select(pa).where(pa.c.shop_id == shop_id)).all()
    return sorted((Activation(r.pk, r.shop_id, r.version, r.active_from, dict(r.stage_map or {}), r.author, r.reason,
                              r.created_at) for r in rows), key=_order)


def resolve(rows: Iterable[Activation]) -> list[Activation]:
    """The activations that shape the timeline: of rows with the same ``active_from`` the later
    (higher pk) wins, and an activation of the version already in force before it changes
    nothing and is dropped."""
    by_start: dict[datetime | None, Activation] = {}
    for a in sorted(rows, key=_order):
        by_start[a.active_from] = a  # the later row with the same instant wins
    out: list[Activation] = []
    for a in sorted(by_start.values(), key=_order):
        if out and out[-1].version == a.version and not a.stage_map:
            continue
        out.append(a)
    return out


def activations_key(conn: sa.Connection, shop_id: str) -> tuple[Any, ...]:
    """Cheap identity of a shop's timeline: its activation rows (append-only: count and last pk)
    and the semantics rows (count and newest version); :attr:`Timeline.key`."""
    pa, sv = store.programme_activations, store.semantics_versions
    acts = conn.execute(sa.select(sa.func.count(), sa.func.max(pa.c.pk)).where(pa.c.shop_id == shop_id)).one()
    sem = conn.execute(sa.select(sa.func.count(), sa.func.max(sv.c.version))).one()
    return (*acts, *sem)


def semantics(conn: sa.Connection) -> tuple[tuple[datetime | None, int], ...]:
    """The fold semantics on the timeline: ``(from, version)`` in order, the first from the
    beginning; an empty table means this release's semantics throughout."""
    sv = store.semantics_versions
    rows = sorted(conn.execute(sa.select(sv.c.active_from, sv.c.version)).all(),
                  key=lambda r: (r.active_from is not None, r.active_from or datetime.min.replace(tzinfo=UTC),
                                 r.version))
    if not rows:
        return ((None, CURRENT_SEMANTICS),)
    return tuple((None if i == 0 else r.active_from, int(r.version)) for i, r in enumerate(rows))


def lock_shop(conn: sa.Connection, shop_id: str) -> None:
    """Create the shop's row when missing and hold it until the end of ``conn``'s transaction,
    so activations of one shop (and its first start) happen one after the other.  On SQLite the
    write transaction (:func:`store.begin_write`) already serialises them."""
    conn.execute(_insert(conn, store.shops).values(shop_id=shop_id, created_at=utcnow())
                 .on_conflict_do_nothing(index_elements=["shop_id"]))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(store.shops.c.shop_id).where(store.shops.c.shop_id == shop_id).with_for_update())


@dataclass(frozen=True)
class Activated:
    """What :func:`activate` did: the new row (None when nothing changed), the version it
    replaces at that instant, and the customers on the ladder, who are re-decided then."""

    programme: Programme
    activation: Activation | None
    previous: str | None = None
    customers: int = 0

    @property
    def changed(self) -> bool:
        return self.activation is not None

    @property
    def at(self) -> datetime | None:
        return self.activation.active_from if self.activation else None


def _ids(programme: Programme) -> list[str]:
    return [s.id for s in programme.stages]


def check_stage_map(old: Programme, new: Programme, stage_map: Mapping[str, str]) -> None:
    """The new version may drop stages of the one it follows only with each mapped to a stage it has."""
    old_ids, new_ids = _ids(old), _ids(new)
    errors: dict[str, list[str]] = {}
    for source, target in stage_map.items():
        problems = []
        if source not in old_ids:
            problems.append(f"'{source}' is not a stage of version {old.version} (its stages: {', '.join(old_ids)})")
        elif source in new_ids:
            problems.append(f"'{source}' is still a stage of version {new.version}: only dropped stages are mapped")
        if target not in new_ids:
            problems.append(f"'{target}' is not a stage of version {new.version} (its stages: {', '.join(new_ids)})")
        if problems:
            errors[source] = problems
    if errors:
        raise ActivationRefused("the stage map names unknown stages; nothing was changed", {"stage_map": errors})
    dropped = [s for s in old_ids if s not in new_ids and s not in stage_map]
    if dropped:
        def nearest_below(stage: str) -> str:
            # the suggestion: the highest stage kept by the new version that came before it
            kept = [x for x in old_ids[:old_ids.index(stage)] if x in new_ids]
            return kept[-1] if kept else new_ids[0]

        example = " ".join(f"--stage-map {s}={nearest_below(s)}" for s in dropped)
        raise ActivationRefused(
            f"version {new.version} drops the stage(s) {', '.join(dropped)} of version {old.version}, which decides "
            f"until then: map each to a stage of the new version ({', '.join(new_ids)}) with --stage-map OLD=NEW, "
            f"e.g. {example} (HTTP: \"stage_map\": {{\"OLD\": \"NEW\"}}); nothing was changed",
            {"stage_map": {s: [f"dropped by version {new.version}: map it to one of {', '.join(new_ids)}"]
                           for s in dropped}})


def check_follows(old: Programme, new: Programme) -> None:
    if old.settings.currency != new.settings.currency:
        raise ActivationRefused(
            f"version {new.version} is in {new.settings.currency} but the shop's programme is in "
            f"{old.settings.currency}: amounts already recorded cannot change currency; nothing was changed",
            {"currency": [f"{new.settings.currency} != {old.settings.currency}"]})


def activate(db: sa.Engine, shop_id: str, version_or_programme: str | Programme, *, at: datetime | None = None,
             stage_map: Mapping[str, str] | None = None, author: str, reason: str | None = None,
             now: datetime | None = None, files: Mapping[str, str] | None = None,
             source: str | None = None) -> Activated:
    """Make a version decide the shop's wake-ups from ``at`` (default: now; never in the past).

    ``version_or_programme``: a stored version's hash, or a validated programme (stored first,
    with ``files`` and ``source``).  One transaction: the checks, the activation row, every
    customer on the ladder set to wake at ``at`` (so the fold passes the activation instant),
    and the audit row.  A shop's first activation holds from the beginning.  Activating what
    is already in force changes nothing (``Activated.changed`` False, no row).  Raises
    BadRequest (``at`` in the past), NotFound (unknown version), ActivationRefused.
    """
    now = as_utc(now or utcnow())
    at = as_utc(at) if at is not None else now
    if at < now - PAST_TOLERANCE:
        raise BadRequest(f"an activation cannot be in the past: {iso(at)} is before now ({iso(now)}); "
                         "what was decided stays decided", {"at": ["must not be in the past"]})
    at = max(at, now)  # within the tolerance: now, so nothing already decided falls after it
    stage_map = {str(k): str(v) for k, v in (stage_map or {}).items()}
    with store.begin_write(db) as conn:
        lock_shop(conn, shop_id)
        if isinstance(version_or_programme, Programme):
            programme = version_or_programme
            store_version(conn, programme, files, source, author)
        else:
            programme = load_version(conn, normalise_version(version_or_programme))
        return _activate(conn, shop_id, programme, at, stage_map, author, reason, now, source)


def _activate(conn: sa.Connection, shop_id: str, programme: Programme, at: datetime, stage_map: dict[str, str],
              author: str, reason: str | None, now: datetime, source: str | None) -> Activated:
    rows = activations(conn, shop_id)
    previous: Programme | None = None
    if not rows:
        if stage_map:
            raise ActivationRefused("the shop has no programme version yet: there is nothing to map stages from",
                                    {"stage_map": ["the first version of a shop needs no stage map"]})
        active_from: datetime | None = None  # the first version decides from the beginning
    else:
        current = resolve(rows)
        candidate = Activation(None, shop_id, programme.version, at, stage_map)
        if [(a.active_from, a.version) for a in resolve([*rows, candidate])] == [
                (a.active_from, a.version) for a in current]:
            return Activated(programme, None, previous=programme.version)
        before = [a for i, a in enumerate(current) if i == 0 or (a.active_from is not None and a.active_from < at)]
        previous = load_version(conn, before[-1].version)
        check_follows(previous, programme)
        check_stage_map(previous, programme, stage_map)
        after = [a for a in current if a.active_from is not None and a.active_from > at]
        if after:
            following = load_version(conn, after[0].version)
            dropped = [s for s in _ids(programme) if s not in _ids(following) and s not in after[0].stage_map]
            if dropped:
                raise ActivationRefused(
                    f"version {following.version}, scheduled from {iso(after[0].active_from)}, would then drop the "
                    f"stage(s) {', '.join(dropped)} of version {programme.version} without a stage map: activate "
                    "this version after it, or activate that version again with a stage map; nothing was changed",
                    {"at": [f"before the activation of {following.version} at {iso(after[0].active_from)}"]})
        active_from = at
    pa = store.programme_activations
    pk = conn.execute(pa.insert().values(shop_id=shop_id, version=programme.version, active_from=active_from,
                                         stage_map=stage_map, author=author[:audit.MAX_AUTHOR], reason=reason,
                                         created_at=now)).inserted_primary_key[0]
    cu = store.customers
    on_ladder = int(conn.execute(sa.select(sa.func.count()).select_from(cu)
                                 .where(cu.c.shop_id == shop_id, cu.c.stage.is_not(None))).scalar() or 0)
    if active_from is not None and on_ladder:
        # the activation instant is a wake-up for everyone on the ladder
        store.wake_customers(conn, shop_id, active_from, on_ladder_only=True)
    audit.record(conn, author=author, action=ACTIVATED, shop_id=shop_id, target=programme.version, reason=reason,
                 detail={"active_from": active_from, "stage_map": stage_map,
                         "previous": previous.version if previous else None, "customers": on_ladder,
                         "source": source or programme.source}, at=now)
    activation = Activation(int(pk), shop_id, programme.version, active_from, stage_map, author, reason, now)
    return Activated(programme, activation, previous.version if previous else None, on_ladder)


# ---------------------------------------------------------------- listing
@dataclass(frozen=True)
class Listing:
    """A shop's programme versions: its activations in timeline order (each with its status:
    ``active`` now, ``scheduled``, ``past``, or ``replaced`` by a later row for the same
    instant or by the version already in force), the version active now, every stored
    version, and the fold semantics on the timeline."""

    shop_id: str
    active: str | None
    activations: tuple[tuple[Activation, str], ...]
    versions: tuple[StoredVersion, ...]
    semantics: tuple[tuple[datetime | None, int, str], ...]
    #: the version the process answering decides with now (its registry; it follows ``active``
    #: within the poll interval)
    serving: str | None = None


def listing(db: sa.Engine, shop_id: str, now: datetime | None = None) -> Listing:
    """What ``ladder rules list`` and ``GET …/programme`` show (read-only)."""
    now = as_utc(now or utcnow())
    with db.connect() as conn:
        rows = activations(conn, shop_id)
        versions = stored_versions(conn)
        sem = semantics(conn)
    effective = resolve(rows)
    deciding = [a for i, a in enumerate(effective) if i == 0 or (a.active_from is not None and a.active_from <= now)]
    active = deciding[-1] if deciding else None
    kept = {a.pk for a in effective}
    marked = []
    for a in rows:
        if a.pk not in kept:
            status = "replaced"
        elif active is not None and a.pk == active.pk:
            status = "active"
        elif a.active_from is not None and a.active_from > now:
            status = "scheduled"
        else:
            status = "past"
        marked.append((a, status))
    return Listing(shop_id, active.version if active else None, tuple(marked), tuple(versions),
                   tuple((start, v, SEMANTICS.get(v, "")) for start, v in sem))


def _activation_dict(a: Activation, status: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"pk": a.pk, "version": a.version, "active_from": a.active_from,
                           "stage_map": dict(a.stage_map), "author": a.author, "reason": a.reason,
                           "created_at": a.created_at}
    if status is not None:
        out["status"] = status
    return out


def listing_document(found: Listing) -> dict[str, Any]:
    """A listing as the data of ``documents.ProgrammeTimelineSchema`` (Python values)."""
    in_timeline = {a.version for a, _ in found.activations}
    return {"shop": found.shop_id, "active": found.active, "serving": found.serving,
            "activations": [_activation_dict(a, status) for a, status in found.activations],
            "versions": [{**dataclasses.asdict(v), "activated": v.version in in_timeline} for v in found.versions],
            "semantics": [{"version": v, "active_from": start, "meaning": meaning}
                          for start, v, meaning in found.semantics]}


def activated_document(shop_id: str, done: Activated) -> dict[str, Any]:
    """An activation's outcome as the data of ``documents.ProgrammeActivatedSchema``."""
    status = "active" if done.activation is not None and (
        done.activation.active_from is None or done.activation.active_from <= utcnow()) else "scheduled"
    return {"shop": shop_id, "version": done.programme.version, "changed": done.changed,
            "activation": _activation_dict(done.activation, status) if done.activation else None,
            "previous": done.previous, "customers": done.customers}


# ---------------------------------------------------------------- the registry
@dataclass
class _Cached:
    key: tuple[Any, ...]
    checked: float
    timeline: Timeline


@dataclass(frozen=True)
class Bootstrap:
    """What start-up found for one shop (see :meth:`ProgrammeRegistry.bootstrap`)."""

    shop_id: str
    active: str  # the version that decides now
    directory: Path
    directory_version: str | None  # None: the directory does not load
    problems: tuple[RuleFileProblem, ...] = ()
    activated: bool = False  # the directory was activated (the shop had no version)

    @property
    def differs(self) -> bool:
        return self.directory_version != self.active

    def activate_command(self) -> str:
        return f"ladder rules activate {self.directory} --shop {self.shop_id}"

    def lines(self) -> list[str]:
        """What start-up says about the shop (empty when the directory holds what is served)."""
        if self.activated:
            return [(f"shop {self.shop_id}: no programme version yet: activated {self.directory} "
                    f"(version {self.active}) from the beginning")]
        if self.directory_version is None:
            return [(f"warning: shop {self.shop_id}: the rules directory {self.directory} does not load; "
                    f"the active version {self.active} keeps serving:"),
                    *(f"  {p}" for p in self.problems)]
        if self.differs:
            return [(f"shop {self.shop_id}: serving the active version {self.active}; the rules directory "
                    f"{self.directory} holds version {self.directory_version}, which is not active "
                    "(nothing changed)"),
                    f"  to activate it: {self.activate_command()}"]
        return []


class ProgrammeRegistry:
    """The compiled versions and each shop's timeline, per process (thread-safe).

    Each version is loaded and compiled once (by version hash); a shop's timeline is read from
    its activation rows and kept until they change, which is checked (one cheap query) at most
    every ``poll`` seconds.
    """

    def __init__(self, default_path: Path | str | None, poll: float = DEFAULT_POLL):
        self.default_path = Path(default_path) if default_path else rulefile.default_programme_path()
        self.poll = poll
        self._compiled: dict[str, tuple[Programme, CompiledProgramme]] = {}
        self._timelines: dict[str, _Cached] = {}
        self._lock = threading.RLock()

    # -- the rules directory (a proposal)
    def path_for(self, shop: ShopConfig | None) -> Path:
        if shop is not None and shop.programme:
            return Path(shop.programme)
        return self.default_path

    def directory(self, shop: ShopConfig | None) -> Programme:
        """The programme in the shop's rules directory (``programme:`` of the shop, else
        ``LADDER_RULES``, else the shipped default), read now; raises RuleFileError."""
        return rulefile.load_programme(self.path_for(shop))

    def directory_files(self, shop: ShopConfig | None) -> tuple[Programme, dict[str, str]]:
        """The directory's programme and its files' text; raises RuleFileError."""
        return rulefile.load_programme_files(self.path_for(shop))

    # -- versions
    def compiled(self, programme: Programme) -> tuple[Programme, CompiledProgramme]:
        """The programme compiled (once per version and process)."""
        with self._lock:
            hit = self._compiled.get(programme.version)
            if hit is None:
                hit = (programme, get_engine().compile(programme))
                self._compiled[programme.version] = hit
            return hit

    def _version(self, conn: sa.Connection, version: str) -> tuple[Programme, CompiledProgramme]:
        with self._lock:
            hit = self._compiled.get(version)
        return hit if hit is not None else self.compiled(load_version(conn, version))

    # -- timelines
    def timeline(self, db: sa.Engine, shop: ShopConfig, key: tuple[Any, ...] | None = None) -> Timeline:
        """The shop's timeline of compiled versions (:class:`~.timeline.Timeline`, ``key`` =
        :func:`activations_key`).  A shop without any activation gets its rules directory
        activated from the beginning first (:meth:`bootstrap`).  ``key``: the caller has seen
        the rows with this key, so a cached timeline with another one is read again at once."""
        found = self._timeline(db, shop, key)
        if found is None:
            self.bootstrap(db, shop, FIRST_USE)
            found = self._timeline(db, shop, None, force=True)
            if found is None:  # pragma: no cover - bootstrap activates or raises
                raise ConfigError(f"shop {shop.id!r} has no programme version")
        return found

    def current(self, db: sa.Engine, shop: ShopConfig) -> Timeline | None:
        """The shop's timeline, or None when it has no activation yet (never writes)."""
        return self._timeline(db, shop, None)

    def _timeline(self, db: sa.Engine, shop: ShopConfig, key: tuple[Any, ...] | None,
                  force: bool = False) -> Timeline | None:
        now = time.monotonic()
        with self._lock:
            hit = self._timelines.get(shop.id)
        if hit is not None and not force and (key is None or key == hit.key) and now - hit.checked < self.poll:
            return hit.timeline
        with db.connect() as conn:
            fresh_key = activations_key(conn, shop.id)
            if hit is not None and hit.key == fresh_key:
                with self._lock:
                    hit.checked = now
                return hit.timeline
            rows = activations(conn, shop.id)
            if not rows:
                return None
            segments = []
            for a in resolve(rows):
                programme, compiled = self._version(conn, a.version)
                segments.append(Segment(a.active_from if segments else None, programme, compiled,
                                        dict(a.stage_map)))
            built = Timeline(tuple(segments), semantics(conn), key=fresh_key)
        with self._lock:
            self._timelines[shop.id] = _Cached(fresh_key, now, built)
        return built

    def active(self, db: sa.Engine, shop: ShopConfig, at: datetime | None = None
               ) -> tuple[Programme, CompiledProgramme]:
        """The version deciding ``at`` (default: now), compiled."""
        segment = self.timeline(db, shop).at(at or utcnow())
        return segment.programme, segment.evaluator

    def invalidate(self, shop_id: str | None = None) -> None:
        """Forget the cached timelines (of one shop): the next use reads them again."""
        with self._lock:
            if shop_id is None:
                self._timelines.clear()
            else:
                self._timelines.pop(shop_id, None)

    # -- start-up
    def bootstrap(self, db: sa.Engine, shop: ShopConfig, author: str = FIRST_START) -> Bootstrap:
        """At the start of a process that serves ``shop``: with no version yet, store the rules
        directory's version and activate it from the beginning; otherwise store the
        directory's version when it is new (so it is listed) and change nothing.  Says what
        start-up should report.  A directory that does not load is a warning while a version
        is active, and RuleFileError when there is none (nothing to serve)."""
        path = self.path_for(shop)
        try:
            programme, files = self.directory_files(shop)
        except RuleFileError as exc:
            programme, files, problems = None, {}, tuple(exc.problems)
        else:
            problems = ()
        with store.begin_write(db) as conn:
            lock_shop(conn, shop.id)
            rows = activations(conn, shop.id)
            if not rows:
                if programme is None:
                    raise RuleFileError(list(problems))
                store_version(conn, programme, files, str(path), author)
                _activate(conn, shop.id, programme, utcnow(), {}, author,
                          "the shop had no programme version: its rules directory is activated", utcnow(), str(path))
                active, activated = programme.version, True
            else:
                if programme is not None:  # listed, not activated: stored by the start-up that read it
                    store_version(conn, programme, files, str(path), STARTUP_STORED)
                effective = resolve(rows)
                now = utcnow()
                deciding = [a for i, a in enumerate(effective)
                            if i == 0 or (a.active_from is not None and a.active_from <= now)]
                active, activated = deciding[-1].version, False
        if activated:
            self.invalidate(shop.id)
        return Bootstrap(shop.id, active, path, programme.version if programme else None, problems, activated)
