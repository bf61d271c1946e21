"""Customer notifications: an e-mail (SMTP from ``LADDER_SMTP_URL``) and a signed outgoing webhook.

E-mail: ``smtp://user:pass@host:port?from=loyalty@shop.example&starttls=1`` (or ``smtps://`` for
TLS from the first byte).  The message has a plain-text and an HTML part, rendered with Jinja2
from ``templates/email/<language>/<reward type>.txt|.html``; a language without its own template
for a type uses its ``default`` template, and a language without templates uses English.  A
reward type may bring its own templates (:attr:`loyalty_ladder.rewards.RewardType.templates`, a
directory laid out like ``templates/``): they are looked up after the core's, so a type without
them falls back to ``default`` as before.  The
subject is the ``subject`` block of the text template.

Webhook: ``POST`` of ``{"event", "shop", "customer_id", "award"}`` (compact JSON, sorted keys) to
the shop's ``notify_webhook_url``, signed like Shopify signs its webhooks: header
``X-Ladder-Hmac-Sha256`` = base64 HMAC-SHA256 of the exact body with the shop's
``webhook_secret``; ``X-Ladder-Event-Id`` is the same on every retry of one notice, so the
receiver can drop duplicates.

Marketing consent
-----------------
A notice of what the customer already earned — points credited, a privilege granted or ended (a
tag, VIP service, payment terms), a gift such as an apology for a complaint, a debt forgiven —
is transactional and always allowed.  Every *offer* — a discount of any stage or trigger (the
welcome, first- and second-order codes, a win-back), a greeting, a free service — is
*promotional* and needs consent (``accepts_marketing`` true in the latest customer data the shop
sent, or our own unsubscribe recorded since).  The rule (:func:`is_promotional`) is the reward
type's (:meth:`loyalty_ladder.rewards.RewardType.is_promotional`, :attr:`~loyalty_ladder.rewards.RewardType.promotional`):
a reward whose params say ``notify: promotional`` is promotional, one that says
``notify: transactional`` is not; otherwise the type decides, and a type that does not say is
promotional.  Without consent the notice — e-mail and outgoing webhook alike — is cancelled with
the reason "no marketing consent".

Unsubscribe
-----------
Every promotional e-mail carries an unsubscribe link (text and HTML, and the ``List-Unsubscribe``
/ ``List-Unsubscribe-Post`` headers of RFC 2369 / RFC 8058): ``<public_url>/unsubscribe/<token>``,
the token naming the shop and customer and signed with an HMAC-SHA256 of them under a server
secret (:mod:`.unsubscribe_links`: ``LADDER_SECRET_KEY``, else derived from
``LADDER_ADMIN_TOKEN``; never shown).  Without a secret a promotional e-mail is refused
(``Rejected``): it could not carry its link.  ``api/unsubscribe.py`` answers the link.
"""
from __future__ import annotations

import json
import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

from .adapters.base import hmac_sha256_base64
from .adapters.http import send
from .config import Settings
from .errors import ConfigError, Rejected, Unavailable
from .rewards import registry as reward_types
from .shop import ShopConfig
from .unsubscribe_links import public_base_url, unsubscribe_secret, unsubscribe_token

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_LOCALE = "en"
DEFAULT_TIMEOUT = 10.0
NO_CONSENT = "no marketing consent"
SIGNATURE_HEADER = "X-Ladder-Hmac-Sha256"
EVENT_ID_HEADER = "X-Ladder-Event-Id"
EVENT_HEADER = "X-Ladder-Event"
USER_AGENT = "loyalty-ladder"


@dataclass(frozen=True)
class Notice:
    """One notification to send: what happened (``award.granted`` / ``award.reversed``) to which
    award, for which customer, over which channel (``email`` / ``webhook``)."""

    channel: str
    event: str
    event_id: str
    shop_id: str
    award: Mapping[str, Any]  # outbox.award_document
    customer: Mapping[str, Any]  # outbox.customer_profile


# ================================================================ consent
def is_promotional(award: Mapping[str, Any], first_stage: str | None = None) -> bool:
    """Whether a notice of ``award`` is marketing (see the module docstring for the rule).

    ``first_stage`` is the customer's first stage on the ladder (where every contact starts).
    """
    return reward_types.of(str(award.get("type") or "")).is_promotional(award, first_stage)


def consent_problem(award: Mapping[str, Any], customer: Mapping[str, Any], first_stage: str | None) -> str | None:
    """``"no marketing consent"`` when the notice is promotional and the customer did not agree."""
    if is_promotional(award, first_stage) and customer.get("accepts_marketing") is not True:
        return NO_CONSENT
    return None


