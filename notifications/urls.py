from django.urls import path

from notifications import api, views

app_name = "notifications"
urlpatterns = [path("", views.inbox, name="inbox")]

# Under /api/ (config/urls.py): JSON, no namespace; docs/protocol.md lists them.
api_urlpatterns = [
    path("notifications/", api.inbox),
    path("notifications/unread-count/", api.unread_count),
    path("notifications/read/", api.mark_read),
    path("publish/notifications/", api.publish_notification),
]
