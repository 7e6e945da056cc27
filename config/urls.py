from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from chat import urls as chat_urls
from live import urls as live_urls
from notifications import urls as notifications_urls
from realtime import http as realtime_http
from realtime.authentication import api as auth_api
from realtime.authentication import views as auth_pages
from realtime.operations import health, metrics

urlpatterns = [
    path("", RedirectView.as_view(url="/notifications/", permanent=False)),
    # API keys moved from the realtime app to realtime.authentication: old admin links still work.
    re_path(
        r"^admin/realtime/apikey/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/authentication/apikey/%(rest)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    # Only these two: the service sends no mail, so Django's password reset and
    # change pages (in django.contrib.auth.urls) could only fail. Passwords are
    # set in the admin or with `manage.py changepassword`. The login page is
    # Django's with the login throttle's 429 (realtime.authentication.views.LoginView).
    path("accounts/login/", auth_pages.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("notifications/", include("notifications.urls")),
    path("chat/", include("chat.urls")),
    path("live/", include(live_urls.urlpatterns)),
    path("api/token/", auth_api.token),
    path("api/", include(notifications_urls.api_urlpatterns)),
    path("api/", include(chat_urls.api_urlpatterns)),
    path("api/", include(live_urls.api_urlpatterns)),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", metrics.metrics_view),
    # Last: whatever under /api/ matched nothing above is a JSON 404.
    re_path(r"^api/", realtime_http.api_not_found),
]
