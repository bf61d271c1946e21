"""``ladder rules activate|list|show``: a shop's programme versions in the database.

Editing the rules directory changes nothing by itself (``ladder serve`` says when it holds a
version that is not active); ``ladder rules activate`` makes it the shop's programme from now
(or a later ``--at``), and activating a stored ``--version`` is the rollback.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .admin import author_option, resolve_author
from .base import LadderGroup, cli_settings, existing_service, main, parse_time


def pick_shop(service, shop: str | None) -> str:
    """``--shop``, else the only configured shop, else ``default``."""
    if shop is not None:
        service.shop_directory(shop)  # NotFound for an unknown one
        return shop
    ids = list(service.shops)
    if len(ids) == 1:
        return ids[0]
    if "default" in service.shops:
        return "default"
    raise click.UsageError(f"several shops are configured ({', '.join(ids)}): name one with --shop")


def parse_stage_map(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old or not new:
            raise click.BadParameter(f"'{pair}' is not OLD=NEW (a dropped stage id = a stage of the new version)",
                                     param_hint="--stage-map")
        if old in out:
            raise click.BadParameter(f"stage '{old}' is mapped twice", param_hint="--stage-map")
        out[old] = new
    return out


def _when(at) -> str:
    from ..clock import iso

    return "the beginning" if at is None else iso(at)


@main.group(cls=LadderGroup)
def rules() -> None:
    """Programme versions: activate one for a shop (or roll back), list them, show one's files."""


@rules.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--version", "version", metavar="HASH",
              help="activate this stored version instead of a directory (a rollback; see `ladder rules list`)")
@click.option("--shop", help="the shop (default: the only one configured, else 'default')")
@click.option("--at", "at", metavar="TIME", help="ISO 8601 time it takes effect (default: now; never in the past)")
@click.option("--stage-map", "stage_map", multiple=True, metavar="OLD=NEW",
              help="a stage the new version drops = the stage its customers move to (repeatable)")
@author_option
@click.option("--reason", help="why (kept in the audit log)")
@click.option("--json", "as_json", is_flag=True, help="print the POST …/programme answer instead")
def activate(directory: Path | None, version: str | None, shop: str | None, at: str | None,
             stage_map: tuple[str, ...], author: str | None, reason: str | None, as_json: bool) -> None:
    """Make DIRECTORY's programme (default: the shop's rules directory) or a stored --version the
    shop's programme from now (or --at).  What was decided before stays decided; every customer
    on the ladder is re-decided at that instant.  An invalid programme is refused with its
    problems (exit 1) and the active version keeps serving."""
    from .. import rulefile
    from ..documents import PROGRAMME_ACTIVATED
    from ..errors import RuleFileError
    from ..programmes import activated_document
    from ..service import LadderService

    if directory is not None and version is not None:
        raise click.UsageError("give DIRECTORY or --version, not both")
    when = parse_time(at, "--at")
    mapping = parse_stage_map(stage_map)
    service = LadderService(cli_settings())
    shop_id = pick_shop(service, shop)
    if version is not None:
        done = service.activate_programme(shop_id, version, author=resolve_author(author), at=when,
                                          stage_map=mapping, reason=reason)
        origin = f"stored version {done.programme.version}"
    else:
        path = directory if directory is not None else service.shop_directory(shop_id)
        try:
            programme, files = rulefile.load_programme_files(path)
        except RuleFileError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            active = service.programme_listing(shop_id).active
            kept = f"version {active} keeps serving" if active else "no version is active yet"
            click.echo(f"error: {path} does not validate; nothing changed ({kept})", err=True)
            sys.exit(1)
        source = str(Path(path).resolve())
        done = service.activate_programme(shop_id, programme, author=resolve_author(author), at=when,
                                          stage_map=mapping, reason=reason, files=files, source=source)
        origin = source
    if as_json:
        click.echo(json.dumps(PROGRAMME_ACTIVATED.dump(activated_document(shop_id, done)), indent=2,
                              ensure_ascii=False))
        return
    if not done.changed:
        click.echo(f"version {done.programme.version} ({origin}) is already the programme of shop {shop_id}: "
                   "nothing changed")
        return
    activation = done.activation
    assert activation is not None
    if done.previous is None:
        click.echo(f"activated version {activation.version} ({origin}) for shop {shop_id} from the beginning "
                   "(its first version)")
    else:
        click.echo(f"activated version {activation.version} ({origin}) for shop {shop_id} from "
                   f"{_when(activation.active_from)}, after version {done.previous}; {done.customers} "
                   f"customer(s) on the ladder are re-decided at that instant")


