"""Which programme each shop runs: loaded from its directory once per process, compiled, and
recorded in the database (the version row and the shop's active version)."""
from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from . import rulefile, store
from .clock import utcnow
from .engine import CompiledProgramme, get_engine
from .programme import Programme
from .shop import ShopConfig


class ProgrammeRegistry:
    """Loads each programme directory once and keeps it compiled, per process."""

    def __init__(self, default_path: Path | None):
        self.default_path = Path(default_path) if default_path else rulefile.default_programme_path()
        self._cache: dict[Path, tuple[Programme, CompiledProgramme]] = {}
        self._lock = threading.Lock()

    def path_for(self, shop: ShopConfig | None) -> Path:
        if shop is not None and shop.programme:
            return Path(shop.programme)
        return self.default_path

    def get(self, shop: ShopConfig | None = None) -> tuple[Programme, CompiledProgramme]:
        path = self.path_for(shop).resolve()
        with self._lock:
            hit = self._cache.get(path)
            if hit is None:
                programme = rulefile.load_programme(path)
                hit = (programme, get_engine().compile(programme))
                self._cache[path] = hit
            return hit


def record_version(conn: sa.Connection, shop_id: str, programme: Programme) -> None:
    """Store the programme version (once) and make it the shop's active one (idempotent)."""
    t_ver, t_shop = store.programme_versions, store.shops
    if conn.execute(sa.select(t_ver.c.version).where(t_ver.c.version == programme.version)).first() is None:
        conn.execute(t_ver.insert().values(version=programme.version, source=str(programme.source),
                                           canonical=programme.canonical, created_at=utcnow()))
    row = conn.execute(sa.select(t_shop).where(t_shop.c.shop_id == shop_id)).first()
    if row is None:
        conn.execute(t_shop.insert().values(shop_id=shop_id, active_version=programme.version, created_at=utcnow()))
    elif row.active_version != programme.version:
        conn.execute(t_shop.update().where(t_shop.c.shop_id == shop_id).values(active_version=programme.version))
