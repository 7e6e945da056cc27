from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Level(models.TextChoices):
    INFO = "info", "Info"
    SUCCESS = "success", "Success"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class Notification(models.Model):
    """One notification in one user's inbox.

    A send to many users writes one row per recipient, all sharing `batch`,
    so the admin can show who has read which send.
    """

    id = models.BigAutoField(primary_key=True)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    batch = models.UUIDField(default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    url = models.CharField(max_length=2000, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # inbox pages, resume after an id, and the latest id of a user
            models.Index(fields=["recipient", "id"], name="notif_recipient_id"),
            # unread count and "unread only" pages
            models.Index(fields=["recipient", "id"], condition=Q(read_at__isnull=True), name="notif_unread"),
            models.Index(fields=["batch"], name="notif_batch"),
        ]

    def __str__(self) -> str:
        return f"{self.title} → {self.recipient_id}"

    @property
    def is_read(self) -> bool:
        return self.read_at is not None
