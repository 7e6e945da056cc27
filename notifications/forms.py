from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from notifications.models import Level


class SendNotificationForm(forms.Form):
    users = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
    )
    groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 5}),
    )
    everyone = forms.BooleanField(required=False, help_text="Every active user.")
    title = forms.CharField(max_length=200)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False)
    level = forms.ChoiceField(choices=Level.choices, initial=Level.INFO)
    url = forms.CharField(
        max_length=2000, required=False, help_text="A path such as /chat/lobby/ or an http(s) URL."
    )

    def clean(self):
        data = super().clean()
        if not (data.get("users") or data.get("groups") or data.get("everyone")):
            raise forms.ValidationError("Choose users, groups or everyone.")
        return data
