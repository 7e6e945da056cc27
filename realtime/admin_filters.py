"""List filters the apps' admin pages share."""

from __future__ import annotations

from django.contrib import admin


class TimestampSetFilter(admin.SimpleListFilter):
    """Rows whose `field` (a nullable timestamp: read_at, deleted_at) is set ("yes") or not ("no").

    Subclasses name the field and give `options`: both values with their labels, in sidebar order.
    """

    field: str
    options: tuple[tuple[str, str], tuple[str, str]]

    def lookups(self, request, model_admin):
        return self.options

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(**{f"{self.field}__isnull": self.value() == "no"})
        return queryset
