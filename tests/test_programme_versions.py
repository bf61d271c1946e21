"""Programme versions and explicit activation: uploaded rule files validate like a directory,
versions are stored once, activations build a shop's timeline (never in the past, dropped
stages only with a map, one currency), the rules directory is only a proposal at start, and
the CLI and HTTP paths refuse an invalid programme while the active version keeps serving."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from loyalty_ladder import programmes, rulefile, store
from loyalty_ladder.cli import main
from loyalty_ladder.errors import BadRequest, NotFound, RuleFileError
from loyalty_ladder.programmes import ActivationRefused, ProgrammeRegistry
from loyalty_ladder.shop import ShopConfig

from .conftest import ADMIN_TOKEN, ROOT

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ANN = {**AUTH, "X-Ladder-Author": "ann"}
RULES = ROOT / "rules"
DEFAULT_TEXT = (RULES / "ladder.yaml").read_text()
#: the default programme with a longer refund window: another version, the same stages
LONGER = DEFAULT_TEXT.replace("refund_window_days: 30", "refund_window_days: 31")
BROKEN = DEFAULT_TEXT.replace("{fact: orders_count, gte: 3}", "{fact: order_count, gte: 3}")

SMALL = """\
programme: {name: Small, currency: EUR}
stages:
  - id: potential
  - id: buyer
    when: {fact: orders_count, gte: 1}
  - id: loyal
    when: {fact: orders_count, gte: 3}
"""
#: SMALL without the stage loyal (fan instead)
DROPS_LOYAL = SMALL.replace("id: loyal", "id: fan")
IN_USD = SMALL.replace("currency: EUR", "currency: USD")


def small(text: str = SMALL):
    return rulefile.load_text(text, "ladder.yaml")


def rows(db, table):
    with db.connect() as conn:
        return conn.execute(sa.select(table)).mappings().all()


def add_customer(db, customer_id: str, stage: str | None, wake: datetime | None, shop: str = "default") -> None:
    with store.begin_write(db) as conn:
        conn.execute(store.customers.insert().values(shop_id=shop, customer_id=customer_id, stage=stage, lapsed=False,
                                                     turn=1, state={}, next_wake_at=wake,
                                                     updated_at=datetime.now(UTC)))


def wake_of(db, customer_id: str) -> datetime | None:
    with db.connect() as conn:
        return conn.execute(sa.select(store.customers.c.next_wake_at)
                            .where(store.customers.c.customer_id == customer_id)).scalar()


# ------------------------------------------------------------------ rule files from texts
@pytest.mark.parametrize("directory", ["rules", "rules/examples/b2b-wholesale", "rules/examples/fashion-shop"])
def test_uploaded_texts_are_the_same_programme_as_the_directory(directory):
    path = ROOT / directory
    from_disk, files = rulefile.load_programme_files(path)
    assert set(files) == {p.name for p in path.glob("*.yaml")}
    assert rulefile.load_texts(files, source="api").version == from_disk.version
    # a stored version's normalised JSON loads back to the same version (rows from before 0005),
    # the same programme item for item (the engine compiles one programme per version)
    stored = rulefile.load_canonical(from_disk.canonical)
    assert stored.version == from_disk.version
    assert (stored.settings, stored.stages, stored.subgroups) == (from_disk.settings, from_disk.stages,
                                                                  from_disk.subgroups)
    assert sorted(stored.rewards, key=lambda r: r.id) == sorted(from_disk.rewards, key=lambda r: r.id)


def test_every_kind_of_trigger_and_condition_survives_the_normalised_form():
    programme = rulefile.load_text("""
stages:
  - id: a
  - id: b
    when: {all: [{fact: first_order_at, lt: 2026-01-01T00:00:00Z}, {not: {fact: tags, contains: vip}},
                 {any: [{fact: net_spent, gte: 100.5}, {fact: orders_count, gte: 4}]}]}
    min_stay_days: 3
    lapse_after_days: 10
subgroups:
  - {id: s, when: {fact: orders_count, gte: 2}}
rewards:
  - {id: r1, type: tag, on: {lapse: any}, params: {tag: x}}
  - {id: r2, type: tag, on: {event: review, stages: [b]}, subgroups: [s], params: {tag: y}}
  - {id: r3, type: tag, on: {period: month}, params: {tag: z}}
  - {id: r4, type: tag, on: {order: [a, b]}, when: {fact: orders_count, gte: 1}, params: {tag: w}}
