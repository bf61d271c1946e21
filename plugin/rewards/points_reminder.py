"""``points_reminder``: a notice that a batch of the customer's points expires soon.

Not a type a rule file names (:attr:`~.base.RewardType.internal`): the fold implies one for each
batch with points left ``points_reminder_days`` (a programme setting; 0: never) before it expires,
keyed ``{shop}/{customer}/points/reminder/{the batch's reward/scope/ref}``, with ``points`` (what
is left then), ``expires_at`` and ``batch`` (the batch's key).  It tells the customer what they already earned: transactional, never marketing.
The notice is the reward; in a shop with an API and no notification channel (no SMTP, no webhook)
it is ``withheld``; a generic shop's integrator finds it ``due``, like every award it hands over.
Reminders start with fold semantics 4: a batch whose reminder fell before the upgrade is reminded
of at the upgrade instant if it has points left and has not expired.
"""
from __future__ import annotations

from .base import Kind, RewardType


class PointsReminder(RewardType):
    name = "points_reminder"
    kind = Kind.GRANT
    internal = True
    notice_only = True
    withheld_without_channel = True
    promotional = False  # the customer's own points, about to expire
    value_keys = ()
