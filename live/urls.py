from django.urls import path

from live import api, views

# The board, at /live/ (config/urls.py).
urlpatterns = [
    path("", views.board, name="live"),
]

# Under /api/ (config/urls.py): JSON, no namespace; docs/protocol.md lists them.
api_urlpatterns = [
    path("publish/topics/<str:name>/", api.publish),
    path("topics/<str:name>/", api.topic),
]