""")
    assert rulefile.load_canonical(programme.canonical).version == programme.version


def test_an_upload_is_validated_like_a_directory_with_positions_per_file(tmp_path):
    (tmp_path / "ladder.yaml").write_text(BROKEN)
    on_disk = rulefile.validate(tmp_path)
    uploaded = rulefile.validate_texts({"ladder.yaml": BROKEN})
    assert [(p.line, p.column, p.message) for p in uploaded] == [(p.line, p.column, p.message) for p in on_disk]
    assert [str(p) for p in uploaded] == ["ladder.yaml:59:16: unknown fact 'order_count' — did you mean 'orders_count'?"]
    # two files: merged in name order, each problem in its own file
    split = {"10-stages.yaml": "stages:\n  - id: potential\n", "20-rewards.yaml": "rewards:\n  - {id: x}\n"}
    assert {p.path for p in rulefile.validate_texts(split)} == {"20-rewards.yaml"}


@pytest.mark.parametrize("name, why", [
    ("../ladder.yaml", "without directories"), ("sub/ladder.yaml", "without directories"),
    ("sub\\ladder.yaml", "without directories"), (".hidden.yaml", "hidden"), ("ladder.txt", ".yaml or .yml"),
    ("", "needs a name"), ("a\x01.yaml", "control characters"),
])
def test_an_upload_names_plain_rule_files_only(name, why):
    problems = rulefile.validate_texts({name: SMALL, "ok.yaml": "rewards: []\n"})
    assert len(problems) == 1 and why in problems[0].message
    with pytest.raises(RuleFileError):
        rulefile.load_texts({name: SMALL})


def test_an_empty_upload_or_one_that_is_not_text_is_refused():
    assert "no rule files" in rulefile.validate_texts({})[0].message
    assert "must be text" in rulefile.validate_texts({"ladder.yaml": 3})[0].message


# ------------------------------------------------------------------ versions and activations
def test_a_version_is_stored_once_with_its_files_source_and_author(engine):
    programme = small()
    with store.begin_write(engine) as conn:
        assert programmes.store_version(conn, programme, {"ladder.yaml": SMALL}, "/srv/rules", "ann") is True
        assert programmes.store_version(conn, programme, {"ladder.yaml": "# other text\n" + SMALL}, "api", "bob") is False
    (row,) = rows(engine, store.programme_versions)
    assert (row["version"], row["source"], row["author"], row["files"]) == (
        programme.version, "/srv/rules", "ann", {"ladder.yaml": SMALL})
    with engine.connect() as conn:
        assert programmes.load_version(conn, programme.version).version == programme.version
        assert programmes.version_files(conn, programme.version) == {"ladder.yaml": SMALL}
        with pytest.raises(NotFound):
            programmes.load_version(conn, "0" * 12)


def test_activate_list_and_roll_back(engine):
    t0 = datetime.now(UTC)
    first = programmes.activate(engine, "default", small(), author="ann", files={"ladder.yaml": SMALL}, now=t0)
    assert first.changed and first.at is None and first.previous is None  # the first version: from the beginning
    longer = small(SMALL.replace("Small", "Small 2"))
    t1 = t0 + timedelta(seconds=1)
    second = programmes.activate(engine, "default", longer, author="bob", reason="renamed", now=t1)
    assert second.changed and second.at == t1 and second.previous == first.programme.version
    t2 = t1 + timedelta(seconds=1)
    back = programmes.activate(engine, "default", first.programme.version, author="ann", reason="rollback", now=t2)
    assert back.changed and back.previous == longer.version
    found = programmes.listing(engine, "default", now=t2 + timedelta(seconds=1))
    assert found.active == first.programme.version
    assert [(a.version, a.author, status) for a, status in found.activations] == [
        (first.programme.version, "ann", "past"), (longer.version, "bob", "past"), (first.programme.version, "ann", "active")]
    assert {v.version for v in found.versions} == {first.programme.version, longer.version}
    audit = rows(engine, store.audit_log)
    assert [(r["action"], r["author"], r["target"], r["reason"]) for r in audit] == [
        ("programme_activated", "ann", first.programme.version, None),
        ("programme_activated", "bob", longer.version, "renamed"),
        ("programme_activated", "ann", first.programme.version, "rollback")]
    assert audit[2]["detail"]["previous"] == longer.version


def test_activating_what_is_already_in_force_changes_nothing(engine):
    programmes.activate(engine, "default", small(), author="ann")
    again = programmes.activate(engine, "default", small(), author="ann")
    assert not again.changed and again.activation is None
    assert len(rows(engine, store.programme_activations)) == 1 and len(rows(engine, store.audit_log)) == 1


def test_an_activation_in_the_past_is_refused_and_changes_nothing(engine):
    programmes.activate(engine, "default", small(), author="ann")
    now = datetime.now(UTC)
    with pytest.raises(BadRequest) as refused:
        programmes.activate(engine, "default", small(DROPS_LOYAL), stage_map={"loyal": "fan"}, author="ann",
                            at=now - timedelta(minutes=5), now=now)
    assert "past" in refused.value.message and refused.value.errors == {"at": ["must not be in the past"]}
    assert len(rows(engine, store.programme_activations)) == 1
    # a second of clock difference is "now"
    assert programmes.activate(engine, "default", small(DROPS_LOYAL), stage_map={"loyal": "fan"}, author="ann",
                               at=now - timedelta(milliseconds=500), now=now).changed


def test_a_dropped_stage_needs_a_map_to_a_stage_the_new_version_has(engine):
    programmes.activate(engine, "default", small(), author="ann")
    with pytest.raises(ActivationRefused) as refused:
        programmes.activate(engine, "default", small(DROPS_LOYAL), author="ann")
    message = refused.value.message
    assert "drops the stage(s) loyal" in message and "--stage-map OLD=NEW" in message
    assert "--stage-map loyal=buyer" in message
    assert set(refused.value.errors["stage_map"]) == {"loyal"}
    with pytest.raises(ActivationRefused) as unknown:
        programmes.activate(engine, "default", small(DROPS_LOYAL), stage_map={"loyal": "gold"}, author="ann")
    assert "'gold' is not a stage" in unknown.value.errors["stage_map"]["loyal"][0]
    with pytest.raises(ActivationRefused) as kept:
        programmes.activate(engine, "default", small(DROPS_LOYAL), stage_map={"loyal": "fan", "buyer": "fan"},
                            author="ann")
    assert "still a stage" in kept.value.errors["stage_map"]["buyer"][0]
    assert len(rows(engine, store.programme_activations)) == 1  # nothing of the refused ones
    done = programmes.activate(engine, "default", small(DROPS_LOYAL), stage_map={"loyal": "fan"}, author="ann")
    assert done.changed and done.activation.stage_map == {"loyal": "fan"}
    assert rows(engine, store.programme_activations)[-1]["stage_map"] == {"loyal": "fan"}


def test_another_currency_is_refused(engine):
    programmes.activate(engine, "default", small(), author="ann")
    with pytest.raises(ActivationRefused) as refused:
        programmes.activate(engine, "default", small(IN_USD), author="ann")
    assert refused.value.errors == {"currency": ["USD != EUR"]}


def test_every_customer_on_the_ladder_wakes_at_the_activation_instant(engine):
    programmes.activate(engine, "default", small(), author="ann")
    now = datetime.now(UTC)
    at = now + timedelta(hours=1)
    add_customer(engine, "idle", "buyer", None)
    add_customer(engine, "later", "buyer", at + timedelta(days=3))
    add_customer(engine, "sooner", "loyal", at - timedelta(minutes=10))
    add_customer(engine, "off-ladder", None, None)
    add_customer(engine, "other-shop", "buyer", None, shop="other")
    done = programmes.activate(engine, "default", small(SMALL.replace("Small", "Later")), author="ann", at=at, now=now)
    assert done.customers == 3 and done.at == at
    assert wake_of(engine, "idle") == at and wake_of(engine, "later") == at
    assert wake_of(engine, "sooner") == at - timedelta(minutes=10)
    assert wake_of(engine, "off-ladder") is None
    assert wake_of(engine, "other-shop") is None


def test_a_scheduled_activation_decides_from_its_instant_and_can_be_replaced(engine):
    first = programmes.activate(engine, "default", small(), author="ann").programme
    now = datetime.now(UTC)
    at = now + timedelta(days=1)
    later = small(SMALL.replace("Small", "Tomorrow"))
    programmes.activate(engine, "default", later, author="ann", at=at, now=now)
    registry = ProgrammeRegistry(RULES)
    shop = ShopConfig(id="default", platform="generic")
    timeline = registry.timeline(engine, shop)
    assert [s.version for s in timeline.segments] == [first.version, later.version]
    assert timeline.at(now).version == first.version and timeline.at(at).version == later.version
    assert registry.active(engine, shop)[0].version == first.version
    assert [s for _, s in programmes.listing(engine, "default", now=now).activations] == ["active", "scheduled"]
    # the same instant again with the version in force before it: the schedule is cancelled
    programmes.activate(engine, "default", first.version, author="ann", at=at, now=now)
    registry.invalidate()
    assert [s.version for s in registry.timeline(engine, shop).segments] == [first.version]
    assert [s for _, s in programmes.listing(engine, "default", now=now).activations] == ["active", "replaced",
                                                                                           "replaced"]


def test_an_unknown_or_malformed_version_is_refused(engine):
    with pytest.raises(NotFound):
        programmes.activate(engine, "default", "abcdef012345", author="ann")
    with pytest.raises(BadRequest):
        programmes.activate(engine, "default", "latest", author="ann")


# ------------------------------------------------------------------ the registry and start-up
def test_the_registry_re_reads_a_timeline_only_when_its_rows_changed(engine):
    registry = ProgrammeRegistry(RULES, poll=3600)
    shop = ShopConfig(id="default", platform="generic")
    programmes.activate(engine, "default", small(), author="ann")
    first = registry.timeline(engine, shop)
    assert registry.timeline(engine, shop) is first  # cached
    programmes.activate(engine, "default", small(SMALL.replace("Small", "New")), author="ann")
    assert registry.timeline(engine, shop) is first  # within the poll interval
    with engine.connect() as conn:
        key = programmes.activations_key(conn, "default")
    fresh = registry.timeline(engine, shop, key=key)  # a caller who has seen newer rows
    assert fresh is not first and fresh.key == key and len(fresh.segments) == 2
    registry.poll = 0
    assert registry.timeline(engine, shop) is fresh  # checked again: unchanged rows, the same timeline
    # each version is compiled once per process
    assert fresh.segments[0].evaluator is first.segments[0].evaluator


def test_a_shop_without_a_version_gets_its_directory_from_the_beginning(engine):
    registry = ProgrammeRegistry(RULES)
    shop = ShopConfig(id="default", platform="generic")
    report = registry.bootstrap(engine, shop)
    directory = rulefile.load_programme(RULES)
    assert report.activated and report.active == directory.version and report.lines()
    (row,) = rows(engine, store.programme_activations)
    assert (row["version"], row["active_from"], row["author"]) == (directory.version, None, "ladder (first start)")
    assert rows(engine, store.shops)[0]["shop_id"] == "default"
    again = registry.bootstrap(engine, shop)
    assert not again.activated and not again.differs and again.lines() == []


def test_start_up_with_a_changed_directory_changes_nothing_and_names_both_versions(engine, tmp_path):
    (tmp_path / "ladder.yaml").write_text(DEFAULT_TEXT)
    registry = ProgrammeRegistry(tmp_path)
    shop = ShopConfig(id="default", platform="generic")
    served = registry.bootstrap(engine, shop).active
    (tmp_path / "ladder.yaml").write_text(LONGER)
    report = registry.bootstrap(engine, shop)
    proposed = rulefile.load_text(LONGER).version
    assert (report.active, report.directory_version, report.activated) == (served, proposed, False)
    text = "\n".join(report.lines())
    assert served in text and proposed in text and f"ladder rules activate {tmp_path} --shop default" in text
    assert [r["version"] for r in rows(engine, store.programme_activations)] == [served]
    assert registry.active(engine, shop)[0].version == served
    # the proposal is stored, so it is listed (not in the timeline)
    listed = programmes.listing(engine, "default")
    assert {v.version for v in listed.versions} == {served, proposed} and listed.active == served


def test_a_broken_directory_keeps_the_active_version_or_stops_a_shop_with_none(engine, tmp_path):
    (tmp_path / "ladder.yaml").write_text(BROKEN)
    registry = ProgrammeRegistry(tmp_path)
    with pytest.raises(RuleFileError):
        registry.bootstrap(engine, ShopConfig(id="fresh", platform="generic"))
    assert rows(engine, store.programme_activations) == []
    programmes.activate(engine, "default", rulefile.load_programme(RULES), author="ann")
    report = registry.bootstrap(engine, ShopConfig(id="default", platform="generic"))
    lines = report.lines()
    assert report.directory_version is None and lines[0].startswith("warning:")
    assert "order_count" in lines[1] and "ladder.yaml:59:16" in lines[1]


def test_a_version_stored_before_its_files_were_kept_still_serves(tmp_path):
    """A database of the previous release: the version row has no files; migration 0005 turns
    the shop's active version into its first activation, which loads from the normalised JSON."""
    db = store.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    store.upgrade(db, "0004")
    directory = rulefile.load_programme(RULES)
    with store.begin_write(db) as conn:
        conn.execute(sa.text("INSERT INTO programme_versions (version, source, canonical, created_at) "
                             "VALUES (:v, 'rules', :c, '2026-01-01 00:00:00')"),
                     {"v": directory.version, "c": directory.canonical})
        conn.execute(sa.text("INSERT INTO shops (shop_id, active_version, created_at) "
                             "VALUES ('default', :v, '2026-01-01 00:00:00')"), {"v": directory.version})
    store.upgrade(db)
    registry = ProgrammeRegistry(RULES)
    timeline = registry.timeline(db, ShopConfig(id="default", platform="generic"))
    assert [s.version for s in timeline.segments] == [directory.version]
    with db.connect() as conn:
        files = programmes.version_files(conn, directory.version)
    assert rulefile.load_texts(files).version == directory.version
    db.dispose()


