"""Signal receivers: a change to a declaration, however it is made (the admin, `declare_topic`, any code).

Each empties this process's rule cache at once (others reload within
LIVE_RULES_CACHE_SECONDS, or as soon as they hear of the change) and hands
the declarations concerned to `live.services.declarations_changed`, which
after commit has every worker end the subscriptions they no longer allow:

- a declaration saved: its name, and its previous name when it was renamed
  (or turned from exact to prefix), read before the save;
- deleted: its name;
- its groups changed (`topic.groups.add/remove/clear/set`): its name; from the
  group's side (`group.live_topics...`) the topics named, or every topic for
  a `clear()`, which names none.

A queryset `update()` or `delete()` sends no signal and is out of reach, like
any queryset write.
"""

from __future__ import annotations

from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver

from live import selectors, services
from live.models import Topic

# Every topic name (the empty prefix): for a change that does not say which declarations it touched.
EVERY_TOPIC = ("", True)


def _declaration(name: str, match: str) -> tuple[str, bool]:
    return name, match == Topic.Match.PREFIX


@receiver(pre_save, sender=Topic)
def _saving(instance: Topic, **_: object) -> None:
    stored = None
    if instance.pk is not None and not instance._state.adding:
        stored = Topic.objects.filter(pk=instance.pk).values_list("name", "match").first()
    instance._relay_stored_as = stored


@receiver(post_save, sender=Topic)
def _saved(instance: Topic, **_: object) -> None:
    selectors.forget_rules()
    declarations = [_declaration(instance.name, instance.match)]
    stored = getattr(instance, "_relay_stored_as", None)
    instance._relay_stored_as = None
    if stored is not None:
        declarations.append(_declaration(*stored))
    services.declarations_changed(declarations)


@receiver(post_delete, sender=Topic)
def _deleted(instance: Topic, **_: object) -> None:
    selectors.forget_rules()
    services.declarations_changed([_declaration(instance.name, instance.match)])


@receiver(m2m_changed, sender=Topic.groups.through)
def _groups_changed(instance, action: str, reverse: bool, pk_set, **_: object) -> None:
    if not action.startswith("post_"):
        return
    selectors.forget_rules()
    if not reverse:  # instance is the topic
        declarations = [_declaration(instance.name, instance.match)]
    elif pk_set is None:  # a group's clear(): the topics it left are not named
        declarations = [EVERY_TOPIC]
    else:
        declarations = [
            _declaration(*row) for row in Topic.objects.filter(pk__in=pk_set).values_list("name", "match")
        ]
    services.declarations_changed(declarations)
