from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from chat import api as chat_api
from notifications import api as notifications_api
from realtime import api as realtime_api
from realtime import http as realtime_http
from realtime import metrics as realtime_metrics
from realtime import views as realtime_views

urlpatterns = [
    path("", RedirectView.as_view(url="/notifications/", permanent=False)),
    path("admin/", admin.site.urls),
    # Only these two: the service sends no mail, so Django's password reset and
    # change pages (in django.contrib.auth.urls) could only fail. Passwords are
    # set in the admin or with `manage.py changepassword`. The login page is
    # Django's with the login throttle's 429 (realtime.views.LoginView).
    path("accounts/login/", realtime_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
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
    # Last: whatever under /api/ matched nothing above is a JSON 404.
    re_path(r"^api/", realtime_http.api_not_found),
]