# ------------------------------------------------------------------ HTTP
def upload(client, text, headers=ANN, **extra):
    return client.post("/api/v1/shops/default/programme", json={"files": {"ladder.yaml": text}, **extra},
                       headers=headers)


def test_the_api_activates_lists_and_rolls_back(client, service):
    service.bootstrap_programmes()
    served = client.get("/api/v1/shops/default/programme", headers=AUTH).get_json()
    first = served["active"]
    assert served["serving"] == first and [a["status"] for a in served["activations"]] == ["active"]
    answer = upload(client, LONGER, reason="longer window")
    assert answer.status_code == 201, answer.get_json()
    doc = answer.get_json()
    new = rulefile.load_text(LONGER).version
    assert doc["version"] == new and doc["changed"] is True and doc["previous"] == first
    assert doc["activation"]["author"] == "ann" and doc["activation"]["reason"] == "longer window"
    listed = client.get("/api/v1/shops/default/programme", headers=AUTH).get_json()
    assert listed["active"] == listed["serving"] == new
    assert [(a["version"], a["status"]) for a in listed["activations"]] == [(first, "past"), (new, "active")]
    assert {v["version"]: v["source"] for v in listed["versions"]}[new] == "api"
    assert service.programme("default")[0].version == new  # this process at once
    same = upload(client, LONGER)
    assert same.status_code == 200 and same.get_json()["changed"] is False and same.get_json()["activation"] is None
    back = client.post("/api/v1/shops/default/programme", json={"version": first.upper()}, headers=ANN)
    assert back.status_code == 201 and back.get_json()["version"] == first
    assert service.programme("default")[0].version == first


