"""Topic declarations: which live topic names exist and who may read or publish them.

Only the declaration is stored here; values live in Redis (`live.store`).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from realtime.protocol import TOPIC_NAME


def _valid_name(value: str) -> None:
    if not TOPIC_NAME.fullmatch(value):
        raise ValidationError("lower-case letters, digits, '.', '_' and '-', starting with a letter or digit")


def _value_cap(value: int) -> None:
    if value > settings.LIVE_MAX_VALUE_BYTES:
        raise ValidationError(f"at most LIVE_MAX_VALUE_BYTES ({settings.LIVE_MAX_VALUE_BYTES})")


class Topic(models.Model):
    """One declaration: an exact topic name, or a prefix such as `stocks.` that covers every name under it.

    An exact declaration wins over a prefix; of several prefixes, the longest.
    """

    class Match(models.TextChoices):
        EXACT = "exact", "exact name"
        PREFIX = "prefix", "prefix (every name starting with it)"

    class Read(models.TextChoices):
        PUBLIC = "public", "public (anonymous sockets too)"
        AUTHENTICATED = "authenticated", "any logged-in user"
        GROUPS = "groups", "members of the groups below"

    name = models.CharField(
        max_length=100, validators=[_valid_name], help_text="e.g. `scores.final` or the prefix `stocks.`"
    )
    match = models.CharField(max_length=10, choices=Match.choices, default=Match.EXACT)
    read = models.CharField(max_length=16, choices=Read.choices, default=Read.AUTHENTICATED)
    groups = models.ManyToManyField(
        Group, blank=True, related_name="live_topics", help_text="who may read when access is by group"
    )
    client_publish = models.BooleanField(
        default=False, help_text="sockets of users who may read it may also publish to it"
    )
    publish_rate = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.001)], help_text="client publishes per second per socket"
    )
    publish_burst = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1)], help_text="client publishes a socket may send at once"
    )
    max_bytes = models.PositiveIntegerField(
        default=16 * 1024,
        validators=[MinValueValidator(4), _value_cap],
        help_text="largest value accepted, as JSON (clients: at most 16 KiB whatever this says)",
    )
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name", "match")
        constraints = [models.UniqueConstraint(fields=("name", "match"), name="live_topic_unique_name_match")]

    def __str__(self) -> str:
        return self.name + ("*" if self.match == self.Match.PREFIX else "")
