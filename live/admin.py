"""Admin: declare live topics (exact names or prefixes), who may read them, whether clients may publish."""

from __future__ import annotations

from django.contrib import admin

from live.models import Topic


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ("__str__", "match", "read", "client_publish", "publish_rate", "max_bytes", "description")
    list_filter = ("match", "read", "client_publish")
    search_fields = ("name", "description")
    filter_horizontal = ("groups",)
    fieldsets = (
        (None, {"fields": ("name", "match", "description")}),
        ("Who may read", {"fields": ("read", "groups")}),
        ("Publishing", {"fields": ("client_publish", "publish_rate", "publish_burst", "max_bytes")}),
    )
