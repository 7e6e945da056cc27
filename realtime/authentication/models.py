from __future__ import annotations

from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    """A server-to-server credential for `/api/publish/*`.

    The key is `rk_<prefix>_<secret>`. `prefix` is public and finds the row;
    only a keyed hash of the whole key is stored (see realtime/authentication/apikeys.py).
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        # Created by the realtime app before this app owned the model; kept so
        # existing deployments keep their keys.
        db_table = "realtime_apikey"

    def __str__(self) -> str:
        return f"{self.name} (rk_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