# ================================================================ SMTP settings
@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    ssl: bool = False  # smtps://: TLS from the first byte
    starttls: bool = False

    def __repr__(self) -> str:  # the password never reaches a log
        return f"SmtpTarget(host={self.host!r}, port={self.port}, sender={self.sender!r}, ssl={self.ssl}, starttls={self.starttls})"


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp[s]://[user[:password]@]host[:port]?from=ADDRESS[&starttls=1]`` → :class:`SmtpTarget`.

    ``from`` defaults to the user name when that is an address.  Ports default to 25 (smtp),
    587 (smtp with starttls) and 465 (smtps).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(f"LADDER_SMTP_URL: expected smtp://host or smtps://host, got scheme {parts.scheme!r}",
                          {"smtp_url": ["expected smtp://[user:password@]host[:port]?from=address"]})
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    starttls = query.get("starttls", "0").lower() in ("1", "true", "yes", "on")
    user = unquote(parts.username) if parts.username else None
    sender = query.get("from") or (user if user and "@" in user else None)
    if not sender:
        raise ConfigError("LADDER_SMTP_URL: no sender address: add ?from=loyalty@your-shop.example",
                          {"smtp_url": ["missing ?from=address"]})
    secure = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if secure else 587 if starttls else 25)
    except ValueError:
        raise ConfigError("LADDER_SMTP_URL: the port is not a number", {"smtp_url": ["bad port"]}) from None
    return SmtpTarget(host=parts.hostname, port=port, sender=sender, user=user,
                      password=unquote(parts.password) if parts.password else None, ssl=secure, starttls=starttls)


# ================================================================ templates
class RewardTypeTemplates(BaseLoader):
    """The templates the registered reward types bring (``RewardType.templates``), asked at each
    lookup, so a type registered after the renderer was made is found."""

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        for reward_type in reward_types.types():
            if reward_type.templates is not None:
                try:
                    return FileSystemLoader(str(reward_type.templates)).get_source(environment, template)
                except TemplateNotFound:
                    continue
        raise TemplateNotFound(template)


