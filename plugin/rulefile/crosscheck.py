"""Checks across items and files, once each item has been read on its own.

Ids are unique per kind, references name existing stages and subgroups, a catch-all subgroup
comes last, and lapse triggers name stages that can lapse.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from loyalty_ladder.rulewords import did_you_mean

from .positions import Item, Path_


def cross_check(items: dict[str, list[Item]]) -> None:
    """Checks across items and files: ids, references, catch-all order, lapse."""
    first_seen: dict[str, dict[str, Item]] = {}
    for kind, kind_items in items.items():
        seen = first_seen.setdefault(kind, {})
        for item in kind_items:
            if item.id is None:
                continue
            if item.id in seen:
                first = seen[item.id]
                item.source.problem((*item.path, "id"), f"duplicate {kind[:-1]} id '{item.id}' "
                                                        f"(first defined at {first.source.where((*first.path, 'id'))})")
            else:
                seen[item.id] = item
    stage_ids = list(first_seen["stages"])
    subgroup_ids = list(first_seen["subgroups"])
    lapsing = {i.id for i in items["stages"] if isinstance(i.raw, dict) and i.raw.get("lapse_after_days")}

    # catch-all subgroup must be last
    subgroups = items["subgroups"]
    for n, item in enumerate(subgroups[:-1]):
        if isinstance(item.raw, dict) and "when" not in item.raw and item.id:
            later = ", ".join(f"'{s.id}'" for s in subgroups[n + 1:] if s.id)
            item.source.problem(item.path, f"subgroup '{item.id}' has no 'when' (a catch-all) but is not last: "
                                           f"{later} could never be chosen; move it to the end")

    for reward in items["rewards"]:
        raw = reward.raw
        if not isinstance(raw, dict):
            continue
        label = f"reward '{reward.id}'" if reward.id else "this reward"
        trigger = raw.get("on")
        if isinstance(trigger, dict):
            for key in ("stage", "order", "lapse", "stages"):
                for path, ref in _refs(trigger.get(key), (*reward.path, "on", key)):
                    if ref == "any" and key in ("order", "lapse"):
                        if key == "lapse" and not lapsing and stage_ids:
                            reward.source.problem(path, f"{label} is triggered on lapse, but no stage has "
                                                        "'lapse_after_days', so nobody can lapse")
                        continue
                    if ref not in stage_ids:
                        if stage_ids:
                            hint = did_you_mean(ref, stage_ids) or "; stages: " + ", ".join(stage_ids)
                            reward.source.problem(path, f"unknown stage '{ref}'{hint}")
                    elif key == "lapse" and ref not in lapsing:
                        reward.source.problem(path, f"{label} is triggered on lapse in stage '{ref}', which has "
                                                    "no 'lapse_after_days', so it can never lapse")
        for path, ref in _refs(raw.get("subgroups"), (*reward.path, "subgroups")):
            if ref not in subgroup_ids:
                hint = did_you_mean(ref, subgroup_ids) or (
                    "; subgroups: " + ", ".join(subgroup_ids) if subgroup_ids else "; the programme has no subgroups"
                )
                reward.source.problem(path, f"unknown subgroup '{ref}'{hint}")


def _refs(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, ref in enumerate(value):
            if isinstance(ref, str):
                yield (*path, i), ref

