"""Admin for API keys: create (the key is shown once), revoke."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from realtime.authentication import apikeys
from realtime.authentication.models import ApiKey


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Who or what uses this key, e.g. “billing service”.")


@admin.action(description="Revoke the selected API keys", permissions=["change"])
def revoke_keys(modeladmin, request, queryset):
    count = apikeys.revoke_api_keys(keys=queryset)
    modeladmin.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "key_prefix", "created_at", "last_used_at", "revoked_at", "active")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("name", "prefix")
    readonly_fields = ("key_prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "key_prefix", "created_at", "last_used_at", "revoked_at")
    actions = [revoke_keys]

    @admin.display(description="key")
    def key_prefix(self, obj: ApiKey) -> str:
        return f"rk_{obj.prefix}_…"

    @admin.display(boolean=True)
    def active(self, obj: ApiKey) -> bool:
        return obj.is_active

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        # Not the stock add form: the key is made by the service and shown on
        # the page that answers the POST, once; it never goes into a message,
        # a cookie or a redirect.
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiKeyForm(request.POST or None)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form}
        if request.method == "POST" and form.is_valid():
            try:
                row, key = apikeys.create_api_key(name=form.cleaned_data["name"])
            except ValidationError as exc:
                form.add_error("name", exc.messages)
            else:
                self.log_addition(request, row, [{"added": {}}])
                response = TemplateResponse(
                    request,
                    "admin/authentication/apikey/created.html",
                    {**context, "title": "API key created", "row": row, "key": key},
                )
                response["Cache-Control"] = "no-store"
                return response
        return TemplateResponse(
            request, "admin/authentication/apikey/add.html", {**context, "title": "Add API key"}
        )