def _environment() -> Environment:
    return Environment(
        # the core's templates first: a type adds its own, it does not replace the shared ones
        loader=ChoiceLoader([FileSystemLoader(str(TEMPLATES_DIR)), RewardTypeTemplates()]),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,  # a typo in a template fails the test, not the customer's e-mail
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def language(locale: str | None) -> str:
    """``"de-AT"``, ``"de_AT"``, ``"DE"`` → ``"de"`` when there are German templates; else English."""
    if locale:
        lang = locale.replace("_", "-").split("-")[0].strip().lower()
        if lang and (TEMPLATES_DIR / "email" / lang).is_dir():
            return lang
    return DEFAULT_LOCALE


def _reward_name(award: Mapping[str, Any]) -> str:
    return str(award.get("reward") or award.get("type") or "reward").replace("-", " ").replace("_", " ").capitalize()


def _date(value: Any) -> str | None:
    if not value:
        return None
    return str(value)[:10]  # ISO 8601: the date part, the same in every language


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    locale: str


class EmailRenderer:
    """Renders a notice into subject, text and HTML in the customer's language."""

    def __init__(self) -> None:
        self.env = _environment()

    def context(self, notice: Notice, shop: ShopConfig, lang: str) -> dict[str, Any]:
        award = dict(notice.award)
        params = dict(award.get("params") or {})
        return {
            "lang": lang, "award": award, "params": params, "customer": dict(notice.customer),
            "reward_name": _reward_name(award), "shop_name": shop.domain or shop.id,
            "code": params.get("code"), "percent": params.get("percent"), "amount": params.get("amount"),
            "currency": params.get("currency") or shop.currency, "minimum_order": params.get("minimum_order"),
            "expires_on": _date(params.get("expires_at")), "points": params.get("points"),
            "message": params.get("message"), "description": params.get("description") or params.get("service"),
            "value": award.get("value"),
        }

    def render(self, notice: Notice, shop: ShopConfig, unsubscribe_url: str | None = None) -> RenderedEmail:
        """``unsubscribe_url``: the link a promotional e-mail carries (the base templates show it)."""
        lang = language(notice.customer.get("locale"))
        kind = str(notice.award.get("type") or "default")
        names = [f"email/{lang}/{kind}", f"email/{lang}/default", f"email/{DEFAULT_LOCALE}/{kind}",
                 f"email/{DEFAULT_LOCALE}/default"]
        ctx = self.context(notice, shop, lang)
        ctx["unsubscribe_url"] = unsubscribe_url
        text_tmpl = self.env.select_template([f"{n}.txt" for n in names])
        subject = " ".join("".join(text_tmpl.blocks["subject"](text_tmpl.new_context(ctx))).split())
        ctx["subject"] = subject
        text = text_tmpl.render(ctx)
        html = self.env.select_template([f"{n}.html" for n in names]).render(ctx)
        return RenderedEmail(subject=subject, text=text, html=html, locale=lang)


# ================================================================ the notifier
class Notifier:
    """Sends notices by e-mail and by signed webhook; errors become the ``DeliveryError`` tree
    (``RateLimited`` / ``Unavailable`` are retried by the outbox, ``Rejected`` is final)."""

    def __init__(self, settings: Settings, shops: Mapping[str, ShopConfig], *,
                 session: requests.Session | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.shops = shops
        self.smtp = parse_smtp_url(settings.smtp_url) if settings.smtp_url else None
        self._unsubscribe_secret = unsubscribe_secret(settings)
        self.public_url = public_base_url(settings)
        self.timeout = timeout
        self._session = session
        self.renderer = EmailRenderer()

    @property
    def email_enabled(self) -> bool:
        return self.smtp is not None

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def shop(self, shop_id: str) -> ShopConfig:
        try:
            return self.shops[shop_id]
        except KeyError:
            raise Rejected(f"unknown shop '{shop_id}'") from None

    def send(self, notice: Notice) -> str:
        """Send one notice; return its id (the e-mail's Message-ID, the webhook's event id)."""
        if notice.channel == "email":
            return self.send_email(notice)
        if notice.channel == "webhook":
            return self.send_webhook(notice)
        raise Rejected(f"unknown notification channel {notice.channel!r}")

    # ------------------------------------------------------------ e-mail
    def unsubscribe_url(self, notice: Notice) -> str | None:
        """The unsubscribe link of a promotional notice; None for a transactional one.  Rejected
        when no secret can sign it (a promotional e-mail never goes out without its link)."""
        if not is_promotional(notice.award):
            return None
        if self._unsubscribe_secret is None:
            raise Rejected("a promotional e-mail needs an unsubscribe link, signed with LADDER_SECRET_KEY "
                           "or LADDER_ADMIN_TOKEN; neither is set")
        customer_id = str(notice.customer.get("customer_id") or notice.award.get("customer_id") or "")
        return f"{self.public_url}/unsubscribe/{unsubscribe_token(self._unsubscribe_secret, notice.shop_id, customer_id)}"

    def build_email(self, notice: Notice) -> EmailMessage:
        if self.smtp is None:
            raise Rejected("e-mail is not configured (LADDER_SMTP_URL is unset)")
        to = notice.customer.get("email")
        if not to:
            raise Rejected("the customer has no e-mail address")
        shop = self.shop(notice.shop_id)
        unsubscribe = self.unsubscribe_url(notice)
        rendered = self.renderer.render(notice, shop, unsubscribe)
        msg = EmailMessage()
        msg["Subject"] = rendered.subject
        msg["From"] = self.smtp.sender
        msg["To"] = str(to)
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(idstring=notice.event_id, domain=self.smtp.sender.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"  # no vacation replies to a notice
        msg[EVENT_ID_HEADER] = notice.event_id
        if unsubscribe:
            msg["List-Unsubscribe"] = f"<{unsubscribe}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(rendered.text)
        msg.add_alternative(rendered.html, subtype="html")
        # after the parts exist: set_content/add_alternative move Content-* headers into the parts
        msg["Content-Language"] = rendered.locale
        return msg

    def send_email(self, notice: Notice) -> str:
        msg = self.build_email(notice)
        target = self.smtp
        assert target is not None  # build_email checked
        try:
            if target.ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port, timeout=self.timeout,
                                                        context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(target.host, target.port, timeout=self.timeout)
            with client:
                if target.starttls:
                    client.starttls(context=ssl.create_default_context())
                if target.user:
                    client.login(target.user, target.password or "")
                client.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            text = "; ".join(f"{addr}: {code} {reply.decode(errors='replace')}"
                             for addr, (code, reply) in exc.recipients.items())
            if all(code >= 500 for code in codes):
                raise Rejected(f"recipient refused: {text}") from None
            raise Unavailable(f"recipient deferred: {text}") from None
        except smtplib.SMTPResponseException as exc:
            reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            if exc.smtp_code >= 500:
                raise Rejected(f"the mail server refused: {exc.smtp_code} {reply}") from None
            raise Unavailable(f"the mail server deferred: {exc.smtp_code} {reply}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise Rejected(f"the mail server does not support what LADDER_SMTP_URL asks: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, timeouts, refused connections
            raise Unavailable(f"the mail server is unreachable: {type(exc).__name__}: {exc}") from None
        return str(msg["Message-ID"])

    # ------------------------------------------------------------ webhook
    @staticmethod
    def webhook_body(notice: Notice) -> bytes:
        payload = {"event": notice.event, "shop": notice.shop_id,
                   "customer_id": notice.customer.get("customer_id") or notice.award.get("customer_id"),
                   "award": dict(notice.award)}
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def send_webhook(self, notice: Notice) -> str:
        shop = self.shop(notice.shop_id)
        if not shop.notify_webhook_url:
            raise Rejected(f"shop '{shop.id}' has no notify_webhook_url")
        if not shop.webhook_secret:
            raise Rejected(f"shop '{shop.id}' has no webhook_secret to sign the notification with")
        body = self.webhook_body(notice)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: hmac_sha256_base64(shop.webhook_secret, body),
            EVENT_ID_HEADER: notice.event_id,
            EVENT_HEADER: notice.event,
        }
        # one translation of HTTP failures for shops and receivers alike (adapters/http.py);
        # redirects are not followed: a moved receiver must be reconfigured, not guessed
        send(self.session, "POST", shop.notify_webhook_url, who="the notification webhook", timeout=self.timeout,
             data=body, headers=headers, allow_redirects=False)
        return notice.event_id
