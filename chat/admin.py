"""Admin: rooms with their members, and message moderation.

Deleting a message here, one at a time or with the list action, goes through
`chat.services.delete_message`: the message is flagged deleted (not removed)
and every socket in the room gets `message_deleted` at once.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

from chat import services
from chat.models import Message, Room
from realtime.admin_filters import TimestampSetFilter


class MemberInline(admin.TabularInline):
    model = Room.members.through
    extra = 1
    autocomplete_fields = ("user",)
    verbose_name = "member"
    verbose_name_plural = "members (private rooms admit only these)"


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("slug", "title", "private", "created_by", "created_at")
    list_filter = ("private",)
    search_fields = ("slug", "title")
    prepopulated_fields = {"slug": ("title",)}
    fields = ("slug", "title", "private", "created_by", "created_at")
    readonly_fields = ("created_by", "created_at")
    inlines = (MemberInline,)

    def save_model(self, request: HttpRequest, obj: Room, form, change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        # The members inline deletes and edits membership rows itself, which
        # sends no signal (the through table is auto-created): whoever is no
        # longer a member after the save loses access, as through the service.
        if formset.model is not Room.members.through or form.instance.pk is None:
            super().save_formset(request, form, formset, change)
            return
        before = set(form.instance.members.values_list("pk", flat=True))
        super().save_formset(request, form, formset, change)
        lost = before - set(form.instance.members.values_list("pk", flat=True))
        services.revoke_access(room_id=form.instance.pk, user_ids=lost)


class DeletedFilter(TimestampSetFilter):
    title = "deleted"
    parameter_name = "deleted"
    field = "deleted_at"
    options = (("no", "Visible"), ("yes", "Deleted"))


@admin.action(description="Delete selected messages (removed live from every open room)")
def delete_selected_messages(modeladmin, request, queryset):
    count = services.delete_messages(messages=queryset, by=request.user)
    modeladmin.message_user(request, f"Deleted {count} messages.", messages.SUCCESS)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "room", "author", "short_body", "created_at", "deleted")
    list_filter = (DeletedFilter, "room", "created_at")
    search_fields = ("body", "author__username")
    list_select_related = ("room", "author")
    readonly_fields = (
        "room", "author", "body", "client_id", "created_at", "deleted_at", "deleted_by",
    )  # fmt: skip
    actions = (delete_selected_messages,)
    date_hierarchy = "created_at"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:79] + "…"

    @admin.display(boolean=True, description="deleted")
    def deleted(self, obj: Message) -> bool:
        return obj.deleted_at is not None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages are posted through chat.services.post_message

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # moderation is deletion; nothing else is edited

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        # Django's own bulk delete would remove rows without telling anyone.
        actions.pop("delete_selected", None)
        return actions

    def delete_model(self, request: HttpRequest, obj: Message) -> None:
        services.delete_message(message=obj, by=request.user)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        services.delete_messages(messages=queryset, by=request.user)