def test_the_api_refuses_an_invalid_programme_by_file_and_keeps_the_active_one(client, service):
    service.bootstrap_programmes()
    before = service.programme("default")[0].version
    answer = client.post("/api/v1/shops/default/programme", headers=ANN, json={"files": {
        "ladder.yaml": BROKEN, "extra.yaml": "rewards:\n  - {id: oops, type: nope}\n"}})
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["code"] == "invalid_programme" and "keeps serving" in body["message"]
    assert set(body["errors"]) == {"ladder.yaml", "extra.yaml"}
    assert body["errors"]["ladder.yaml"] == [
        "ladder.yaml:59:16: unknown fact 'order_count' — did you mean 'orders_count'?"]
    bad_name = client.post("/api/v1/shops/default/programme", headers=ANN, json={"files": {"../x.yaml": SMALL}})
    assert bad_name.status_code == 422 and list(bad_name.get_json()["errors"]) == ["../x.yaml"]
    listed = client.get("/api/v1/shops/default/programme", headers=AUTH).get_json()
    assert listed["active"] == before and len(listed["activations"]) == 1
    assert service.programme("default")[0].version == before


def test_the_api_refuses_what_no_activation_can_be(client, service):
    service.bootstrap_programmes()
    url = "/api/v1/shops/default/programme"
    assert client.post(url, json={"version": "0" * 12}).status_code == 401
    no_author = client.post(url, json={"version": "0" * 12}, headers=AUTH)
    assert no_author.status_code == 400 and "X-Ladder-Author" in no_author.get_json()["errors"]
    assert client.post(url, json={"version": "0" * 12}, headers=ANN).status_code == 404
    assert client.post("/api/v1/shops/nope/programme", json={"version": "0" * 12}, headers=ANN).status_code == 404
    assert client.post(url, json={"version": "latest"}, headers=ANN).status_code == 422
    both = client.post(url, json={"version": "0" * 12, "files": {"a.yaml": SMALL}}, headers=ANN)
    assert both.status_code == 422 and both.get_json()["errors"] == {
        "_schema": ["give either files ({name: text}) or version (a stored version's hash)"]}
    past = upload(client, LONGER, at="2020-01-01T00:00:00Z")
    assert past.status_code == 400 and past.get_json()["errors"] == {"at": ["must not be in the past"]}
    naive = upload(client, LONGER, at="2030-01-01T00:00:00")
    assert naive.status_code == 422 and "at" in naive.get_json()["errors"]
    dropped = upload(client, SMALL)
    assert dropped.status_code == 422 and dropped.get_json()["code"] == "activation_refused"
    assert set(dropped.get_json()["errors"]["stage_map"]) == {"visitor", "first_purchase", "regular", "advocate"}
    repeated = client.post(url, data='{"files": {"a.yaml": "x", "a.yaml": "y"}}', headers=ANN,
                           content_type="application/json")
    assert repeated.status_code == 400 and "repeats the key" in repeated.get_json()["message"]
    assert len(client.get(url, headers=AUTH).get_json()["activations"]) == 1
    mapped = upload(client, SMALL, stage_map={"visitor": "potential", "first_purchase": "buyer", "regular": "buyer",
                                              "advocate": "loyal"})
    assert mapped.status_code == 201, mapped.get_json()
    assert mapped.get_json()["activation"]["stage_map"]["advocate"] == "loyal"


