from __future__ import annotations

from django.conf import settings
from django.db import models, router, transaction
from django.db.models import Q
from django.utils import timezone


def _optional_user(*, related_name: str) -> models.ForeignKey:
    # Users come and go; what they made or did stays, with nobody named.
    return models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name=related_name
    )


class Room(models.Model):
    """A chat room. Public rooms admit every user; private ones only `members`."""

    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    private = models.BooleanField(default=False)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="chat_rooms", blank=True)
    created_by = _optional_user(related_name="created_chat_rooms")
    created_at = models.DateTimeField(default=timezone.now)
    # Rises by one each time someone loses access to this private room (a member
    # removed, the room made private), in the transaction that takes it away.
    # Every message push carries it: a socket that sees a newer value than the
    # one it was admitted under checks its membership before showing the message
    # (see chat/consumers.py and docs/protocol.md, "Losing access").
    access_version = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def save(self, *args, **kwargs) -> None:
        # One transaction for the row and what its signal receivers write
        # (chat/receivers.py): made private, the access version rises in the
        # same commit, so no post can slip in between with the old one.
        with transaction.atomic(using=kwargs.get("using") or router.db_for_write(Room, instance=self)):
            super().save(*args, **kwargs)


class Message(models.Model):
    """One message in one room.

    Deletion is a flag (`deleted_at`), not row removal: ids stay a gap-free
    chain for resume and gap detection, a re-sent `client_id` still finds its
    original, and moderators keep an audit trail. Deleted messages are never
    served again (history, replay, API).
    """

    id = models.BigAutoField(primary_key=True)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    # Null: a system message (publish API, management code).
    author = _optional_user(related_name="chat_messages")
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    # Null, not "": the wire says null, and the unique constraint skips NULLs.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = _optional_user(related_name="+")

    class Meta:
        ordering = ["-id"]
        indexes = [
            # history pages, resume after an id, the latest id of a room
            models.Index(fields=["room", "id"], name="chat_msg_room_id"),
        ]
        constraints = [
            # Idempotent sends: one row per (room, author, client_id). Rows
            # without a client_id (or without an author) are not constrained.
            models.UniqueConstraint(
                fields=["room", "author", "client_id"],
                condition=Q(client_id__isnull=False, author__isnull=False),
                name="chat_msg_unique_client_id",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.id} in {self.room_id}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None