@rules.command(name="list")
@click.option("--shop", help="the shop (default: the only one configured, else 'default')")
@click.option("--json", "as_json", is_flag=True, help="the GET …/programme document")
def list_(shop: str | None, as_json: bool) -> None:
    """The shop's activations in timeline order (active now, scheduled, past), every stored
    version (whether this shop activated it), and the rules directory's version."""
    from .. import rulefile
    from ..documents import PROGRAMME_TIMELINE
    from ..errors import RuleFileError
    from ..programmes import listing_document

    service = existing_service()
    shop_id = pick_shop(service, shop)
    doc = PROGRAMME_TIMELINE.dump(listing_document(service.programme_listing(shop_id)))
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    path = service.shop_directory(shop_id)
    try:
        in_directory = rulefile.load_programme(path).version
    except RuleFileError as exc:
        in_directory = f"does not load ({len(exc.problems)} problem(s); `ladder validate {path}`)"
    if doc["active"]:
        click.echo(f"shop {shop_id}: active version {doc['active']}")
    else:
        click.echo(f"shop {shop_id}: no active version yet (the first start activates the rules directory {path})")
    click.echo("")
    click.echo("activations (timeline order):")
    click.echo("status\tversion\tactive_from\tauthor\tstage_map\treason")
    for a in doc["activations"]:
        stage_map = ",".join(f"{k}={v}" for k, v in a["stage_map"].items()) or "-"
        click.echo("\t".join((a["status"], a["version"], a["active_from"] or "(the beginning)", a["author"],
                              stage_map, (a["reason"] or "").replace("\n", " "))))
    if not doc["activations"]:
        click.echo("(none)")
    click.echo("")
    click.echo("stored versions:")
    click.echo("version\tin_timeline\tstored_at\tauthor\tsource")
    for v in doc["versions"]:
        click.echo("\t".join((v["version"], "yes" if v["activated"] else "no", v["stored_at"] or "",
                              v["author"] or "-", v["source"])))
    if not doc["versions"]:
        click.echo("(none)")
    click.echo("")
    click.echo(f"rules directory {path}: version {in_directory}"
               + (" (active)" if in_directory == doc["active"] else ""))
    if len(doc["semantics"]) > 1:
        for s in doc["semantics"]:
            click.echo(f"fold semantics {s['version']} from {s['active_from'] or 'the beginning'}: {s['meaning']}")


@rules.command()
@click.argument("version")
@click.option("--file", "name", help="print only this rule file")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="write the rule files into this (new or empty) directory instead, e.g. to diff it")
def show(version: str, name: str | None, out: Path | None) -> None:
    """The rule files of a stored VERSION as they were activated (one file: its text; several:
    each after a `# ==> name <==` line)."""
    from ..errors import LadderError, NotFound
    from ..programmes import normalise_version, version_files

    service = existing_service()
    with service.db.connect() as conn:
        files = version_files(conn, normalise_version(version))
    if name is not None:
        if name not in files:
            raise NotFound(f"version {version} has no file {name!r} (its files: {', '.join(sorted(files))})")
        files = {name: files[name]}
    if out is not None:
        if out.exists() and any(out.iterdir()):
            raise LadderError(f"{out} is not empty; give a new or empty directory")
        out.mkdir(parents=True, exist_ok=True)
        for file_name, text in sorted(files.items()):
            (out / file_name).write_text(text, encoding="utf-8")
            click.echo(f"wrote {out / file_name}")
        return
    if len(files) == 1:
        click.echo(next(iter(files.values())), nl=False)
        return
    for file_name, text in sorted(files.items()):
        click.echo(f"# ==> {file_name} <==")
        click.echo(text, nl=not text.endswith("\n"))