def test_a_scheduled_activation_through_the_api(client, service):
    service.bootstrap_programmes()
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    answer = upload(client, LONGER, at=at.isoformat())
    assert answer.status_code == 201
    assert answer.get_json()["activation"]["active_from"] == at.isoformat().replace("+00:00", "Z")
    assert answer.get_json()["activation"]["status"] == "scheduled"
    listed = client.get("/api/v1/shops/default/programme", headers=AUTH).get_json()
    assert [a["status"] for a in listed["activations"]] == ["active", "scheduled"]
    assert listed["active"] == rulefile.load_programme(RULES).version


# ------------------------------------------------------------------ CLI
def cli(*args, env):
    return CliRunner().invoke(main, list(args), env={"LADDER_AUTHOR": "tester", **env}, catch_exceptions=False)


@pytest.fixture
def cli_env(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ladder.yaml").write_text(DEFAULT_TEXT)
    return {"LADDER_DATABASE_URL": f"sqlite:///{tmp_path / 'ladder.db'}", "LADDER_RULES": str(rules)}, rules


def test_ladder_rules_activate_list_show_and_roll_back(cli_env, tmp_path):
    env, rules = cli_env
    first = cli("rules", "activate", env=env)
    assert first.exit_code == 0, first.output
    v1 = rulefile.load_programme(rules).version
    assert f"activated version {v1}" in first.stdout and "from the beginning" in first.stdout
    (rules / "ladder.yaml").write_text(LONGER)
    v2 = rulefile.load_programme(rules).version
    second = cli("rules", "activate", str(rules), "--reason", "longer window", "--author", "ann", env=env)
    assert second.exit_code == 0, second.output
    assert f"activated version {v2}" in second.stdout and f"after version {v1}" in second.stdout
    assert "customer(s) on the ladder are re-decided" in second.stdout
    again = cli("rules", "activate", env=env)
    assert again.exit_code == 0 and "nothing changed" in again.stdout
    listed = cli("rules", "list", env=env)
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0] == f"shop default: active version {v2}"
    assert any(line.startswith(f"past\t{v1}\t(the beginning)\ttester") for line in lines)
    assert any(line.startswith(f"active\t{v2}\t") and line.endswith("longer window") for line in lines)
    assert f"rules directory {rules}: version {v2} (active)" in lines
    doc = json.loads(cli("rules", "list", "--json", env=env).stdout)
    assert doc["active"] == v2 and [a["author"] for a in doc["activations"]] == ["tester", "ann"]
    shown = cli("rules", "show", v1, env=env)
    assert shown.exit_code == 0 and shown.stdout == DEFAULT_TEXT
    out = tmp_path / "v1"
    assert cli("rules", "show", v1, "--out", str(out), env=env).exit_code == 0
    assert (out / "ladder.yaml").read_text() == DEFAULT_TEXT
    rollback = cli("rules", "activate", "--version", v1, "--reason", "rollback", env=env)
    assert rollback.exit_code == 0 and f"activated version {v1}" in rollback.stdout
    assert json.loads(cli("rules", "list", "--json", env=env).stdout)["active"] == v1


