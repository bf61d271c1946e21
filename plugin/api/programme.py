"""A shop's programme versions (admin token): ``GET /api/v1/shops/<shop>/programme`` shows the
timeline of activations, the version active now and every stored version;
``POST /api/v1/shops/<shop>/programme`` activates rule files (``{"files": {name: text}}``) or a
stored version (``{"version": hash}``, a rollback), from now or a later ``at``, with a
``stage_map`` when the new version drops stages.  Every activation names its author in the
``X-Ladder-Author`` header and is in the audit log.

A programme that does not validate is refused with 422 ``invalid_programme`` and its problems
keyed by file name (``"name:line:col: message"``, as ``ladder validate`` prints them); the
active version keeps serving.  Every process picks an activation up within seconds.
"""
from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .. import rulefile
from ..documents import ProgrammeActivatedSchema, ProgrammeTimelineSchema
from ..errors import RuleFileError
from ..globals import ladder
from ..programmes import activated_document, listing_document
from .auth import ADMIN_SECURITY, require_admin
from .boundary import AUTHOR_HEADER, json_body, require_author
from .responses import error_responses

URL_PREFIX = "/api/v1/shops"
blp = Blueprint("programme", __name__, description="Programme versions: the timeline, activation, rollback")
blp.before_request(require_admin)

#: the ``source`` recorded for rule files uploaded through the API
UPLOAD_SOURCE = "api"
MAX_REASON = 2000


class ActivateProgrammeSchema(Schema):
    """``POST …/programme``: rule files or a stored version, from now or a later instant."""

    files = fields.Dict(keys=fields.String(), values=fields.String(),
                        metadata={"description": "the rule files, {name: text}: *.yaml / *.yml names without "
                                                 "directories, validated like a rules directory"})
    version = fields.String(validate=validate.Regexp(r"^\s*[0-9a-fA-F]{12}\s*$",
                                                     error="expected a programme version: 12 hexadecimal digits"),
                            metadata={"description": "a stored version (rollback), as GET …/programme lists them"})
    stage_map = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=64)),
                            values=fields.String(validate=validate.Length(min=1, max=64)),
                            load_default=dict,
                            metadata={"description": "dropped stage id → a stage of the new version"})
    at = fields.AwareDateTime(format="iso", metadata={"description": "when it takes effect (default: now); "
                                                                     "never in the past"})
    reason = fields.String(allow_none=True, validate=validate.Length(max=MAX_REASON))

    @validates_schema
    def _one_of(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("files" in data) == ("version" in data):
            raise ValidationError("give either files ({name: text}) or version (a stored version's hash)",
                                  "_schema")


AUTHOR_PARAMETER = {"in": "header", "name": AUTHOR_HEADER, "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "who performs the activation (kept in the audit log)"}


def _before_activation() -> None:
    """An activation names its author before anything else is looked at, and a JSON body that
    repeats a key (two files of one name) is refused before it is parsed into something that
    silently kept one of them."""
    if request.method != "POST":
        return
    require_author()
    if request.is_json:
        try:
            json_body()
        except RecursionError:
            pass  # the body's parser answers it


blp.before_request(_before_activation)


def problems_by_file(exc: RuleFileError, files: dict[str, str]) -> dict[str, list[str]]:
    """The problems of an uploaded programme keyed by the file they are in (``_schema`` for
    those of the upload as a whole)."""
    out: dict[str, list[str]] = {}
    for problem in exc.problems:
        out.setdefault(problem.path if problem.path in files else "_schema", []).append(str(problem))
    return out


@blp.route("/<string:shop>/programme")
class ShopProgramme(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=error_responses(
        _400="an invalid shop id in the URL", _401="missing or wrong admin token", _404="unknown shop"))
    @blp.response(200, ProgrammeTimelineSchema, description="the shop's activations, the version active now, "
                  "the stored versions and the fold's semantics")
    def get(self, shop: str):
        """The shop's programme versions: the timeline, the active version, every stored version."""
        return listing_document(ladder().service.programme_listing(shop))

    @blp.doc(security=ADMIN_SECURITY, parameters=[AUTHOR_PARAMETER], responses=error_responses(
        _400=f"the {AUTHOR_HEADER} header is missing, the body is not JSON or repeats a key, `at` is in the "
             "past, or an invalid shop id in the URL; nothing changed",
        _401="missing or wrong admin token",
        _404="unknown shop, or no such stored version",
        _413="the body is larger than the limit (max_body_bytes)",
        _422="invalid_programme: the rule files do not validate (errors keyed by file name, each "
             "\"name:line:col: message\"); activation_refused: a dropped stage without a stage map, a map to an "
             "unknown stage, another currency; or a malformed body. The active version keeps serving",
        _503="the store is briefly busy or unavailable (Retry-After); nothing changed",
    ))
    @blp.arguments(ActivateProgrammeSchema)
    @blp.response(201, ProgrammeActivatedSchema, description="activated: the activation and how many customers "
                  "are re-decided at its instant")
    @blp.alt_response(200, schema=ProgrammeActivatedSchema, description="already in force: nothing changed")
    def post(self, body: dict[str, Any], shop: str):
        """Activate rule files or a stored version for the shop, from now or a later instant.

        The version decides every wake-up from its instant on; what was decided before stays
        decided.  Rollback: activate an older stored version.
        """
        author = require_author()  # checked before the body, too
        service = ladder().service
        service.shop(shop)
        what: Any
        files = body.get("files")
        if files is not None:
            try:
                what = rulefile.load_texts(files, source=UPLOAD_SOURCE)
            except RuleFileError as exc:
                exc.errors = problems_by_file(exc, files)
                exc.message = (f"the programme does not validate ({len(exc.problems)} problem(s)); "
                               "the active version keeps serving")
                raise
        else:
            what = body["version"].strip().lower()
        done = service.activate_programme(shop, what, author=author, at=body.get("at"),
                                          stage_map=body.get("stage_map"), reason=body.get("reason"),
                                          files=files, source=UPLOAD_SOURCE if files is not None else None)
        document = activated_document(shop, done)
        return document, (201 if done.changed else 200)
