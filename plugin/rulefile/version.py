"""The :class:`~loyalty_ladder.programme.Programme` built from loaded items, and its version.

The version is the hash of :func:`programme_data`, the normalised programme: comments,
formatting, file boundaries, number spelling and the order of rewards do not change it.
"""
from __future__ import annotations

from dataclasses import fields
from decimal import Decimal
from typing import Any

from loyalty_ladder.programme import (
    Programme,
    Reward,
    Settings,
    Stage,
    Subgroup,
    canonical_json,
    condition_to_data,
)

from .positions import Item

#: settings newer than the first programme versions: (name → default)
_LATER_SETTINGS = {f.name: f.default for f in fields(Settings) if f.name in ("point_value", "points_reminder_days")}


def title(identifier: str) -> str:
    """The default display name of an id (``first_purchase`` → "First Purchase")."""
    return identifier.replace("_", " ").replace("-", " ").title()


def build(settings: Settings, items: dict[str, list[Item]], source: str) -> Programme:
    """The programme of validated ``items``, with the canonical text its version is the hash of."""
    stages = tuple(
        Stage(id=d["id"], name=d.get("name") or title(d["id"]), when=d.get("when"),
              min_stay_days=d["min_stay_days"], lapse_after_days=d["lapse_after_days"])
        for d in (i.loaded for i in items["stages"] if i.loaded is not None)
    )
    subgroups = tuple(
        Subgroup(id=d["id"], name=d.get("name") or title(d["id"]), when=d.get("when"))
        for d in (i.loaded for i in items["subgroups"] if i.loaded is not None)
    )
    rewards = tuple(
        Reward(id=d["id"], type=d["type"], trigger=d["on"], when=d.get("when"), subgroups=d["subgroups"],
               params=d["params"], name=d.get("name") or title(d["id"]))
        for d in (i.loaded for i in items["rewards"] if i.loaded is not None)
    )
    programme = Programme(settings=settings, stages=stages, subgroups=subgroups, rewards=rewards, source=source)
    return Programme(settings=settings, stages=stages, subgroups=subgroups, rewards=rewards, source=source,
                     canonical=canonical_json(programme_data(programme)))


def programme_data(programme: Programme) -> dict[str, Any]:
    """The normalised data of a programme: what its version hash covers.

    Defaults are filled in; comments, formatting, file boundaries, number spelling and
    the order of rewards (which has no meaning) are not part of it.
    """
    s = programme.settings
    settings: dict[str, Any] = {
        "name": s.name, "currency": s.currency, "refund_window_days": s.refund_window_days,
        "default_margin": str(s.default_margin), "image_client_tag": s.image_client_tag,
    }
    # settings added later are part of the data only where they differ from their default, so a
    # programme that does not use them keeps the version it had before they existed
    for name, default in _LATER_SETTINGS.items():
        value = getattr(s, name)
        if value != default:
            settings[name] = str(value) if isinstance(value, Decimal) else value
    return {
        "programme": settings,
        "stages": [
            {"id": st.id, "name": st.name, "when": condition_to_data(st.when), "min_stay_days": st.min_stay_days,
             "lapse_after_days": st.lapse_after_days}
            for st in programme.stages
        ],
        "subgroups": [
            {"id": sg.id, "name": sg.name, "when": condition_to_data(sg.when)} for sg in programme.subgroups
        ],
        "rewards": sorted(
            (
                {"id": r.id, "name": r.name, "type": r.type,
                 "on": {"kind": r.trigger.kind, "stages": sorted(r.trigger.stages), "every": r.trigger.every,
                        "event": r.trigger.event},
                 "when": condition_to_data(r.when), "subgroups": sorted(r.subgroups), "params": dict(r.params)}
                for r in programme.rewards
            ),
            key=lambda r: r["id"],
        ),
    }