def test_ladder_rules_activate_refuses_an_invalid_programme_and_changes_nothing(cli_env, tmp_path):
    env, rules = cli_env
    assert cli("rules", "activate", env=env).exit_code == 0
    served = rulefile.load_programme(rules).version
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ladder.yaml").write_text(BROKEN)
    refused = cli("rules", "activate", str(broken), env=env)
    assert refused.exit_code == 1
    assert f"{broken / 'ladder.yaml'}:59:16: unknown fact 'order_count'" in refused.stderr
    assert f"version {served} keeps serving" in refused.stderr and "Traceback" not in refused.output
    same = cli("rules", "activate", "--version", served, env=env)
    assert same.exit_code == 0 and "nothing changed" in same.stdout
    (rules / "ladder.yaml").write_text(LONGER)
    past = cli("rules", "activate", "--at", "2020-01-01T00:00:00Z", env=env)
    assert past.exit_code == 1 and "cannot be in the past" in past.stderr
    small_dir = tmp_path / "small"
    small_dir.mkdir()
    (small_dir / "ladder.yaml").write_text(SMALL)
    unmapped = cli("rules", "activate", str(small_dir), env=env)
    assert unmapped.exit_code == 1 and "--stage-map OLD=NEW" in unmapped.stderr
    bad_pair = cli("rules", "activate", str(small_dir), "--stage-map", "visitor", env=env)
    assert bad_pair.exit_code == 2 and "OLD=NEW" in bad_pair.stderr
    unknown = cli("rules", "activate", "--version", "abcdef012345", env=env)
    assert unknown.exit_code == 3
    doc = json.loads(cli("rules", "list", "--json", env=env).stdout)
    assert doc["active"] == served and len(doc["activations"]) == 1
    mapped = cli("rules", "activate", str(small_dir), "--stage-map", "visitor=potential", "--stage-map",
                 "first_purchase=buyer", "--stage-map", "regular=buyer", "--stage-map", "advocate=loyal", env=env)
    assert mapped.exit_code == 0, mapped.output


