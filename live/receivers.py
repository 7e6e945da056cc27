"""Any change to a declaration empties this process's rule cache (others reload within
LIVE_RULES_CACHE_SECONDS)."""

from __future__ import annotations

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from live import selectors
from live.models import Topic


@receiver(post_save, sender=Topic)
@receiver(post_delete, sender=Topic)
@receiver(m2m_changed, sender=Topic.groups.through)
def _forget_rules(**_: object) -> None:
    selectors.forget_rules()
