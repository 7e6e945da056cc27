from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from chat import api as chat_api
from notifications import api as notifications_api
from realtime import api as realtime_api
from realtime import metrics as realtime_metrics
from realtime import views as realtime_views

urlpatterns = [
    path("", RedirectView.as_view(url="/notifications/", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("notifications/", include("notifications.urls")),
    path("chat/", include("chat.urls")),
    path("api/notifications/", notifications_api.inbox),
    path("api/notifications/unread-count/", notifications_api.unread_count),
    path("api/notifications/read/", notifications_api.mark_read),
    path("api/token/", realtime_api.token),
    path("api/publish/notifications/", notifications_api.publish_notification),
    path("api/publish/chat/<str:slug>/", chat_api.publish_message),
    path("api/chat/rooms/", chat_api.rooms),
    path("api/chat/rooms/<str:slug>/messages/", chat_api.messages),
    path("api/chat/rooms/<str:slug>/online/", chat_api.online),
    path("healthz", realtime_views.healthz),
    path("readyz", realtime_views.readyz),
    path("metrics", realtime_metrics.metrics_view),
]