def test_ladder_rules_show_of_an_unknown_version(cli_env):
    env, _ = cli_env
    assert cli("rules", "activate", env=env).exit_code == 0
    missing = cli("rules", "show", "abcdef012345", env=env)
    assert missing.exit_code == 3 and "no programme version abcdef012345" in missing.stderr


def test_service_start_up_reports_per_shop(ladder_settings, tmp_path):
    """``ladder serve`` / ``worker`` call this: the second start with an edited directory
    changes nothing and says which version is served and which one the directory holds."""
    from dataclasses import replace

    from loyalty_ladder.service import LadderService

    rules = tmp_path / "edited"
    rules.mkdir()
    (rules / "ladder.yaml").write_text(DEFAULT_TEXT)
    settings = replace(ladder_settings, rules=rules)
    service = LadderService(settings)
    (report,) = service.bootstrap_programmes()
    assert report.activated
    service.db.dispose()
    (rules / "ladder.yaml").write_text(LONGER)
    service = LadderService(settings)
    (report,) = service.bootstrap_programmes()
    assert not report.activated and report.differs
    assert service.programme("default")[0].version == report.active != report.directory_version
    assert report.activate_command() == f"ladder rules activate {rules} --shop default"
    service.db.dispose()
    (rules / "ladder.yaml").write_text(BROKEN)
    service = LadderService(settings)  # a broken directory no longer stops a shop that has a version
    (report,) = service.bootstrap_programmes()
    assert report.problems and service.programme("default")[0].version == report.active
    service.db.dispose()


def test_the_cli_and_api_name_the_same_files(cli_env):
    env, rules = cli_env
    assert cli("rules", "activate", env=env).exit_code == 0
    listed = json.loads(cli("rules", "list", "--json", env=env).stdout)
    assert listed["versions"][0]["source"] == str(Path(rules).resolve())
