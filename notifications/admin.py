"""Admin: browse notifications and who read them, and send new ones."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse

from notifications import services
from notifications.forms import SendNotificationForm
from notifications.models import Notification
from realtime.admin_filters import TimestampSetFilter
from realtime.authentication import services as realtime_services
from realtime.protocol import CloseReason

User = get_user_model()


class ReadFilter(TimestampSetFilter):
    title = "read"
    parameter_name = "read"
    field = "read_at"
    options = (("yes", "Read"), ("no", "Unread"))


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "recipient", "level", "created_at", "read", "read_at", "send_link")
    list_filter = (ReadFilter, "level", "created_at")
    search_fields = ("title", "body", "recipient__username")
    list_select_related = ("recipient",)
    readonly_fields = ("recipient", "batch", "created_at", "read_at")
    fields = ("recipient", "title", "body", "level", "url", "data", "batch", "created_at", "read_at")
    date_hierarchy = "created_at"
    change_list_template = "admin/notifications/notification/change_list.html"

    @admin.display(boolean=True, description="read")
    def read(self, obj: Notification) -> bool:
        return obj.read_at is not None

    @admin.display(description="send")
    def send_link(self, obj: Notification) -> str:
        from django.utils.html import format_html

        url = reverse("admin:notifications_notification_changelist") + f"?batch={obj.batch}"
        return format_html('<a href="{}">all recipients</a>', url)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # new ones go through "Send notification", which pushes them

    def get_urls(self):
        urls = super().get_urls()
        send = path("send/", self.admin_site.admin_view(self.send_view), name="notifications_send")
        return [send, *urls]

    def send_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("notifications.add_notification") and not request.user.is_superuser:
            messages.error(request, "You may not send notifications.")
            return HttpResponseRedirect(reverse("admin:index"))
        initial = {}
        if request.method == "GET" and request.GET.get("users"):
            initial["users"] = [pk for pk in request.GET["users"].split(",") if pk.isdigit()]
        form = SendNotificationForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                sent = services.notify(
                    users=data["users"],
                    groups=list(data["groups"]),
                    everyone=data["everyone"],
                    **services.content_of(data),
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                messages.success(request, f"Sent to {len(sent)} users.")
                target = reverse("admin:notifications_notification_changelist")
                if sent:
                    target += f"?batch={sent[0].batch}"
                return HttpResponseRedirect(target)
        context = {
            **self.admin_site.each_context(request),
            "title": "Send notification",
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "admin/notifications/send.html", context)


@admin.action(description="Send a notification to the selected users")
def send_notification_action(modeladmin, request, queryset):
    ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
    return HttpResponseRedirect(reverse("admin:notifications_send") + f"?users={ids}")


@admin.action(description="Disconnect the selected users' sockets", permissions=["change"])
def disconnect_users_action(modeladmin, request, queryset):
    ids = list(queryset.values_list("pk", flat=True))
    realtime_services.disconnect_users(user_ids=ids, reason=CloseReason.DISCONNECTED)
    modeladmin.message_user(request, f"Disconnected {len(ids)} user(s).", messages.SUCCESS)


@admin.action(description="Deactivate the selected users (and close their sockets)", permissions=["change"])
def deactivate_users_action(modeladmin, request, queryset):
    count = realtime_services.deactivate_users(users=queryset)
    modeladmin.message_user(request, f"Deactivated {count} user(s).", messages.SUCCESS)


class NotifyingUserAdmin(UserAdmin):
    actions = [*UserAdmin.actions, send_notification_action, disconnect_users_action, deactivate_users_action]

    # Unticking "active" in the change form needs nothing here: any save that
    # deactivates a user closes their sockets (realtime.authentication.receivers).

    def delete_model(self, request, obj):
        realtime_services.disconnect_user(user=obj, reason=CloseReason.DEACTIVATED)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        realtime_services.disconnect_users(user_ids=ids, reason=CloseReason.DEACTIVATED)
        super().delete_queryset(request, queryset)


admin.site.unregister(User)
admin.site.register(User, NotifyingUserAdmin)
